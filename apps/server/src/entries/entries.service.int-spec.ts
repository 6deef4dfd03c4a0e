import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { type AppError } from '../common/errors.js';
import { createRegistry } from '../../../../test/support/registry.js';
import type { EntriesService } from './entries.service.js';
import type { EntryChangeLogService } from './entry-change-log.service.js';
import { InProcessEntryChangeNotifier } from './entry-change-notifier.js';
import type { EntryInput } from './entry.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/a1';
const OTHER_AGENT = 'spiffe://example.org/sigil/agent/join_token/b2';
const base: EntryInput = {
  spiffeId: 'spiffe://example.org/web',
  parentId: AGENT,
  selectors: [{ type: 'unix', value: 'uid:1000' }],
};

describe('EntriesService', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let service: EntriesService;
  let changeLog: EntryChangeLogService;

  beforeAll(async () => {
    db = await useTestDatabase();
    clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));
    const notifier = new InProcessEntryChangeNotifier();
    ({ entries: service, changeLog } = createRegistry(db.dataSource, notifier, { trustDomain: TD }, clock));
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

  it('creates, reads, updates and deletes an entry', async () => {
    const created = await service.createEntry({
      spiffeId: 'spiffe://EXAMPLE.org/web',
      parentId: AGENT,
      selectors: [
        { type: 'unix', value: 'uid:1000' },
        { type: 'unix', value: 'gid:50' },
      ],
      x509SvidTtl: 600,
      jwtSvidTtl: 120,
      dnsNames: ['Web.Example.org', '*.svc.example.org'],
      federatesWith: ['spiffe://partner.example.com', 'acme.test'],
      admin: true,
      hint: 'web',
      expiresAt: new Date('2026-04-01T00:00:00Z'),
    });
    expect(created).toMatchObject({
      spiffeId: 'spiffe://example.org/web',
      parentId: AGENT,
      selectors: [
        { type: 'unix', value: 'gid:50' },
        { type: 'unix', value: 'uid:1000' },
      ],
      x509SvidTtl: 600,
      jwtSvidTtl: 120,
      dnsNames: ['*.svc.example.org', 'web.example.org'],
      federatesWith: ['acme.test', 'partner.example.com'],
      admin: true,
      downstream: false,
      hint: 'web',
      expiresAt: new Date('2026-04-01T00:00:00Z'),
      revisionNumber: 1,
      createdAt: clock.now(),
      updatedAt: clock.now(),
    });
    expect(await service.getEntry(created.id)).toEqual(created);

    clock.advance(5000);
    const updated = await service.updateEntry(created.id, {
      selectors: [{ type: 'unix', value: 'uid:2000' }],
      dnsNames: [],
      expiresAt: null,
    });
    expect(updated).toMatchObject({
      id: created.id,
      selectors: [{ type: 'unix', value: 'uid:2000' }],
      dnsNames: [],
      federatesWith: ['acme.test', 'partner.example.com'],
      hint: 'web',
      expiresAt: null,
      revisionNumber: 2,
      createdAt: created.createdAt,
      updatedAt: clock.now(),
    });

    await service.deleteEntry(created.id);
    await expect(service.getEntry(created.id)).rejects.toThrow(`entry "${created.id}" not found`);
    await expect(service.deleteEntry(created.id)).rejects.toMatchObject({ kind: 'not_found' });
    await expect(service.updateEntry(created.id, { hint: 'x' })).rejects.toMatchObject({ kind: 'not_found' });
    expect(await changeLog.currentRevision()).toBe(3);
  });

  it('refuses malformed ids before touching the database', async () => {
    for (const call of [
      () => service.getEntry('nope'),
      () => service.deleteEntry('1; DROP TABLE x'),
      () => service.updateEntry('ABCDEF00-0000-4000-8000-000000000000', {}),
    ]) {
      await expect(call()).rejects.toMatchObject({ kind: 'invalid_argument', message: /^id: must be an entry id/ });
    }
  });

  const long = (n: number) => 'a'.repeat(n);
  const selectors = (n: number) => Array.from({ length: n }, (_, i) => ({ type: 'unix', value: `uid:${i}` }));
  it.each<[string, Partial<Record<keyof EntryInput, unknown>>, string | RegExp]>([
    ['spiffe_id type', { spiffeId: 42 }, 'spiffe_id: must be a string'],
    [
      'spiffe_id syntax',
      { spiffeId: 'spiffe://example.org/a//b' },
      /^spiffe_id: .*path must not contain empty segments$/,
    ],
    [
      'spiffe_id scheme',
      { spiffeId: 'https://example.org/web' },
      /^spiffe_id: invalid spiffe id .*scheme must be "spiffe"$/,
    ],
    [
      'spiffe_id trust domain',
      { spiffeId: 'spiffe://other.org/web' },
      'spiffe_id: must be in trust domain "example.org", got "other.org"',
    ],
    [
      'spiffe_id root',
      { spiffeId: 'spiffe://example.org' },
      `spiffe_id: must have a path; "spiffe://example.org" names the trust domain's authority`,
    ],
    [
      'spiffe_id reserved',
      { spiffeId: 'spiffe://example.org/sigil/agent/x' },
      'spiffe_id: path "/sigil/agent/x" is reserved for sigil servers and agents',
    ],
    ['parent_id syntax', { parentId: 'spiffe://example.org/a/' }, /^parent_id: .*path must not end with a slash$/],
    [
      'parent_id trust domain',
      { parentId: 'spiffe://other.org/agent' },
      'parent_id: must be in trust domain "example.org", got "other.org"',
    ],
    ['parent_id root', { parentId: 'spiffe://example.org' }, /^parent_id: must have a path/],
    ['spiffe_id = parent_id', { parentId: 'spiffe://example.org/web' }, 'spiffe_id: must differ from parent_id'],
    ['selectors missing', { selectors: undefined }, 'selectors: must be a list'],
    ['selectors empty', { selectors: [] }, 'selectors: at least one selector is required'],
    ['selectors too many', { selectors: selectors(65) }, 'selectors: at most 64 selectors, got 65'],
    ['selector not object', { selectors: ['unix:uid:0'] }, 'selectors.0: must be an object'],
    ['selector type type', { selectors: [{ type: 1, value: 'x' }] }, 'selectors.0.type: must be a string'],
    ['selector type empty', { selectors: [{ type: '', value: 'x' }] }, 'selectors.0.type: must not be empty'],
    [
      'selector type colon',
      { selectors: [{ type: 'un:ix', value: 'x' }] },
      `selectors.0.type: "un:ix" may only contain letters, digits, '_', '-' and '.'`,
    ],
    [
      'selector type long',
      { selectors: [{ type: long(65), value: 'x' }] },
      'selectors.0.type: must be at most 64 characters',
    ],
    ['selector value empty', { selectors: [{ type: 'unix', value: '' }] }, 'selectors.0.value: must not be empty'],
    [
      'selector value long',
      { selectors: [{ type: 'unix', value: 'é'.repeat(513) }] },
      'selectors.0.value: must be at most 1024 bytes',
    ],
    [
      'selector value control',
      { selectors: [{ type: 'unix', value: 'uid:0\n' }] },
      'selectors.0.value: must not contain control characters',
    ],
    [
      'selector value lone surrogate',
      { selectors: [{ type: 'unix', value: 'uid:\ud800' }] },
      'selectors.0.value: must be well-formed Unicode (it holds a lone UTF-16 surrogate)',
    ],
    [
      'selector duplicate',
      { selectors: [...selectors(2), { type: 'unix', value: 'uid:1' }] },
      'selectors.2: duplicate selector "unix:uid:1"',
    ],
    ['x509 ttl fraction', { x509SvidTtl: 1.5 }, 'x509_svid_ttl: must be a whole number of seconds'],
    [
      'x509 ttl short',
      { x509SvidTtl: 59 },
      'x509_svid_ttl: must be 0 (the server default) or from 60 to 31536000 seconds, got 59',
    ],
    ['x509 ttl long', { x509SvidTtl: 31536001 }, /^x509_svid_ttl: .* got 31536001$/],
    ['x509 ttl negative', { x509SvidTtl: -1 }, /^x509_svid_ttl: .* got -1$/],
    [
      'jwt ttl short',
      { jwtSvidTtl: 29 },
      'jwt_svid_ttl: must be 0 (the server default) or from 30 to 86400 seconds, got 29',
    ],
    ['jwt ttl long', { jwtSvidTtl: 86401 }, /^jwt_svid_ttl: .* got 86401$/],
    ['jwt ttl type', { jwtSvidTtl: '60' }, 'jwt_svid_ttl: must be a whole number of seconds'],
    [
      'dns name charset',
      { dnsNames: ['web_1.example.org'] },
      'dns_names.0: label "web_1" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    ['dns name hyphen', { dnsNames: ['ok.org', '-a.org'] }, /^dns_names\.1: label "-a" /],
    ['dns name empty label', { dnsNames: ['a..org'] }, 'dns_names.0: "a..org" has an empty label'],
    ['dns name long label', { dnsNames: [`${long(64)}.org`] }, /must be at most 63 characters$/],
    ['dns name long', { dnsNames: [`${`${long(60)}.`.repeat(5)}org`] }, /must be at most 253 characters, got 308$/],
    ['dns name wildcard', { dnsNames: ['*.org'] }, /wildcard "\*\.org" must cover at least two labels/],
    ['dns name ip address', { dnsNames: ['10.0.0.1'] }, /"10\.0\.0\.1" looks like an ip address/],
    ['dns name empty', { dnsNames: [''] }, 'dns_names.0: cannot be empty'],
    ['dns name duplicate', { dnsNames: ['a.org', 'A.org'] }, 'dns_names.1: duplicate dns name "a.org"'],
    ['dns names too many', { dnsNames: Array.from({ length: 33 }, (_, i) => `h${i}.org`) }, /^dns_names: at most 32/],
    ['federates_with syntax', { federatesWith: ['Bad Domain'] }, /^federates_with\.0: invalid trust domain/],
    [
      'federates_with ours',
      { federatesWith: ['spiffe://example.org'] },
      `federates_with.0: must not be this server's own trust domain "example.org"`,
    ],
    [
      'federates_with duplicate',
      { federatesWith: ['b.org', 'spiffe://B.org'] },
      'federates_with.1: duplicate trust domain "b.org"',
    ],
    ['admin type', { admin: 'yes' }, 'admin: must be true or false'],
    ['downstream type', { downstream: 1 }, 'downstream: must be true or false'],
    ['hint long', { hint: 'é'.repeat(513) }, 'hint: must be at most 1024 bytes'],
    ['hint control', { hint: 'a\u0007' }, 'hint: must not contain control characters'],
    [
      'hint lone surrogate',
      { hint: 'a\udfff' },
      'hint: must be well-formed Unicode (it holds a lone UTF-16 surrogate)',
    ],
    ['expires_at invalid', { expiresAt: new Date('nope') }, 'expires_at: must be a valid time'],
    [
      'expires_at past',
      { expiresAt: new Date('2026-03-01T00:00:00Z') },
      'expires_at: must be in the future, got 2026-03-01T00:00:00.000Z',
    ],
  ])('refuses %s', async (_name, override, message) => {
    const input = { ...base, ...override } as EntryInput;
    const [result] = await service.createEntries([input]);
    expect(result).toMatchObject({ ok: false, error: { kind: 'invalid_argument' } });
    const error = (result as { error: AppError }).error;
    if (typeof message === 'string') expect(error.message).toBe(message);
    else expect(error.message).toMatch(message);
    expect(await service.countEntries()).toBe(0);
  });

  it('refuses a duplicate (same spiffe_id, parent_id and selector set) and reports the existing entry', async () => {
    const first = await service.createEntry({
      ...base,
      selectors: [
        { type: 'unix', value: 'uid:1' },
        { type: 'unix', value: 'gid:1' },
      ],
    });
    const results = await service.createEntries([
      // same set in another order, other optional fields: a duplicate
      { ...base, selectors: [...first.selectors].reverse(), hint: 'other', x509SvidTtl: 300 },
      // a subset, a superset, another parent: all distinct entries
      { ...base, selectors: [{ type: 'unix', value: 'uid:1' }] },
      { ...base, selectors: [...first.selectors, { type: 'unix', value: 'user:web' }] },
      { ...base, parentId: OTHER_AGENT, selectors: first.selectors },
      // twice in one batch: the second is the duplicate
      { ...base, spiffeId: 'spiffe://example.org/db' },
      { ...base, spiffeId: 'spiffe://example.org/db' },
    ]);
    expect(results.map((result) => (result.ok ? 'ok' : result.error.kind))).toEqual([
      'already_exists',
      'ok',
      'ok',
      'ok',
      'ok',
      'already_exists',
    ]);
    expect(results[0]).toMatchObject({ ok: false, existing: first });
    expect((results[0] as { error: AppError }).error.message).toBe(
      `entry "${first.id}" with spiffe_id "spiffe://example.org/web", parent_id "${AGENT}" and selectors [unix:gid:1, unix:uid:1] already exists`,
    );
    const second = results[1] as { ok: true; entry: { id: string } };
    await expect(service.updateEntry(second.entry.id, { selectors: first.selectors })).rejects.toMatchObject({
      kind: 'already_exists',
    });
    // a no-op update of the entry itself is not a duplicate of itself
    await expect(service.updateEntry(first.id, { hint: 'same' })).resolves.toMatchObject({ hint: 'same' });
    expect(await changeLog.currentRevision()).toBe(6);
  });

  it('validates an update as a whole and keeps the entry unchanged when it fails', async () => {
    const entry = await service.createEntry({ ...base, expiresAt: new Date('2026-03-02T00:00:00Z') });
    await expect(service.updateEntry(entry.id, { jwtSvidTtl: 5 })).rejects.toThrow(/^jwt_svid_ttl: /);
    await expect(service.updateEntry(entry.id, { parentId: entry.spiffeId })).rejects.toThrow(
      'spiffe_id: must differ from parent_id',
    );
    await expect(service.updateEntry(entry.id, { expiresAt: new Date('2026-02-01T00:00:00Z') })).rejects.toThrow(
      /^expires_at: must be in the future/,
    );
    expect(await service.getEntry(entry.id)).toEqual(entry);
    // an expiry already in the past does not block other changes
    clock.advance(2 * 86400_000);
    await expect(service.updateEntry(entry.id, { hint: 'late' })).resolves.toMatchObject({ hint: 'late' });
    expect(await changeLog.currentRevision()).toBe(2);
  });

  it('filters by spiffe_id, parent_id, hint, downstream, federates_with and selectors with each match mode', async () => {
    const make = (name: string, parentId: string, sel: string[], extra: Partial<EntryInput> = {}) =>
      service.createEntry({
        spiffeId: `spiffe://example.org/${name}`,
        parentId,
        selectors: sel.map((text) => ({ type: text.split(':')[0]!, value: text.slice(text.indexOf(':') + 1) })),
        ...extra,
      });
    const a = await make('a', AGENT, ['unix:uid:1']);
    const ab = await make('ab', AGENT, ['unix:uid:1', 'unix:gid:2'], { hint: 'h', federatesWith: ['p.org'] });
    const abc = await make('abc', OTHER_AGENT, ['unix:uid:1', 'unix:gid:2', 'unix:user:c'], {
      federatesWith: ['p.org', 'q.org'],
      downstream: true,
    });
    const d = await make('d', OTHER_AGENT, ['docker:label:x']);
    const ids = async (filter: Parameters<EntriesService['listEntries']>[0]) =>
      (await service.listEntries(filter)).entries.map((entry) => entry.spiffeId.split('/').pop()).sort();
    const sel = (...texts: string[]) => texts.map((text) => ({ type: 'unix', value: text }));

    expect(await ids({})).toEqual(['a', 'ab', 'abc', 'd']);
    expect(await ids({ spiffeId: 'spiffe://EXAMPLE.org/ab' })).toEqual(['ab']);
    expect(await ids({ parentId: OTHER_AGENT })).toEqual(['abc', 'd']);
    expect(await ids({ hint: 'h' })).toEqual(['ab']);
    expect(await ids({ federatesWith: ['spiffe://p.org'] })).toEqual(['ab', 'abc']);
    expect(await ids({ federatesWith: ['P.org', 'q.org'] })).toEqual(['abc']);
    expect(await ids({ federatesWith: ['p.org'], federatesWithMatch: 'exact' })).toEqual(['ab']);
    expect(await ids({ federatesWith: ['q.org', 'r.org'], federatesWithMatch: 'any' })).toEqual(['abc']);
    // subset: every trust domain the entry federates with is among the given ones (none at all counts)
    expect(await ids({ federatesWith: ['p.org'], federatesWithMatch: 'subset' })).toEqual(['a', 'ab', 'd']);
    expect(await ids({ downstream: true })).toEqual(['abc']);
    expect(await ids({ downstream: false, parentId: OTHER_AGENT })).toEqual(['d']);
    expect(await ids({ selectors: sel('uid:1', 'gid:2') })).toEqual(['ab', 'abc']);
    expect(await ids({ selectors: sel('uid:1', 'gid:2'), selectorMatch: 'exact' })).toEqual(['ab']);
    expect(await ids({ selectors: sel('uid:1', 'gid:2'), selectorMatch: 'subset' })).toEqual(['a', 'ab']);
    expect(await ids({ selectors: sel('gid:2', 'user:c'), selectorMatch: 'any' })).toEqual(['ab', 'abc']);
    expect(await ids({ selectors: sel('uid:1', 'uid:1'), selectorMatch: 'exact' })).toEqual(['a']);
    expect(await ids({ selectors: sel('uid:1'), parentId: OTHER_AGENT })).toEqual(['abc']);
    expect(await service.countEntries({ selectors: sel('uid:1') })).toBe(3);
    expect(await service.countEntries({ spiffeId: 'not an id' })).toBe(0);
    await expect(service.listEntries({ selectors: sel('x'), selectorMatch: 'most' as never })).rejects.toThrow(
      'selector_match: must be one of superset, exact, subset, any, got "most"',
    );
    await expect(
      service.listEntries({ federatesWith: ['p.org'], federatesWithMatch: 'most' as never }),
    ).rejects.toThrow('federates_with_match: must be one of superset, exact, subset, any, got "most"');
    expect([a, ab, abc, d].every((entry) => entry.revisionNumber > 0)).toBe(true);
  });

  it('pages through every entry exactly once with cursor tokens', async () => {
    const created = await service.createEntries(
      Array.from({ length: 25 }, (_, i) => ({ ...base, spiffeId: `spiffe://example.org/w${i}` })),
    );
    expect(created.every((result) => result.ok)).toBe(true);
    const seen: string[] = [];
    let pageToken: string | undefined;
    let pages = 0;
    do {
      const page = await service.listEntries({ parentId: AGENT }, { pageSize: 10, pageToken });
      seen.push(...page.entries.map((entry) => entry.id));
      pageToken = page.nextPageToken ?? undefined;
      pages += 1;
    } while (pageToken !== undefined);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(25);
    expect(new Set(seen).size).toBe(25);
    expect(seen).toEqual([...seen].sort());
    await expect(service.listEntries({}, { pageSize: 0 })).rejects.toThrow('page_size: must be from 1 to 1000, got 0');
    await expect(service.listEntries({}, { pageSize: 1001 })).rejects.toMatchObject({ kind: 'invalid_argument' });
    await expect(service.listEntries({}, { pageToken: 'not-a-token' })).rejects.toThrow(
      'page_token: not a token returned by a previous page',
    );
  });

  it('creates an entry under the id asked for, refusing one in use or not a lowercase uuid', async () => {
    const id = '0f8e4b5a-1c2d-4e3f-8a9b-0c1d2e3f4a5b';
    const [made, again, bad] = await service.createEntries([
      { ...base, id, spiffeId: 'spiffe://example.org/own-id' },
      { ...base, id, spiffeId: 'spiffe://example.org/same-id' },
      { ...base, id: 'entry-1', spiffeId: 'spiffe://example.org/bad-id' },
    ]);
    expect(made).toMatchObject({ ok: true, entry: { id, spiffeId: 'spiffe://example.org/own-id' } });
    expect(again).toMatchObject({ ok: false, existing: { id, spiffeId: 'spiffe://example.org/own-id' } });
    expect(again!.ok || again!.error.message).toBe(`id: an entry with id "${id}" already exists`);
    expect(bad!.ok || bad!.error.message).toBe('id: must be an entry id (a lowercase uuid), got "entry-1"');
    expect((await service.listEntries({ spiffeId: 'spiffe://example.org/same-id' })).entries).toEqual([]);
  });
});
