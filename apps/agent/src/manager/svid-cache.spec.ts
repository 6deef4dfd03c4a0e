import { createContextValues, createHandlerContext } from '@connectrpc/connect';
import { parseCsrFast } from '@sigil/pki';
import { SpiffeWorkloadAPI } from '@sigil/workload-api';
import { SpiffeId, parseAndValidateJwtSvid, verifyX509Svid } from '@sigil/spiffe';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeAgentApi, testEntry } from '../../../../test/support/fake-agent-api.js';
import { settledState } from '../../../../test/support/settled.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { AgentApiError } from '../client/server-client.js';
import { Backoff } from '../common/backoff.js';
import { PEER_CREDENTIALS, type PeerCredentials } from '../endpoints/peer-credentials.js';
import { WorkloadApiHandler } from '../endpoints/workload-api/workload-api.handler.js';
import { type WorkloadIdentity } from '../endpoints/workload-api/workload-responses.js';
import { EntrySync } from './entry-sync.js';
import { JwtSvidCache } from './jwt-svid-cache.js';
import { SvidCache } from './svid-cache.js';
import { SvidRotator } from './svid-rotator.js';

const uid = (n: number) => [{ type: 'unix', value: `uid:${n}` }];
const id = (path: string): SpiffeId => SpiffeId.parse(`spiffe://example.org${path}`);
const quiet = { warn: () => undefined, debug: () => undefined, log: () => undefined };

let ca: TestCa;
let api: FakeAgentApi;
let cache: SvidCache;
let rotator: SvidRotator;
let sync: EntrySync;
let changes: number;

/** Waits (without a timing assertion) until `condition` holds after some cache change. */
async function until(condition: () => boolean): Promise<void> {
  // At least 20 s: signing and the sync loop share two loaded cores with the rest of the suite.
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(condition()).toBe(true);
}

function build(
  options: { random?: () => number; refusalRetryMs?: number; batchSize?: number; svidCacheMaxSize?: number } = {},
): void {
  cache = new SvidCache(
    new JwtSvidCache((entryId, audience) => api.signJwtSvid(entryId, audience)),
    undefined,
    quiet,
    Math.random,
    undefined,
    options.svidCacheMaxSize === undefined ? {} : { svidCacheMaxSize: options.svidCacheMaxSize },
  );
  rotator = new SvidRotator(cache, api, {
    bundle: () => api.bundle,
    random: options.random ?? (() => 0.5),
    backoff: new Backoff(20, 40, () => 0.5),
    refusalRetryMs: options.refusalRetryMs ?? 60_000,
    ...(options.batchSize !== undefined && { batchSize: options.batchSize }),
    logger: quiet,
  });
  cache.onSigningWanted(() => rotator.schedule());
  sync = new EntrySync(api, cache, rotator, { waitMs: 5_000, backoff: new Backoff(20, 40, () => 0.5), logger: quiet });
  changes = 0;
  cache.subscribe(() => changes++);
}

async function syncAndSign(): Promise<void> {
  await sync.syncOnce();
  await rotator.idle();
}

const svidOf = (identity: WorkloadIdentity | undefined) => identity?.x509Svid;

beforeAll(async () => {
  ca = await TestCa.create('example.org');
});

beforeEach(async () => {
  api = await FakeAgentApi.create(ca);
  build();
});

afterEach(async () => {
  vi.useRealTimers();
  await sync.stop();
  await rotator.stop();
});

