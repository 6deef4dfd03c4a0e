import { X509Certificate } from 'node:crypto';
import { SpiffeId } from '@sigil/spiffe';
import { x509 } from '@sigil/spiffe/x509';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FAKE_JWT_KID, FakeAgentApi, testEntry } from '../../../../test/support/fake-agent-api.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { Backoff } from '../common/backoff.js';
import { EntrySync } from './entry-sync.js';
import { JwtSvidCache } from './jwt-svid-cache.js';
import { SvidCache, type TaintOutcome } from './svid-cache.js';
import { TAINTED_ROTATION_WINDOW_MS } from './svid-issuers.js';
import { SvidRotator } from './svid-rotator.js';

const uid = [{ type: 'unix', value: 'uid:1000' }];
const id = (path: string): SpiffeId => SpiffeId.parse(`spiffe://example.org${path}`);
const quiet = { warn: () => undefined, debug: () => undefined, log: () => undefined };
const caller = { uid: 1000, pid: 1 };

let ca: TestCa;
let api: FakeAgentApi;
let jwts: JwtSvidCache;
let cache: SvidCache;
let rotator: SvidRotator;
let sync: EntrySync;
let taints: TaintOutcome[];
/** The jitter the cache draws for a forced rotation. */
let taintRandom: number;

/** The authority ID of the fake's CA: the subject key identifier of its root, as the server names it. */
const rootId = (): string =>
  ca.root().certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId.toLowerCase();

const serials = (): string[] =>
  cache
    .identitiesFor(uid)
    .map((identity) => new X509Certificate(identity.x509Svid!.chain[0]!).serialNumber)
    .sort();

async function syncAndSign(): Promise<void> {
  await sync.syncOnce();
  await rotator.idle();
}

beforeAll(async () => {
  ca = await TestCa.create('example.org');
});

beforeEach(async () => {
  api = await FakeAgentApi.create(ca);
  taints = [];
  taintRandom = 0;
  jwts = new JwtSvidCache((entryId, audience) => api.signJwtSvid(entryId, audience));
  cache = new SvidCache(
    jwts,
    undefined,
    quiet,
    () => taintRandom,
    (outcome) => taints.push(outcome),
  );
  rotator = new SvidRotator(cache, api, { bundle: () => api.bundle, random: () => 0.5, logger: quiet });
  sync = new EntrySync(api, cache, rotator, {
    waitMs: 5_000,
    backoff: new Backoff(20, 40, () => 0.5),
    logger: quiet,
    svidIssuers: () => cache.svidIssuers(new Date()),
  });
});

describe('forced rotation on taint (agent cache)', () => {
  it('reports the authority of every SVID it holds, with the latest expiry', async () => {
    api.put(testEntry(id('/a')));
    api.put(testEntry(id('/b')));
    await syncAndSign();
    const issuers = cache.svidIssuers(new Date());
    expect([...issuers.keys()]).toEqual([rootId()]);
    expect(issuers.get(rootId())!.getTime()).toBeGreaterThan(Date.now() + 3500_000);
  });

  it('re-signs at once every X509-SVID the tainted authority issued, once per taint', async () => {
    api.put(testEntry(id('/a')));
    api.put(testEntry(id('/b')));
    await syncAndSign();
    const before = serials();
    // An hour of life: without the taint, nothing would rotate for half an hour.
    expect(cache.entriesToSign(new Date())).toEqual([]);

    api.taint('00ff');
    await syncAndSign();
    expect(taints).toEqual([{ x509Svids: 0, jwtSvids: 0 }]);
    expect(serials()).toEqual(before);

    api.taint('00ff', rootId());
    await syncAndSign();
    expect(taints.at(-1)).toEqual({ x509Svids: 2, jwtSvids: 0 });
    const after = serials();
    expect(after).toHaveLength(2);
    expect(after.some((serial) => before.includes(serial))).toBe(false);

    // The same tainted set again does nothing more (the new SVIDs come from the same fake CA here).
    await syncAndSign();
    expect(taints).toHaveLength(2);
    expect(serials()).toEqual(after);
  });

  it('spreads the forced rotations over the taint window (herd control)', async () => {
    api.put(testEntry(id('/a')));
    await syncAndSign();
    taintRandom = 0.999;
    const now = Date.now();
    api.taint(rootId());
    await sync.syncOnce();
    const next = cache.nextSigningTime()!.getTime();
    expect(next).toBeGreaterThan(now + TAINTED_ROTATION_WINDOW_MS * 0.9);
    expect(next).toBeLessThanOrEqual(Date.now() + TAINTED_ROTATION_WINDOW_MS);
    expect(cache.entriesToSign(new Date())).toEqual([]);
  });

  it('drops the cached JWT-SVIDs of a tainted kid, and still reports the one handed out until it expires', async () => {
    const entry = testEntry(id('/a'));
    api.put(entry);
    await syncAndSign();
    const [identity] = cache.identitiesFor(uid);
    const first = await cache.fetchJwtSvid(identity!, ['db'], caller);
    expect(await cache.fetchJwtSvid(identity!, ['db'], caller)).toBe(first);
    expect(api.jwtCalls).toBe(1);
    expect(cache.svidIssuers(new Date()).has(FAKE_JWT_KID)).toBe(true);

    api.taint(FAKE_JWT_KID);
    await sync.syncOnce();
    expect(taints.at(-1)).toEqual({ x509Svids: 0, jwtSvids: 1 });
    await cache.fetchJwtSvid(identity!, ['db'], caller);
    expect(api.jwtCalls).toBe(2);
    // Handed out and unexpired: still in use, whatever the cache holds.
    expect(cache.svidIssuers(new Date()).get(FAKE_JWT_KID)!.getTime()).toBeGreaterThan(Date.now());
    expect(cache.svidIssuers(new Date(Date.now() + 301_000)).has(FAKE_JWT_KID)).toBe(false);
  });

  it('sends its report with every sync, and restarts a waiting poll when the issuers change', async () => {
    let report = new Map([['aa', new Date(Date.now() + 60_000)]]);
    // Polls that would wait 25 s: only a restart brings the next one sooner.
    sync = new EntrySync(api, cache, rotator, {
      waitMs: 25_000,
      backoff: new Backoff(20, 40, () => 0.5),
      logger: quiet,
      svidIssuers: () => report,
    });
    sync.start();
    try {
      // The first sync never waits; the second one does (nothing changes).
      for (let i = 0; i < 500 && api.syncCalls < 2; i++) await new Promise((done) => setTimeout(done, 10));
      expect(api.syncQueries[1]!.svidIssuers).toEqual(report);
      // Same authorities, another expiry: not worth a restart.
      report = new Map([['aa', new Date(Date.now() + 90_000)]]);
      sync.reportChanged();
      await new Promise((done) => setTimeout(done, 1500));
      expect(api.syncCalls).toBe(2);

      report = new Map([['bb', new Date(Date.now() + 60_000)]]);
      sync.reportChanged();
      for (let i = 0; i < 800 && api.syncCalls < 3; i++) await new Promise((done) => setTimeout(done, 10));
      expect(api.syncCalls).toBe(3);
      expect([...api.syncQueries[2]!.svidIssuers!.keys()]).toEqual(['bb']);
    } finally {
      await sync.stop();
    }
  });
});
