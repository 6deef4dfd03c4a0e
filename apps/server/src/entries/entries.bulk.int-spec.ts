import { TrustDomain } from '@sigil/spiffe';
import type { DataSource, Logger as TypeOrmLogger } from 'typeorm';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRegistry } from '../../../../test/support/registry.js';
import { managerOf } from '../database/transaction.js';
import { EntriesRepository } from './entries.repository.js';
import { WRITE_CHUNK } from './entries.service.js';
import { createEntryChangeNotifier, type EntryChangeNotifier } from './entry-change-notifier.js';
import { MAX_BATCH_SIZE, type Entry, type EntryCreateResult, type EntryInput } from './entry.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/bulk';
const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';

/** A valid entry with several selectors, DNS names and federated trust domains (every child table written). */
const entry = (name: string, extra: Partial<EntryInput> = {}): EntryInput => ({
  spiffeId: `spiffe://example.org/bulk/${name}`,
  parentId: AGENT,
  selectors: [
    { type: 'unix', value: `uid:${name}` },
    { type: 'unix', value: 'gid:50' },
  ],
  dnsNames: [`${name}.svc.example.org`],
  federatesWith: ['partner.example.com'],
  ...extra,
});

/** Counts the statements `dataSource` sends while `work` runs (TypeORM logs every query it runs). */
async function countStatements<T>(dataSource: DataSource, work: () => Promise<T>): Promise<{ result: T; n: number }> {
  const logger = dataSource.logger;
  let n = 0;
  const counting: TypeOrmLogger = {
    logQuery: (...args) => {
      n += 1;
      logger.logQuery(...args);
    },
    logQueryError: (...args) => logger.logQueryError(...args),
    logQuerySlow: (...args) => logger.logQuerySlow(...args),
    logSchemaBuild: (...args) => logger.logSchemaBuild(...args),
    logMigration: (...args) => logger.logMigration(...args),
    log: (...args) => logger.log(...args),
  };
  Object.assign(dataSource, { logger: counting });
  try {
    return { result: await work(), n };
  } finally {
    Object.assign(dataSource, { logger });
  }
}