describe('SvidCache with the rotator', () => {
  it('is not ready before the first sync, then serves an SVID per entry with a key made on the agent', async () => {
    const web = testEntry(id('/web'), { selectors: uid(1000) });
    const db = testEntry(id('/db'), { selectors: [...uid(1000), { type: 'unix', value: 'gid:50' }] });
    api.put(web);
    api.put(db);
    expect(cache.bundles()).toBeUndefined();
    await syncAndSign();
    expect(cache.bundles()?.own.sequenceNumber).toBe(1);
    expect(api.batches).toEqual([2]);

    const identities = cache.identitiesFor([...uid(1000), { type: 'unix', value: 'gid:50' }]);
    expect(identities.map((identity) => identity.spiffeId.toString())).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);
    for (const identity of identities) {
      const svid = svidOf(identity)!;
      expect((await verifyX509Svid([...svid.chain], api.bundle)).spiffeId.equals(identity.spiffeId)).toBe(true);
    }
    // Each CSR carried only a public key: the two keys differ and neither private key was sent.
    const keys = await Promise.all(api.csrs.map(async (pem) => parseCsrFast(pem).spkiDer.toString('hex')));
    expect(new Set(keys).size).toBe(2);
    expect(api.csrs.join('')).not.toContain('PRIVATE KEY');
    expect(cache.identitiesFor(uid(1000)).map((identity) => identity.spiffeId.toString())).toEqual([
      'spiffe://example.org/web',
    ]);
    expect(cache.identitiesFor(uid(1001))).toEqual([]);
  });

  it('does not re-sign for a change of selectors or hint, and does for DNS names, keeping the old SVID meanwhile', async () => {
    const web = testEntry(id('/web'));
    api.put(web);
    await syncAndSign();
    const first = svidOf(cache.identitiesFor(uid(1000))[0]);

    api.put({ ...web, selectors: uid(1000), hint: 'web', revisionNumber: 99 });
    await syncAndSign();
    expect(api.batches).toEqual([1]);
    expect(cache.identitiesFor(uid(1000))[0]?.hint).toBe('web');
    expect(svidOf(cache.identitiesFor(uid(1000))[0])).toEqual(first);

    api.put({ ...web, dnsNames: ['web.example.org'], revisionNumber: 100 });
    await sync.syncOnce();
    expect(svidOf(cache.identitiesFor(uid(1000))[0])).toEqual(first);
    await rotator.idle();
    expect(api.batches).toEqual([1, 1]);
    expect(svidOf(cache.identitiesFor(uid(1000))[0])).not.toEqual(first);
  });

  it('never serves an old SVID for a new SPIFFE ID, and forgets removed entries', async () => {
    const web = testEntry(id('/web'));
    api.put(web);
    await syncAndSign();
    api.put({ ...web, spiffeId: id('/web2'), revisionNumber: 200 });
    await sync.syncOnce();
    expect(cache.identitiesFor(uid(1000))).toMatchObject([{ spiffeId: id('/web2'), x509Svid: undefined }]);
    await rotator.idle();
    const svid = svidOf(cache.identitiesFor(uid(1000))[0])!;
    expect((await verifyX509Svid([...svid.chain], api.bundle)).spiffeId.toString()).toBe('spiffe://example.org/web2');

    const before = changes;
    api.delete(web.id);
    await sync.syncOnce();
    expect(cache.identitiesFor(uid(1000))).toEqual([]);
    expect(changes).toBeGreaterThan(before);
  });

  it('replaces everything on a full resync', async () => {
    api.put(testEntry(id('/a')));
    await syncAndSign();
    const replacement = testEntry(id('/b'));
    cache.applySync({
      revision: 50,
      full: true,
      entries: [replacement],
      deletedIds: [],
      bundle: api.bundle,
      federatedBundles: [],
    });
    expect(cache.identitiesFor(uid(1000)).map((identity) => identity.spiffeId.toString())).toEqual([
      'spiffe://example.org/b',
    ]);
  });

  it('does not serve an entry the server refuses to sign, serves the others, and tries it again later', async () => {
    build({ refusalRetryMs: 50 });
    const good = testEntry(id('/good'));
    const bad = testEntry(id('/bad'));
    api.put(good);
    api.put(bad);
    api.refused.add(bad.id);
    await syncAndSign();
    expect(cache.identitiesFor(uid(1000)).map((identity) => identity.spiffeId.toString())).toEqual([
      'spiffe://example.org/good',
    ]);
    api.refused.delete(bad.id);
    await until(() => cache.identitiesFor(uid(1000)).length === 2);
    expect(cache.identitiesFor(uid(1000)).every((identity) => identity.x509Svid !== undefined)).toBe(true);
  });

  it.each([
    ['key', 'returned SVID rejected: it certifies another public key than the one of the CSR'],
    ['id', 'returned SVID rejected: it names spiffe://example.org/web-other, expected spiffe://example.org/web'],
  ] as const)('never serves an SVID the server made for another %s', async (tamper, reason) => {
    const warnings: unknown[] = [];
    cache = new SvidCache(new JwtSvidCache((entryId, audience) => api.signJwtSvid(entryId, audience)), undefined, {
      warn: (message: unknown) => warnings.push(message),
    });
    rotator = new SvidRotator(cache, api, { bundle: () => api.bundle, logger: quiet });
    sync = new EntrySync(api, cache, rotator, { logger: quiet });
    api.tamper = tamper;
    api.put(testEntry(id('/web')));
    await syncAndSign();
    expect(cache.identitiesFor(uid(1000))).toEqual([]);
    expect(warnings).toEqual([expect.objectContaining({ reason })]);
  });

  it('asks for its first sync without waiting, then long-polls', async () => {
    const waits: number[] = [];
    const sync = api.sync.bind(api);
    vi.spyOn(api, 'sync').mockImplementation((query, signal) => {
      waits.push(query.waitMs);
      return sync(query, signal);
    });
    let synced = 0;
    const entrySync = new EntrySync(api, cache, rotator, {
      waitMs: 5_000,
      backoff: new Backoff(20, 40, () => 0.5),
      logger: quiet,
      onSynced: () => synced++,
    });
    entrySync.start();
    await until(() => synced === 1 && waits.length === 2);
    await entrySync.stop();
    expect(waits).toEqual([0, 5_000]);
  });

  it('keeps serving its SVIDs while the server is down, and signs once it is back', async () => {
    api.put(testEntry(id('/web')));
    await syncAndSign();
    const served = cache.identitiesFor(uid(1000));
    api.down = true;
    sync.start();
    const late = testEntry(id('/late'));
    api.entries.set(late.id, late);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(cache.identitiesFor(uid(1000))).toEqual(served);
    expect(cache.bundles()).toBeDefined();
    api.down = false;
    api.put(late);
    await until(() => cache.identitiesFor(uid(1000)).filter((identity) => identity.x509Svid).length === 2);
  });

  it('signs in batches of at most the batch size', async () => {
    build({ batchSize: 3 });
    for (let i = 0; i < 7; i++) api.put(testEntry(id(`/many/${i}`), { selectors: uid(2000) }));
    await syncAndSign();
    expect(api.batches).toEqual([3, 3, 1]);
    expect(cache.identitiesFor(uid(2000)).filter((identity) => identity.x509Svid !== undefined)).toHaveLength(7);
  });

  it('tells its subscribers once per signed batch, not once per SVID (open streams recompute their full set)', async () => {
    build({ batchSize: 4 });
    for (let i = 0; i < 7; i++) api.put(testEntry(id(`/coalesced/${i}`), { selectors: uid(2001) }));
    await sync.syncOnce();
    const afterSync = changes;
    await rotator.idle();
    // Two batches at the server at once (AGENT_SIGN_BATCHES_IN_FLIGHT): either may be sent first.
    expect([...api.batches].sort()).toEqual([3, 4]);
    expect(changes - afterSync).toBe(2);
    expect(cache.identitiesFor(uid(2001)).filter((identity) => identity.x509Svid !== undefined)).toHaveLength(7);
  });

  it('waits at least the Retry-After of a 429 for a batch, then signs every entry (none dropped)', async () => {
    const warnings: Record<string, unknown>[] = [];
    let refusals = 1;
    let calls = 0;
    const busy = {
      signX509Svids: (csrs: readonly { entryId: string; csrPem: string }[]) => {
        if (++calls === 2 && refusals-- > 0) {
          api.batches.push(-csrs.length);
          return Promise.reject(new AgentApiError(429, 'resource_exhausted', 'over its budget', 300));
        }
        return api.signX509Svids(csrs);
      },
    };
    rotator = new SvidRotator(cache, busy, {
      bundle: () => api.bundle,
      random: () => 0.5,
      backoff: new Backoff(20, 40, () => 0.5),
      batchSize: 3,
      logger: { warn: (fields: Record<string, unknown>) => warnings.push(fields), debug: () => undefined },
    });
    sync = new EntrySync(api, cache, rotator, {
      waitMs: 5_000,
      backoff: new Backoff(20, 40, () => 0.5),
      logger: quiet,
    });
    for (let i = 0; i < 7; i++) api.put(testEntry(id(`/busy/${i}`), { selectors: uid(3000) }));
    await syncAndSign();
    // The second batch sent was refused: the pass starts no other batch and waits for the server's 300 ms, not the
    // 15 ms backoff (two batches are at the server at once, so which entries it held depends on which lane sent it).
    expect(api.batches.filter((size) => size < 0)).toHaveLength(1);
    expect(warnings).toEqual([
      expect.objectContaining({ msg: 'could not sign X509-SVIDs, will retry', retryInMs: 300 }),
    ]);
    await until(() => cache.identitiesFor(uid(3000)).filter((identity) => identity.x509Svid).length === 7);
    // Nothing dropped: the entries the refused batch held are signed in the next pass.
    expect(api.batches.filter((size) => size > 0).reduce((sum, size) => sum + size, 0)).toBe(7);
    expect(api.batches.filter((size) => size < 0)).toHaveLength(1);
  });

  it('reports the server refusing the agent in one lane even after the other lane failed', async () => {
    let secondStarted!: () => void;
    const secondStart = new Promise<void>((resolve) => (secondStarted = resolve));
    let firstFailed!: () => void;
    const firstFailure = new Promise<void>((resolve) => (firstFailed = resolve));
    let calls = 0;
    const refusals: AgentApiError[] = [];
    const failing = {
      signX509Svids: async (): Promise<never> => {
        if (++calls === 1) {
          // The first batch at the server fails (unavailable) once the second is there too.
          await secondStart;
          setTimeout(firstFailed, 20);
          throw new AgentApiError(503, 'unavailable', 'down', undefined);
        }
        secondStarted();
        await firstFailure;
        throw new AgentApiError(403, 'permission_denied', 'agent is banned', undefined);
      },
    };
    rotator = new SvidRotator(cache, failing, {
      bundle: () => api.bundle,
      backoff: new Backoff(5_000, 5_000, () => 0.5),
      batchSize: 1,
      onAgentRefused: (error) => refusals.push(error),
      logger: quiet,
    });
    sync = new EntrySync(api, cache, rotator, { waitMs: 5_000, logger: quiet });
    for (let i = 0; i < 2; i++) api.put(testEntry(id(`/lanes/${i}`), { selectors: uid(3100) }));
    await sync.syncOnce();
    await until(() => refusals.length === 1);
    expect(calls).toBe(2);
    expect(refusals[0]?.status).toBe(403);
  });

  it('refuses a batch size the server does not take', () => {
    expect(() => new SvidRotator(cache, api, { bundle: () => api.bundle, batchSize: 501 })).toThrow(
      'batchSize: must be from 1 to 500, got 501',
    );
  });
});

