import { TrustDomain } from '@sigil/spiffe';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRegistry } from '../../../../test/support/registry.js';
import { AuthorisedEntriesService } from '../agent-api/authorised-entries.service.js';
import type { EntriesService } from './entries.service.js';
import type { EntryChangeLogService } from './entry-change-log.service.js';
import { InProcessEntryChangeNotifier } from './entry-change-notifier.js';
import { CHANGE_LOG_RETENTION_MS, EntryPruner } from './entry-pruner.js';
import type { Entry, EntryEvent, EntryInput } from './entry.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/a1';
const input = (name: string, extra: Partial<EntryInput> = {}): EntryInput => ({
  spiffeId: `spiffe://example.org/${name}`,
  parentId: AGENT,
  selectors: [{ type: 'unix', value: `user:${name}` }],
  ...extra,
});

describe('registry revisions', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  const registryOn = (dataSource: DataSource) =>
    createRegistry(dataSource, new InProcessEntryChangeNotifier(), { trustDomain: TD }, clock);
  let service: EntriesService;
  let changeLog: EntryChangeLogService;

  beforeAll(async () => {
    db = await useTestDatabase();
    clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));
    ({ entries: service, changeLog } = registryOn(db.dataSource));
  });

  afterAll(async () => {
    await db?.close();
  });

  beforeEach(async () => {
    clock.set(new Date('2026-03-01T00:00:00Z'));
    await db.dataSource.query(
      'TRUNCATE registered_entries, selectors, dns_names, federated_trust_domains, entry_events',
    );
    await db.dataSource.query(`UPDATE revision_counters SET revision = 0, pruned_through = 0`);
  });

  // Three pools stand for three replicas, which only PostgreSQL has; PGlite would run the writers one at a time.
  it.skipIf(isEmbeddedRun())(
    `hands out every revision exactly once, in order and without gaps, to concurrent writers on three pools (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      const [b, c] = await Promise.all([db.connectAnother(), db.connectAnother()]);
      const replicas = [service, registryOn(b).entries, registryOn(c).entries];
      const seed = await service.createEntries(Array.from({ length: 6 }, (_, i) => input(`seed${i}`)));
      const seeded = seed.map((result) => (result.ok ? result.entry : expect.fail('seed failed')));

      // A reader on its own pool follows the change log in small pages while the writers run.
      const reader = registryOn(await db.connectAnother({ poolSize: 1 })).changeLog;
      const events: EntryEvent[] = [];
      const state = new Map<string, Entry>();
      let readerRevision = 0;
      let writersDone = false;
      const follow = (async () => {
        for (;;) {
          const changes = await reader.listChangesSince(readerRevision, { limit: 5 });
          if (changes.resyncRequired) throw new Error(`unexpected resync from ${readerRevision}`);
          events.push(...changes.events);
          for (const entry of changes.entries) state.set(entry.id, entry);
          for (const id of changes.deletedIds) state.delete(id);
          readerRevision = changes.toRevision;
          if (writersDone && !changes.more && readerRevision === (await reader.currentRevision())) return;
          await nextTurn();
        }
      })();

      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < 12; i++) writes.push(replicas[i % 3]!.createEntry(input(`w${i}`)));
      for (let i = 0; i < 2; i++) {
        writes.push(replicas[i]!.createEntries([input(`batch${i}a`), input(`batch${i}b`), input(`batch${i}c`)]));
      }
      for (let i = 0; i < 3; i++) {
        writes.push(replicas[i]!.updateEntry(seeded[i]!.id, { hint: `first${i}` }));
        writes.push(replicas[(i + 1) % 3]!.updateEntry(seeded[i]!.id, { x509SvidTtl: 600 + i }));
        writes.push(replicas[(i + 2) % 3]!.deleteEntry(seeded[i + 3]!.id));
      }
      const outcomes = await Promise.allSettled(writes);
      writersDone = true;
      await follow;
      expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);

      const head = await changeLog.currentRevision();
      expect(head).toBe(6 + 12 + 6 + 6 + 3);
      expect(events.map((event) => event.revision)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
      const ops = (op: string) => events.filter((event) => event.op === op).map((event) => event.entryId);
      expect(ops('created')).toHaveLength(6 + 12 + 6);
      expect(ops('updated').sort()).toEqual(
        seeded
          .slice(0, 3)
          .flatMap((entry) => [entry.id, entry.id])
          .sort(),
      );
      expect(ops('deleted').sort()).toEqual(
        seeded
          .slice(3)
          .map((entry) => entry.id)
          .sort(),
      );

      const snapshot = await changeLog.snapshot();
      expect(snapshot.revision).toBe(head);
      const byId = (x: Entry, y: Entry) => x.id.localeCompare(y.id);
      expect([...state.values()].sort(byId)).toEqual([...snapshot.entries.values()].sort(byId));
      for (const [id, entry] of snapshot.entries) {
        expect(entry.id).toBe(id);
        const last = events.filter((event) => event.entryId === entry.id).at(-1);
        expect(entry.revisionNumber).toBe(last?.revision);
      }
    },
  );

  it('reports changes since a revision with deletions, paging and the current state of changed entries', async () => {
    const kept = await service.createEntry(input('kept'));
    const gone = await service.createEntry(input('gone'));
    await service.updateEntry(kept.id, { hint: 'v2' });
    await service.deleteEntry(gone.id);
    const later = await service.createEntry(input('later'));

    const all = await changeLog.listChangesSince(0);
    expect(all).toMatchObject({ resyncRequired: false, fromRevision: 0, toRevision: 5, more: false });
    if (all.resyncRequired) return expect.fail('resync');
    expect(all.events).toEqual([
      { revision: 1, entryId: kept.id, op: 'created' },
      { revision: 2, entryId: gone.id, op: 'created' },
      { revision: 3, entryId: kept.id, op: 'updated' },
      { revision: 4, entryId: gone.id, op: 'deleted' },
      { revision: 5, entryId: later.id, op: 'created' },
    ]);
    expect(all.entries.map((entry) => [entry.id, entry.hint, entry.revisionNumber]).sort()).toEqual(
      [
        [kept.id, 'v2', 3],
        [later.id, '', 5],
      ].sort(),
    );
    expect(all.deletedIds).toEqual([gone.id]);

    const page = await changeLog.listChangesSince(1, { limit: 2 });
    // revision 2 created `gone`; its current state is "deleted", as of the snapshot
    expect(page).toMatchObject({ toRevision: 3, more: true, deletedIds: [gone.id] });
    const rest = await changeLog.listChangesSince(3, { limit: 2 });
    expect(rest).toMatchObject({ toRevision: 5, more: false, deletedIds: [gone.id] });
    expect(await changeLog.listChangesSince(5)).toMatchObject({ toRevision: 5, events: [], entries: [], more: false });

    expect(await changeLog.listChangesSince(6)).toEqual({ resyncRequired: true, fromRevision: 6, toRevision: 5 });
    await expect(changeLog.listChangesSince(-1)).rejects.toThrow('since_revision: must be a whole number >= 0, got -1');
    await expect(changeLog.listChangesSince(0, { limit: 0 })).rejects.toThrow('limit: must be from 1 to 100000, got 0');
  });

  it('asks readers behind the pruned change log to resync, and the snapshot lets them continue', async () => {
    await service.createEntry(input('one'));
    clock.advance(3600_000);
    const two = await service.createEntry(input('two'));
    const three = await service.createEntry(input('three'));
    expect(await changeLog.pruneChangeLog(new Date(clock.now().getTime() - 60_000))).toBe(1);

    expect(await changeLog.listChangesSince(0)).toEqual({ resyncRequired: true, fromRevision: 0, toRevision: 3 });
    expect(await changeLog.listChangesSince(1)).toMatchObject({ resyncRequired: false, toRevision: 3 });
    const snapshot = await changeLog.snapshot();
    expect(snapshot.revision).toBe(3);
    expect([...snapshot.entries.values()].map((entry) => entry.spiffeId).sort()).toEqual(
      ['one', 'three', 'two'].map((name) => `spiffe://example.org/${name}`),
    );
    await service.deleteEntry(two.id);
    const next = await changeLog.listChangesSince(snapshot.revision);
    expect(next).toMatchObject({ toRevision: 4, deletedIds: [two.id], entries: [] });
    expect(three.revisionNumber).toBe(3);
    // pruning again keeps the mark where it was
    expect(await changeLog.pruneChangeLog(new Date(0))).toBe(1);
  });

  it('prunes expired entries, each deletion with its own revision', async () => {
    const soon = await service.createEntry(input('soon', { expiresAt: new Date('2026-03-01T00:10:00Z') }));
    const later = await service.createEntry(input('later', { expiresAt: new Date('2026-03-02T00:00:00Z') }));
    const never = await service.createEntry(input('never'));
    expect(await service.pruneExpired(new Date('2026-03-01T00:09:59Z'))).toEqual([]);
    expect(await changeLog.currentRevision()).toBe(3);

    const pruned = await service.pruneExpired(new Date('2026-03-01T00:10:00Z'));
    expect(pruned).toEqual([soon.id]);
    clock.set(new Date('2026-03-05T00:00:00Z'));
    expect(await service.pruneExpired()).toEqual([later.id]);
    expect([...(await changeLog.snapshot()).entries.keys()]).toEqual([never.id]);
    const changes = await changeLog.listChangesSince(3);
    expect(changes).toMatchObject({
      toRevision: 5,
      events: [
        { revision: 4, entryId: soon.id, op: 'deleted' },
        { revision: 5, entryId: later.id, op: 'deleted' },
      ],
      deletedIds: [later.id, soon.id].sort(),
    });
  });

  it('runs both prunings in one pass of the pruner', async () => {
    const expiring = await service.createEntry(input('expiring', { expiresAt: new Date('2026-03-01T01:00:00Z') }));
    await service.createEntry(input('staying'));
    clock.advance(CHANGE_LOG_RETENTION_MS + 1);
    await new EntryPruner(service, changeLog, clock).prune();
    expect([...(await changeLog.snapshot()).entries.values()].map((entry) => entry.spiffeId)).toEqual([
      'spiffe://example.org/staying',
    ]);
    // the two creations aged out of the change log; the deletion (revision 3) is kept
    expect(await changeLog.listChangesSince(1)).toMatchObject({ resyncRequired: true });
    expect(await changeLog.listChangesSince(2)).toMatchObject({ deletedIds: [expiring.id], toRevision: 3 });
  });

  it('rolls back a failed write without using up a revision', async () => {
    await service.createEntry(input('a'));
    await expect(service.createEntry(input('a'))).rejects.toMatchObject({ kind: 'already_exists' });
    await expect(service.updateEntry('00000000-0000-4000-8000-000000000000', { hint: 'x' })).rejects.toMatchObject({
      kind: 'not_found',
    });
    const b = await service.createEntry(input('b'));
    expect(b.revisionNumber).toBe(2);
    const changes = await changeLog.listChangesSince(0);
    expect(changes).toMatchObject({ toRevision: 2 });
  });

  it('reloads an index behind the pruned change log from a snapshot, and keeps its index when that fails', async () => {
    const agent = { spiffeId: AGENT, nodeSelectors: new Set<string>() };
    const names = (index: AuthorisedEntriesService) =>
      [...index.authorisedFor(agent).values()]
        .map((entry) => entry.spiffeId.slice('spiffe://example.org/'.length))
        .sort();
    await service.createEntry(input('one'));
    const index = new AuthorisedEntriesService(changeLog, { trustDomain: TD });
    await index.onModuleInit();
    // Not told of the writes below, so that it falls behind the change log's pruning.
    index.onApplicationShutdown();
    expect([index.revision, names(index)]).toEqual([1, ['one']]);

    await service.createEntry(input('two'));
    clock.advance(3600_000);
    await service.createEntry(input('three'));
    expect(await changeLog.pruneChangeLog(new Date(clock.now().getTime() - 60_000))).toBe(2);
    const read = changeLog.snapshot.bind(changeLog);
    const spy = vi.spyOn(changeLog, 'snapshot');
    await index.refresh();
    expect([index.revision, names(index)]).toEqual([3, ['one', 'three', 'two']]);
    expect(spy).toHaveBeenCalledTimes(1);

    // A reload whose snapshot fails (here after it was read) leaves the index as it was.
    await service.createEntry(input('four'));
    clock.advance(3600_000);
    await service.createEntry(input('five'));
    expect(await changeLog.pruneChangeLog(new Date(clock.now().getTime() - 60_000))).toBe(4);
    spy.mockImplementation(async () => {
      await read();
      throw new Error('connection lost');
    });
    await expect(index.refresh()).rejects.toThrow('connection lost');
    expect([index.revision, names(index)]).toEqual([3, ['one', 'three', 'two']]);
    spy.mockRestore();
    await index.refresh();
    expect([index.revision, names(index)]).toEqual([5, ['five', 'four', 'one', 'three', 'two']]);
  });
});