describe(`batch create as bulk statements (${kind})`, () => {
  let db: TestDatabase;
  const notifiers: EntryChangeNotifier[] = [];
  const clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));

  const replica = async (dataSource: DataSource) => {
    const notifier = await createEntryChangeNotifier({ kind: db.kind, url: db.url, dataSource });
    notifiers.push(notifier);
    const registry = createRegistry(dataSource, notifier, { trustDomain: TD }, clock);
    const heard: number[] = [];
    registry.changeLog.subscribe((revision) => heard.push(revision));
    return { ...registry, heard };
  };

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    for (const notifier of notifiers) await notifier.close();
    await db?.close();
  });

  beforeEach(async () => {
    await db.dataSource.query(
      'TRUNCATE registered_entries, selectors, dns_names, federated_trust_domains, entry_events',
    );
    await db.dataSource.query(`UPDATE revision_counters SET revision = 0, pruned_through = 0`);
  });

  it('gives each entry of a mixed batch its own result, and the written ones one revision range in input order', async () => {
    const { entries: service, changeLog } = await replica(db.dataSource);
    const existing = await service.createEntry(entry('existing'));
    const existingWithId = await service.createEntry(
      entry('existing-id', { id: '00000000-0000-4000-8000-00000000000a' }),
    );
    const start = await changeLog.currentRevision();

    const freeId = '00000000-0000-4000-8000-00000000000b';
    const inputs: EntryInput[] = [];
    const expected: ('ok' | 'invalid' | 'duplicate' | 'idTaken')[] = [];
    const add = (input: EntryInput, outcome: (typeof expected)[number]) => {
      inputs.push(input);
      expected.push(outcome);
    };
    for (let i = 0; inputs.length < MAX_BATCH_SIZE - 8; i++) add(entry(`e${i}`), 'ok');
    add(entry('bad', { spiffeId: 'spiffe://elsewhere.test/bad' }), 'invalid');
    add(entry('existing'), 'duplicate'); // an existing entry's twin
    add(entry('e3'), 'duplicate'); // a twin of an earlier entry of this batch
    add(entry('e4', { selectors: [{ type: 'unix', value: 'uid:e4' }] }), 'ok'); // not a twin: a subset of e4's selectors
    add(entry('with-free-id', { id: freeId }), 'ok');
    add(entry('id-of-existing', { id: existingWithId.id }), 'idTaken');
    add(entry('id-of-this-batch', { id: freeId }), 'idTaken');
    add(entry('bad-id', { id: 'not-a-uuid' }), 'invalid');

    const results = await service.createEntries(inputs);

    expect(results).toHaveLength(inputs.length);
    const outcome = (result: EntryCreateResult): (typeof expected)[number] => {
      if (result.ok) return 'ok';
      if (result.error.kind === 'invalid_argument') return 'invalid';
      return result.error.message.startsWith('id:') ? 'idTaken' : 'duplicate';
    };
    expect(results.map(outcome)).toEqual(expected);
    for (const result of results) {
      if (!result.ok)
        expect(result.error.kind).toBe(outcome(result) === 'invalid' ? 'invalid_argument' : 'already_exists');
    }
    const byName = (name: string) => results[inputs.findIndex((input) => input.spiffeId.endsWith(`/${name}`))]!;
    expect(byName('existing')).toMatchObject({ ok: false, existing: { id: existing.id } });
    const e3 = results[3]!;
    expect(e3).toMatchObject({ ok: true, entry: { spiffeId: 'spiffe://example.org/bulk/e3' } });
    expect(results[inputs.length - 6]).toMatchObject({ ok: false, existing: { id: e3.ok && e3.entry.id } });
    expect(byName('with-free-id')).toMatchObject({ ok: true, entry: { id: freeId } });
    expect(byName('id-of-existing')).toMatchObject({ ok: false, existing: { id: existingWithId.id } });
    expect(byName('id-of-this-batch')).toMatchObject({ ok: false, existing: { id: freeId } });

    // The written entries: revisions start + 1, start + 2, ... in input order, with every field as read back.
    const written = results.flatMap((result) => (result.ok ? [result.entry] : []));
    expect(written.map((created) => created.revisionNumber)).toEqual(written.map((_, index) => start + 1 + index));
    for (const created of [written[0]!, written.at(-1)!]) expect(await service.getEntry(created.id)).toEqual(created);
    expect(written[0]).toMatchObject({
      selectors: [
        { type: 'unix', value: 'gid:50' },
        { type: 'unix', value: 'uid:e0' },
      ],
      dnsNames: ['e0.svc.example.org'],
      federatesWith: ['partner.example.com'],
      createdAt: clock.now(),
    });
    expect(await service.countEntries()).toBe(written.length + 2);
    // One change-log row per revision, no gap, the head where the last one is.
    const changes = await changeLog.listChangesSince(start, { limit: MAX_BATCH_SIZE });
    expect(changes).toMatchObject({ resyncRequired: false, toRevision: start + written.length, more: false });
    if (changes.resyncRequired) return;
    expect(changes.events).toEqual(
      written.map((created) => ({ revision: created.revisionNumber, entryId: created.id, op: 'created' })),
    );
    expect(await changeLog.currentRevision()).toBe(start + written.length);
  });

  it('sends as many statements for a 500-entry batch as for a 5-entry one', async () => {
    const { entries: service } = await replica(db.dataSource);
    const batch = (prefix: string, size: number) => Array.from({ length: size }, (_, i) => entry(`${prefix}${i}`));
    const small = await countStatements(db.dataSource, () => service.createEntries(batch('s', 5)));
    const large = await countStatements(db.dataSource, () => service.createEntries(batch('l', MAX_BATCH_SIZE)));
    expect(small.result.every((result) => result.ok)).toBe(true);
    expect(large.result.every((result) => result.ok)).toBe(true);
    expect(WRITE_CHUNK).toBeGreaterThanOrEqual(MAX_BATCH_SIZE);
    expect(large.n).toBe(small.n);
  });

  it("finds a batch's duplicates reading only the entries with the same SPIFFE ID and parent, however many share the parent", async () => {
    const { entries: service } = await replica(db.dataSource);
    // 5,000 entries under the batch's parent, written straight into the tables as a bulk load leaves them: the planner
    // has no statistics for them yet (a join it may then plan reads every entry, or every entry under the parent, per
    // batch or per candidate: a batch's cost grew with the registry).
    const seeded = 5_000;
    await db.dataSource.query(
      `INSERT INTO registered_entries (id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, downstream, hint,
                                       expires_at, revision_number, created_at, updated_at)
       SELECT gen_random_uuid(), 'spiffe://example.org/bulk/seeded/' || i, $1, 0, 0, false, false, '', NULL, i, now(),
              now()
         FROM generate_series(1, $2::integer) AS i`,
      [AGENT, seeded],
    );
    await db.dataSource.query(
      `INSERT INTO selectors (entry_id, type, value) SELECT id, 'unix', 'uid:' || revision_number FROM registered_entries`,
    );
    const candidates = [
      ...Array.from({ length: 200 }, (_, i) => ({
        spiffeId: `spiffe://example.org/bulk/new/${i}`,
        parentId: AGENT,
        selectors: [{ type: 'unix', value: `uid:${i}` }],
      })),
      // one of the seeded entries, and one with its IDs but another selector set
      {
        spiffeId: 'spiffe://example.org/bulk/seeded/7',
        parentId: AGENT,
        selectors: [{ type: 'unix', value: 'uid:7' }],
      },
      {
        spiffeId: 'spiffe://example.org/bulk/seeded/8',
        parentId: AGENT,
        selectors: [{ type: 'unix', value: 'uid:7' }],
      },
    ];
    const repository = new EntriesRepository(db.dataSource);
    const { found, read } = await repository.readSnapshot(async (tx) => {
      // Rows read from registered_entries, selectors and their indexes (scanned, or returned by an index) by this
      // backend so far: the counters may hold earlier transactions' counts not yet flushed, so the look-up's are the
      // difference.
      const counted = async () =>
        (
          (await managerOf(tx).query(
            `SELECT sum(pg_stat_get_xact_tuples_returned(c.oid) + pg_stat_get_xact_tuples_fetched(c.oid))::integer AS n
               FROM pg_class c
              WHERE c.oid IN ('registered_entries'::regclass, 'selectors'::regclass)
                 OR c.oid IN (SELECT indexrelid FROM pg_index
                               WHERE indrelid IN ('registered_entries'::regclass, 'selectors'::regclass))`,
          )) as [{ n: number }]
        )[0].n;
      const before = await counted();
      const found = await repository.findEntriesSharingIds(tx, candidates);
      return { found, read: (await counted()) - before };
    });
    expect(found.map(({ spiffeId, selectors }) => [spiffeId, selectors]).sort()).toEqual([
      ['spiffe://example.org/bulk/seeded/7', [{ type: 'unix', value: 'uid:7' }]],
      ['spiffe://example.org/bulk/seeded/8', [{ type: 'unix', value: 'uid:8' }]],
    ]);
    // The two entries found and their two selectors, each counted once as an index entry and once as a row: far from
    // the 5,000 rows a scan of either table reads.
    expect(read).toBeLessThanOrEqual(10);

    // The service's outcome: only the seeded entry's twin is a duplicate, and it names that entry.
    const results = await service.createEntries(candidates);
    expect(results.map((result) => (result.ok ? 'ok' : result.error.kind))).toEqual([
      ...Array.from({ length: 200 }, () => 'ok'),
      'already_exists',
      'ok',
    ]);
    const twin = found.find((entry) => entry.spiffeId.endsWith('/seeded/7'))!;
    expect(results[200]).toMatchObject({ ok: false, existing: { id: twin.id } });
  });

  it('reads every entry for an index load exactly as it reads them by id, whatever the fetch size', async () => {
    const { entries: service } = await replica(db.dataSource);
    const inputs = Array.from({ length: 23 }, (_, i) =>
      entry(`all${i}`, {
        ...(i % 3 === 0 && { dnsNames: [], federatesWith: [] }),
        ...(i % 4 === 0 && { expiresAt: new Date(clock.now().getTime() + 86_400_123) }),
        ...(i % 5 === 0 && { admin: true, hint: `h${i}`, x509SvidTtl: 600, jwtSvidTtl: 60 }),
        ...(i % 7 === 0 && { downstream: true }),
        ...(i % 2 === 0 && {
          federatesWith: ['b.example.com', 'a.example.com'],
          dnsNames: ['z.example.org', 'a.example.org'],
        }),
      }),
    );
    const created = await service.createEntries(inputs);
    expect(created.every((result) => result.ok)).toBe(true);
    // Updated later, out of creation order: these entries' children are rewritten after every other entry's (stored
    // out of their entries' order), and their updated_at differs from created_at.
    clock.advance(1_234);
    for (const index of [17, 3, 12]) {
      const { id } = (created[index] as Extract<EntryCreateResult, { ok: true }>).entry;
      await service.updateEntry(id, {
        selectors: [
          { type: 'unix', value: `uid:moved${index}` },
          { type: 'docker', value: 'label:a=b' },
        ],
        dnsNames: [`moved${index}.example.org`],
        federatesWith: ['c.example.com'],
        hint: `moved${index}`,
      });
    }
    // Children stored out of their entries' order with the entry rows untouched: an early entry's selectors written
    // again after every other's, and one child table rewritten in reverse. Another entry's update stamped 0.4 ms after
    // its creation (the same millisecond).
    const early = (created[1] as Extract<EntryCreateResult, { ok: true }>).entry.id;
    await db.dataSource.transaction(async (manager) => {
      const moved = (await manager.query('DELETE FROM selectors WHERE entry_id = $1 RETURNING type, value', [
        early,
      ])) as [{ type: string; value: string }[], number];
      for (const { type, value } of moved[0]) {
        await manager.query('INSERT INTO selectors (entry_id, type, value) VALUES ($1, $2, $3)', [early, type, value]);
      }
      const names = (await manager.query('DELETE FROM dns_names RETURNING entry_id, value')) as [
        { entry_id: string; value: string }[],
        number,
      ];
      for (const { entry_id, value } of names[0].reverse()) {
        await manager.query('INSERT INTO dns_names (entry_id, value) VALUES ($1, $2)', [entry_id, value]);
      }
      await manager.query(
        `UPDATE registered_entries SET updated_at = created_at + interval '0.4 milliseconds' WHERE id = $1`,
        [(created[2] as Extract<EntryCreateResult, { ok: true }>).entry.id],
      );
    });
    const repository = new EntriesRepository(db.dataSource);
    const inIdOrder = (map: ReadonlyMap<string, Entry>) => [...map.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    const [loaded, paged, byId, viaOrm] = await repository.readSnapshot(async (tx) => {
      const loaded = await repository.findAll(tx);
      // 7 rows per fetch: the entries and each child table take several fetches, the last one short.
      const paged = await repository.findAll(tx, 7);
      return [
        loaded,
        paged,
        await repository.findByIds(tx, [...loaded.keys()]),
        await repository.findPage({}, undefined, 100, tx),
      ];
    });
    // The ORM's own read (entities, its date parsing) as the reference for every field.
    expect(byId).toEqual(viaOrm);
    for (const [id, found] of loaded) expect(found.id).toBe(id);
    const all = inIdOrder(loaded);
    expect(all).toHaveLength(inputs.length);
    expect(inIdOrder(paged)).toEqual(byId);
    expect(all).toEqual(byId);
    expect(all.filter((found) => found.updatedAt.getTime() !== found.createdAt.getTime())).toHaveLength(3);
    expect(all.filter((found) => found.admin).map((found) => found.hint)).toHaveLength(5);
    expect(all.filter((found) => found.downstream)).toHaveLength(4);
    expect(all.find((found) => found.id === early)?.selectors).toHaveLength(2);
    expect(all.find((found) => found.hint === 'moved3')?.selectors).toEqual([
      { type: 'docker', value: 'label:a=b' },
      { type: 'unix', value: 'uid:moved3' },
    ]);
    // One batch, one time: the index load holds one Date for all of them (a Date per entry is ~100 MB a million).
    expect(new Set(all.map((found) => found.createdAt)).size).toBe(1);
    const expiries = all.flatMap((found) => (found.expiresAt === null ? [] : [found.expiresAt]));
    expect(expiries.length).toBeGreaterThan(1);
    expect(new Set(expiries).size).toBe(1);
    expect(new Set(byId.map((found) => found.createdAt)).size).toBe(inputs.length);
  });

  it('lets another replica hear the batch and read every change of it', async () => {
    const a = await replica(db.dataSource);
    // PostgreSQL: a second replica on its own pool, told through LISTEN/NOTIFY. Embedded: one server process only
    // (no second replica can exist), so the other reader is in the same process.
    const b = db.kind === 'postgres' ? await replica(await db.connectAnother()) : { ...a, heard: a.heard as number[] };
    const start = await b.changeLog.currentRevision();
    const results = await a.entries.createEntries(Array.from({ length: 300 }, (_, i) => entry(`r${i}`)));
    expect(results.every((result) => result.ok)).toBe(true);
    await vi.waitFor(() => expect(b.heard).toContain(start + 300), { timeout: 15_000 });
    const changes = await b.changeLog.listChangesSince(start);
    if (changes.resyncRequired) throw new Error('unexpected resync');
    expect(changes.events.map((event) => event.revision)).toEqual(results.map((_, index) => start + 1 + index));
    expect(changes.entries.map((found) => found.id).sort()).toEqual(
      results.map((result) => (result.ok ? result.entry.id : '')).sort(),
    );
  });
});