describe('lazy signing (svidCacheMaxSize)', () => {
  const signedFor = (n: number): number =>
    cache.identitiesFor(uid(n)).filter((identity) => identity.x509Svid !== undefined).length;

  it("signs nothing until a caller asks, then only that caller's entries, and serves them", async () => {
    build({ svidCacheMaxSize: 10 });
    for (let i = 0; i < 3; i++) api.put(testEntry(id(`/lazy/a${i}`), { selectors: uid(3001) }));
    for (let i = 0; i < 4; i++) api.put(testEntry(id(`/lazy/b${i}`), { selectors: uid(3002) }));
    await syncAndSign();
    expect(api.batches).toEqual([]);
    expect(cache.svidCount).toBe(0);
    const unwatch = cache.watch(uid(3001));
    await until(() => signedFor(3001) === 3);
    await rotator.idle();
    expect(api.batches).toEqual([3]);
    expect(signedFor(3002)).toBe(0);
    // A new entry for the live caller is signed as it arrives.
    api.put(testEntry(id('/lazy/a3'), { selectors: uid(3001) }));
    await syncAndSign();
    expect(signedFor(3001)).toBe(4);
    unwatch();
  });

  it("holds at most the cap, dropping the least recently used SVIDs of callers gone; never a live caller's", async () => {
    build({ svidCacheMaxSize: 3 });
    for (const n of [4001, 4002, 4003]) {
      for (let i = 0; i < 2; i++) api.put(testEntry(id(`/lru/${n}/${i}`), { selectors: uid(n) }));
    }
    await syncAndSign();
    // A live caller with more entries than the cap keeps them all (soft limit).
    const first = cache.watch([...uid(4001)]);
    await until(() => signedFor(4001) === 2);
    cache.watch(uid(4002))(); // a one-off request, then gone
    await until(() => api.batches.length === 2);
    await rotator.idle();
    // 4 held, cap 3: the gone caller's entries are dropped first; the live one's stay.
    expect(cache.svidCount).toBe(3);
    expect(signedFor(4001)).toBe(2);
    expect(signedFor(4002)).toBe(1);
    first();
    const third = cache.watch(uid(4003));
    await until(() => signedFor(4003) === 2);
    await rotator.idle();
    // 5 held: the one-off caller's (used before the first caller left) goes first, then one of the first caller's.
    expect(cache.svidCount).toBe(3);
    expect(signedFor(4003)).toBe(2);
    expect(signedFor(4002)).toBe(0);
    expect(signedFor(4001)).toBe(1);
    third();
    // Dropped SVIDs are not signed again until asked for.
    const batches = api.batches.length;
    await syncAndSign();
    expect(api.batches.length).toBe(batches);
  });

  it('follows entries that arrive, change or go while a caller is live: only its current entries stay past the cap', async () => {
    build({ svidCacheMaxSize: 1 });
    const first = testEntry(id('/pin/0'), { selectors: uid(6001) });
    api.put(first);
    await syncAndSign();
    const live = cache.watch(uid(6001));
    await until(() => signedFor(6001) === 1);
    // Arrives while the caller is live: pinned as it arrives, so both stay although the cap is 1.
    const moving = testEntry(id('/pin/1'), { selectors: uid(6001) });
    api.put(moving);
    await syncAndSign();
    await until(() => signedFor(6001) === 2);
    await rotator.idle();
    expect(cache.svidCount).toBe(2);
    // Moves to selectors the caller lacks (same SPIFFE ID, SVID kept): no longer the caller's, so dropped past the cap.
    // The next store (a new entry of the caller's) drops it: past the cap, only the caller's two entries stay.
    api.put({ ...moving, selectors: uid(6002), revisionNumber: moving.revisionNumber + 1000 });
    await syncAndSign();
    api.put(testEntry(id('/pin/3'), { selectors: uid(6001) }));
    await syncAndSign();
    await until(() => signedFor(6001) === 2 && cache.svidCount === 2);
    await rotator.idle();
    expect(cache.svidCount).toBe(2);
    expect(signedFor(6002)).toBe(0);
    // Removed and the caller gone: nothing of it is kept pinned (the next caller's entries push it out).
    api.delete(first.id);
    live();
    api.put(testEntry(id('/pin/2'), { selectors: uid(6003) }));
    await syncAndSign();
    const next = cache.watch(uid(6003));
    await until(() => signedFor(6003) === 1);
    await rotator.idle();
    expect(cache.svidCount).toBe(1);
    next();
  });

  it('keeps the entries of a set of selectors pinned until its last live caller goes', async () => {
    build({ svidCacheMaxSize: 1 });
    for (let i = 0; i < 2; i++) api.put(testEntry(id(`/group/${i}`), { selectors: uid(7001) }));
    await syncAndSign();
    const selectors = [...uid(7001), { type: 'unix', value: 'gid:7001' }];
    const first = cache.watch(selectors);
    // The same selectors in another order, one repeated: the same group of callers.
    const second = cache.watch([selectors[1]!, selectors[0]!, selectors[1]!]);
    await until(() => signedFor(7001) === 2);
    await rotator.idle();
    first();
    first(); // a second call of the same close changes nothing
    expect(cache.svidCount).toBe(2);
    second();
    expect(cache.svidCount).toBe(1);
  });

  it('without the option, signs every entry at once and watch changes nothing', async () => {
    for (let i = 0; i < 3; i++) api.put(testEntry(id(`/eager/${i}`), { selectors: uid(5001) }));
    await syncAndSign();
    expect(cache.svidCount).toBe(3);
    cache.watch(uid(5001))();
    expect(cache.svidCount).toBe(3);
    expect(() => build({ svidCacheMaxSize: 0 })).toThrow('svidCacheMaxSize: must be a positive integer, got 0');
  });
});

