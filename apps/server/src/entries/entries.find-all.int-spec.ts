import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRegistry } from '../../../../test/support/registry.js';
import { createEntryChangeNotifier, type EntryChangeNotifier } from './entry-change-notifier.js';
import { EntriesRepository } from './entries.repository.js';
import type { Entry, EntryInput } from './entry.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/find-all';
const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';

/**
 * Values the index load must carry exactly through PostgreSQL's JSON encoding and `JSON.parse`: JSON and CSV and
 * array syntax, quotes, backslashes and escapes, control characters, non-ASCII (two-byte, three-byte, a surrogate
 * pair), text that reads as a JSON literal or number, and leading/trailing spaces.
 */
const ODD = [
  'a,b',
  '"quoted"',
  "it's",
  'back\\slash\\"',
  '{1,2}',
  '[["x","y"]]',
  'line\nbreak\ttab\r',
  '\u0001\u001f\u007f',
  'é ü ß',
  '漢字',
  '𝄞 \u{1F600}',
  'null',
  '42',
  'true',
  ' padded ',
  '\\u0041',
  '</script>',
];

describe(`index load (findAll) of odd values (${kind})`, () => {
  let db: TestDatabase;
  let notifier: EntryChangeNotifier;
  const clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));

  beforeAll(async () => {
    db = await useTestDatabase();
    notifier = await createEntryChangeNotifier({ kind: db.kind, url: db.url, dataSource: db.dataSource });
  });

  afterAll(async () => {
    await notifier?.close();
    await db?.close();
  });

  beforeEach(async () => {
    await db.dataSource.query(
      'TRUNCATE registered_entries, selectors, dns_names, federated_trust_domains, entry_events',
    );
    await db.dataSource.query(`UPDATE revision_counters SET revision = 0, pruned_through = 0`);
  });

  const readAll = async (pageSize?: number) => {
    const repository = new EntriesRepository(db.dataSource);
    return repository.readSnapshot(async (tx) => {
      const all = await repository.findAll(tx, pageSize);
      const byId = await repository.findByIds(
        tx,
        all.map((found) => found.id),
      );
      return { all, byId };
    });
  };

  it('carries every selector value, DNS name, trust domain and hint exactly, with NULLs and empty lists', async () => {
    const { entries: service } = createRegistry(db.dataSource, notifier, { trustDomain: TD }, clock);
    const inputs: EntryInput[] = ODD.map((_, i) => ({
      spiffeId: `spiffe://example.org/odd/${i}`,
      parentId: i % 2 === 0 ? AGENT : 'spiffe://example.org/odd/0',
      selectors: [
        { type: 'unix', value: `uid:${i}` },
        { type: 'k8s', value: `ns:${i}` },
      ],
      dnsNames: [`d${i}.example.org`, `e${i}.example.org`],
      federatesWith: [`td${i}.example.com`],
      hint: `hint ${i}`,
      ...(i % 3 === 0 && { expiresAt: new Date(clock.now().getTime() + 86_400_123) }),
    }));
    inputs.push({ spiffeId: 'spiffe://example.org/bare', parentId: AGENT, selectors: [{ type: 'unix', value: 'x' }] });
    const results = await service.createEntries(inputs);
    const ids = results.map((result) => (result.ok ? result.entry.id : ''));
    expect(ids.every((id) => id !== '')).toBe(true);

    // The rules would refuse most of these values; the index load must carry whatever the tables hold.
    for (const [i, odd] of ODD.entries()) {
      const id = ids[i];
      await db.dataSource.query(`UPDATE selectors SET value = $1 WHERE entry_id = $2 AND type = 'unix'`, [odd, id]);
      await db.dataSource.query(`UPDATE selectors SET type = $1 WHERE entry_id = $2 AND type = 'k8s'`, [`t${odd}`, id]);
      await db.dataSource.query(`UPDATE dns_names SET value = $1 WHERE entry_id = $2 AND value = $3`, [
        odd,
        id,
        `d${i}.example.org`,
      ]);
      await db.dataSource.query(`UPDATE federated_trust_domains SET trust_domain = $1 WHERE entry_id = $2`, [odd, id]);
      await db.dataSource.query(`UPDATE registered_entries SET hint = $1, spiffe_id = $2 WHERE id = $3`, [
        odd,
        `spiffe://example.org/odd/${odd}`,
        id,
      ]);
    }
    // An entry with no DNS names or trust domains at all, and one with no selectors (not valid, but a table can hold it).
    await db.dataSource.query(`DELETE FROM dns_names WHERE entry_id = $1`, [ids[1]]);
    await db.dataSource.query(`DELETE FROM federated_trust_domains WHERE entry_id = $1`, [ids[1]]);
    await db.dataSource.query(`DELETE FROM selectors WHERE entry_id = $1`, [ids[ODD.length]]);

    for (const pageSize of [undefined, 1, 4]) {
      const { all, byId } = await readAll(pageSize);
      expect(all).toHaveLength(inputs.length);
      expect(all).toEqual(byId);
      const found = new Map(all.map((entry) => [entry.id, entry]));
      for (const [i, odd] of ODD.entries()) {
        const entry = found.get(ids[i]!)!;
        const expected: Partial<Entry> = {
          spiffeId: `spiffe://example.org/odd/${odd}`,
          parentId: inputs[i]!.parentId,
          hint: odd,
          selectors: [
            { type: `t${odd}`, value: `ns:${i}` },
            { type: 'unix', value: odd },
          ].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0)),
          dnsNames: i === 1 ? [] : [odd, `e${i}.example.org`].sort(),
          federatesWith: i === 1 ? [] : [odd],
          expiresAt: i % 3 === 0 ? new Date(clock.now().getTime() + 86_400_123) : null,
        };
        expect(entry).toMatchObject(expected);
      }
      const bare = found.get(ids[ODD.length]!)!;
      expect(bare).toMatchObject({ selectors: [], dnsNames: [], federatesWith: [], hint: '', expiresAt: null });
    }
  });

  it('sorts each list by UTF-16 code units (Entry order), not in the order the database holds or indexes it', async () => {
    const { entries: service } = createRegistry(db.dataSource, notifier, { trustDomain: TD }, clock);
    const [result] = await service.createEntries([
      {
        spiffeId: 'spiffe://example.org/sorted',
        parentId: AGENT,
        selectors: [
          { type: 'unix', value: 'uid:1' },
          { type: 'unix', value: 'uid:2' },
        ],
        dnsNames: ['a.example.org', 'b.example.org'],
        federatesWith: ['a.example.com', 'b.example.com'],
      },
    ]);
    if (!result?.ok) throw new Error('not created');
    const id = result.entry.id;
    // U+FF01 comes before U+1D11E by code point (and in UTF-8 bytes, a C collation's order), after it in UTF-16 code
    // units (a surrogate pair starts with 0xD834). Written first, so it is first physically too.
    const [bmp, astral] = ['\uFF01', '\u{1D11E}'];
    const update = async (sql: string, from: string, to: string) => db.dataSource.query(sql, [to, id, from]);
    const selector = `UPDATE selectors SET value = $1 WHERE entry_id = $2 AND value = $3`;
    const dns = `UPDATE dns_names SET value = $1 WHERE entry_id = $2 AND value = $3`;
    const fed = `UPDATE federated_trust_domains SET trust_domain = $1 WHERE entry_id = $2 AND trust_domain = $3`;
    for (const [sql, first, second] of [
      [selector, 'uid:1', 'uid:2'],
      [dns, 'a.example.org', 'b.example.org'],
      [fed, 'a.example.com', 'b.example.com'],
    ] as const) {
      await update(sql, first, bmp);
      await update(sql, second, astral);
    }
    const { all, byId } = await readAll();
    expect(all).toEqual(byId);
    expect(all[0]).toMatchObject({
      selectors: [
        { type: 'unix', value: astral },
        { type: 'unix', value: bmp },
      ],
      dnsNames: [astral, bmp],
      federatesWith: [astral, bmp],
    });
  });

  it('reads an empty registry as no entries', async () => {
    expect((await readAll()).all).toEqual([]);
  });

  it('reads exactly a page, and a page and one, without losing or repeating an entry', async () => {
    const { entries: service } = createRegistry(db.dataSource, notifier, { trustDomain: TD }, clock);
    const inputs = Array.from({ length: 7 }, (_, i) => ({
      spiffeId: `spiffe://example.org/page/${i}`,
      parentId: AGENT,
      selectors: [{ type: 'unix', value: `uid:${i}` }],
    }));
    expect((await service.createEntries(inputs)).every((result) => result.ok)).toBe(true);
    for (const pageSize of [1, 6, 7, 8]) {
      const { all, byId } = await readAll(pageSize);
      expect(all.map((entry) => entry.id)).toEqual(byId.map((entry) => entry.id));
      expect(all).toHaveLength(7);
      expect(all).toEqual(byId);
    }
  });
});