describe('rotation', () => {
  it('rotates each SVID at half its lifetime (jitter drawn from the injected random)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    // Certificates carry whole seconds: start on one so that half life is exact.
    vi.setSystemTime(Math.ceil(Date.now() / 1000) * 1000);
    build({ random: () => 0.5 });
    api.x509TtlSeconds = 100;
    api.put(testEntry(id('/web')));
    const start = Date.now();
    await syncAndSign();
    expect(cache.nextSigningTime()?.getTime()).toBe(start + 50_000);
    const first = svidOf(cache.identitiesFor(uid(1000))[0]);

    await vi.advanceTimersByTimeAsync(49_000);
    await rotator.idle();
    expect(api.batches).toEqual([1]);
    await vi.advanceTimersByTimeAsync(1_000);
    await rotator.idle();
    expect(api.batches).toEqual([1, 1]);
    expect(svidOf(cache.identitiesFor(uid(1000))[0])).not.toEqual(first);
    expect(cache.nextSigningTime()?.getTime()).toBe(start + 100_000);
  });

  it.each([
    [0, 450_000],
    [0.999_999, 550_000],
  ])(
    'moves the rotation by up to a tenth of half life with the jitter (random %d, offset %d ms)',
    async (random, offset) => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
      vi.setSystemTime(Math.ceil(Date.now() / 1000) * 1000);
      build({ random: () => random });
      api.x509TtlSeconds = 1000;
      api.put(testEntry(id('/web')));
      const start = Date.now();
      await syncAndSign();
      expect(cache.nextSigningTime()?.getTime()).toBe(start + offset);
    },
  );
});

describe('EntrySync', () => {
  it('picks up a new entry through the long poll, without a timer', async () => {
    sync.start();
    await until(() => cache.bundles() !== undefined);
    const calls = api.syncCalls;
    api.put(testEntry(id('/new')));
    await until(() => cache.identitiesFor(uid(1000))[0]?.x509Svid !== undefined);
    expect(api.syncCalls).toBe(calls + 1);
  });

  it('reports a new bundle, and an agent the server refuses', async () => {
    const bundles: (number | undefined)[] = [];
    const refusals: AgentApiError[] = [];
    sync = new EntrySync(api, cache, rotator, {
      waitMs: 5_000,
      backoff: new Backoff(20, 40, () => 0.5),
      onOwnBundle: (bundle) => void bundles.push(bundle.sequenceNumber),
      onAgentRefused: (error) => refusals.push(error),
      logger: quiet,
    });
    sync.start();
    await until(() => bundles.length === 1);
    api.bumpBundle();
    await until(() => bundles.length === 2);
    expect(bundles).toEqual([1, 2]);
    expect(cache.bundles()?.own.sequenceNumber).toBe(2);
    api.agentError = new AgentApiError(403, 'permission_denied', 'agent is banned');
    api.bumpBundle();
    await until(() => refusals.length > 0);
    expect(refusals[0]?.message).toBe('agent is banned');
  });
});

describe('SvidCache behind the Workload API handler (streams skip a change that leaves their objects as they were)', () => {
  // The attestor below ignores them: the handler only needs the caller's connection to have them.
  const caller = { pid: 4242, uid: 1000, gid: 1000, startTime: 1n } as unknown as PeerCredentials;
  const fetchContext = () =>
    createHandlerContext({
      service: SpiffeWorkloadAPI,
      method: SpiffeWorkloadAPI.methods.find((m) => m.name === 'FetchX509SVID')!,
      protocolName: 'grpc',
      requestMethod: 'POST',
      url: '/SpiffeWorkloadAPI/FetchX509SVID',
      contextValues: createContextValues().set(PEER_CREDENTIALS, caller),
    });

  it("sends each change of the caller's SVIDs and nothing for another workload's", async () => {
    const web = testEntry(id('/web'), { selectors: uid(1000) });
    const db = testEntry(id('/db'), { selectors: uid(1000) });
    api.put(web);
    api.put(db);
    await syncAndSign();
    const handler = new WorkloadApiHandler({ attest: async () => uid(1000) }, cache, { logger: quiet });
    const stream = handler.fetchX509Svid(fetchContext());
    const first = (await stream.next()).value!;
    expect(first.svids.map((svid: { spiffeId: string }) => svid.spiffeId)).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);

    let next = stream.next();
    api.put(testEntry(id('/other'), { selectors: uid(2000) }));
    await syncAndSign();
    expect(api.batches).toEqual([2, 1]);
    expect(await settledState(next)).toBe('pending');

    api.put({ ...web, hint: 'web', revisionNumber: 99 });
    await syncAndSign();
    const hinted = (await next).value!;
    expect(hinted.svids[0]!.hint).toBe('web');
    expect(hinted.svids[0]!.x509SvidKey).toEqual(first.svids[0]!.x509SvidKey);

    next = stream.next();
    api.put({ ...web, hint: 'web', dnsNames: ['web.example.org'], revisionNumber: 100 });
    await syncAndSign();
    const resigned = (await next).value!;
    expect(resigned.svids[0]!.x509SvidKey).not.toEqual(hinted.svids[0]!.x509SvidKey);
    expect(resigned.svids[1]!.x509SvidKey).toEqual(hinted.svids[1]!.x509SvidKey);

    next = stream.next();
    api.delete(db.id);
    await syncAndSign();
    expect((await next).value!.svids.map((svid: { spiffeId: string }) => svid.spiffeId)).toEqual([
      'spiffe://example.org/web',
    ]);
    await stream.return(undefined);
  });
});

describe('JWT-SVIDs', () => {
  const caller = { uid: 1000 };

  it('reuses a token per entry and audience set until half its life, and shares concurrent requests', async () => {
    const web = testEntry(id('/web'));
    api.put(web);
    await syncAndSign();
    const identity = cache.identitiesFor(uid(1000))[0]!;
    const [a, b] = await Promise.all([
      cache.fetchJwtSvid(identity, ['x', 'y'], caller),
      cache.fetchJwtSvid(identity, ['y', 'x', 'x'], caller),
    ]);
    expect(a).toBe(b);
    expect(api.jwtCalls).toBe(1);
    const svid = await parseAndValidateJwtSvid(a, api.bundle, ['x']);
    expect(svid.audience).toEqual(['x', 'y']);
    expect(await cache.fetchJwtSvid(identity, ['z'], caller)).not.toBe(a);
    expect(api.jwtCalls).toBe(2);

    api.delete(web.id);
    await sync.syncOnce();
    await expect(cache.fetchJwtSvid(identity, ['x', 'y'], caller)).rejects.toThrow(
      `entry ${web.id} is no longer authorised for spiffe://example.org/web`,
    );
  });

  it('asks again once half the lifetime has passed', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const web = testEntry(id('/web'));
    api.put(web);
    await syncAndSign();
    const identity = cache.identitiesFor(uid(1000))[0]!;
    const first = await cache.fetchJwtSvid(identity, ['x'], caller);
    vi.setSystemTime(Date.now() + 140_000);
    expect(await cache.fetchJwtSvid(identity, ['x'], caller)).toBe(first);
    vi.setSystemTime(Date.now() + 20_000);
    expect(await cache.fetchJwtSvid(identity, ['x'], caller)).not.toBe(first);
    expect(api.jwtCalls).toBe(2);
  });

  it('rejects a token that does not name the entry or lacks an audience', async () => {
    const jwt = new JwtSvidCache(async (_entryId, audience) => api.jwtFor(id('/other'), audience));
    await expect(jwt.fetch('e1', id('/web'), ['x'], caller)).rejects.toThrow(
      'server signed a JWT-SVID for spiffe://example.org/other, expected spiffe://example.org/web',
    );
    const partial = new JwtSvidCache(async () => api.jwtFor(id('/web'), ['x']));
    await expect(partial.fetch('e1', id('/web'), ['x', 'y'], caller)).rejects.toThrow('JWT-SVID aud lacks "y"');
  });

  it('drops the tokens of an entry that is forgotten', async () => {
    const jwt = new JwtSvidCache((_entryId, audience) => api.jwtFor(id('/web'), audience));
    for (const audience of ['a', 'b', 'c']) await jwt.fetch('e1', id('/web'), [audience], caller);
    expect(jwt.size).toBe(3);
    jwt.forget('e1');
    expect(jwt.size).toBe(0);
    expect(jwt.bytes).toBe(0);
  });
});

describe('unix:sha256 in use', () => {
  it('tells whether any entry held has a unix:sha256 selector, as entries come, change and go', () => {
    const sha256 = { type: 'unix', value: `sha256:${'ab'.repeat(32)}` };
    const apply = (entries: ReturnType<typeof testEntry>[], deletedIds: string[] = [], full = false) =>
      cache.applySync({ revision: 1, full, entries, deletedIds, bundle: api.bundle, federatedBundles: [] });
    expect(cache.usesUnixSha256()).toBe(false);
    const web = testEntry(id('/web'), { selectors: uid(1000) });
    apply([web]);
    expect(cache.usesUnixSha256()).toBe(false);
    const pinned = testEntry(id('/pinned'), { selectors: [...uid(1000), sha256] });
    apply([pinned]);
    expect(cache.usesUnixSha256()).toBe(true);
    apply([{ ...pinned, selectors: uid(1000), revisionNumber: pinned.revisionNumber + 1 }]);
    expect(cache.usesUnixSha256()).toBe(false);
    apply([{ ...web, selectors: [sha256], revisionNumber: web.revisionNumber + 1 }]);
    expect(cache.usesUnixSha256()).toBe(true);
    apply([], [web.id]);
    expect(cache.usesUnixSha256()).toBe(false);
    apply([{ ...web, selectors: [sha256], revisionNumber: web.revisionNumber + 2 }]);
    expect(cache.usesUnixSha256()).toBe(true);
    apply([pinned], [], true);
    expect(cache.usesUnixSha256()).toBe(true);
    apply([{ ...pinned, selectors: uid(1000), revisionNumber: pinned.revisionNumber + 2 }], [], true);
    expect(cache.usesUnixSha256()).toBe(false);
  });
});

describe('SvidCache: an expired X509-SVID is never served', () => {
  it('stops serving an SVID at its expiry while the server cannot renew it, tells open streams, and says why', async () => {
    const warnings: unknown[] = [];
    cache = new SvidCache(new JwtSvidCache((entryId, audience) => api.signJwtSvid(entryId, audience)), undefined, {
      ...quiet,
      warn: (fields: unknown) => void warnings.push(fields),
    });
    rotator = new SvidRotator(cache, api, {
      bundle: () => api.bundle,
      random: () => 0.5,
      backoff: new Backoff(20, 40, () => 0.5),
      logger: quiet,
    });
    sync = new EntrySync(api, cache, rotator, {
      waitMs: 5_000,
      backoff: new Backoff(20, 40, () => 0.5),
      logger: quiet,
    });
    api.x509TtlSeconds = 2;
    api.put(testEntry(id('/web'), { selectors: uid(1000) }));
    await syncAndSign();
    const served = cache.identitiesFor(uid(1000));
    expect(svidOf(served[0])).toBeDefined();
    let notified = 0;
    cache.subscribe(() => notified++);
    api.down = true;
    // The SVID expires within 2 s (its not-after is backdated to whole seconds by the fake server).
    await until(() => cache.expiredSvidCount() === 1 && notified > 0);
    const [expired] = cache.identitiesFor(uid(1000));
    expect(expired?.x509Svid).toBeUndefined();
    expect(expired?.expired?.notAfter.getTime()).toBeLessThanOrEqual(Date.now());
    expect(expired?.expired?.reason).toMatch(/unreachable|cannot connect|server/i);
    expect(warnings).toContainEqual(
      expect.objectContaining({ msg: 'X509-SVIDs expired before the agent could renew them: no longer served' }),
    );
    // The server is back: a new SVID is served again.
    api.down = false;
    rotator.schedule();
    await until(() => svidOf(cache.identitiesFor(uid(1000))[0]) !== undefined);
    expect(cache.expiredSvidCount()).toBe(0);
    cache.close();
  });
});
