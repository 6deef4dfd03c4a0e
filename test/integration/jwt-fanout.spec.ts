/**
 * Issue 16 finding 5, a slice of bench/dos/jwt-fanout.bench.ts: a local user fans JWT-SVID requests out through the
 * agent's real Workload API socket, with ever-new large audiences. The agent's real handler, JWT-SVID cache and
 * signing lane run here; the server is the fake agent API (real tokens, counted). Asserts refusals and the cache's
 * byte bounds, not timings.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpiffeId } from '@sigil/spiffe';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type JwtSvidCaller } from '../../apps/agent/src/manager/jwt-signing-lane.js';
import { JwtSvidCache } from '../../apps/agent/src/manager/jwt-svid-cache.js';
import {
  type IdentityCache,
  WorkloadApiHandler,
  type CallerAttestor,
} from '../../apps/agent/src/endpoints/workload-api/workload-api.handler.js';
import { WorkloadApiServer } from '../../apps/agent/src/endpoints/workload-api/workload-api.server.js';
import {
  type AgentBundles,
  type WorkloadIdentity,
} from '../../apps/agent/src/endpoints/workload-api/workload-responses.js';
import { type Selector, matchesAllSelectors } from '@sigil/runtime';
import { UnixWorkloadAttestor } from '../../apps/agent/src/attestor/workload/unix/unix-attestor.js';
import { FakeAgentApi } from '../support/fake-agent-api.js';
import { NOBODY, isRoot, spawnRelayCaller } from '../support/relay-caller.js';
import { TestCa } from '../support/test-ca.js';

const quiet = { debug: () => undefined, warn: () => undefined, log: () => undefined };
const UID = process.geteuid?.() ?? 0;
const SHARE = 20_000;
const BURST = 5;

/** The agent's identity cache reduced to what FetchJWTSVID needs, over a real JwtSvidCache. */
class JwtOnlyCache implements IdentityCache {
  constructor(
    private readonly own: AgentBundles,
    private readonly entries: { selectors: Selector[]; identity: WorkloadIdentity }[],
    readonly jwt: JwtSvidCache,
  ) {}
  bundles = () => this.own;
  identitiesFor = (selectors: readonly Selector[]) =>
    this.entries.filter((entry) => matchesAllSelectors(entry.selectors, selectors)).map((entry) => entry.identity);
  fetchJwtSvid = (identity: WorkloadIdentity, audience: readonly string[], caller: JwtSvidCaller) =>
    this.jwt.fetch(identity.entryId, identity.spiffeId, audience, caller);
  jwtSvidMissRefusal = (audience: readonly string[], caller: JwtSvidCaller) => this.jwt.missRefusal(audience, caller);
  subscribe = () => () => undefined;
}

const identity = (entryId: string, path: string): WorkloadIdentity => ({
  entryId,
  spiffeId: SpiffeId.parse(`spiffe://example.org${path}`),
  hint: '',
  federatesWith: [],
  x509Svid: undefined,
});

let ca: TestCa;
let api: FakeAgentApi;
let dir: string;
let socketPath: string;
let server: WorkloadApiServer;
let cache: JwtOnlyCache;
let signed: number;
let attested: number;

beforeAll(async () => {
  ca = await TestCa.create('example.org');
  dir = await mkdtemp(join(tmpdir(), 'sigil-jwt-fanout-'));
  await chmod(dir, 0o755); // lets the caller running as nobody reach the socket
  socketPath = join(dir, 'public', 'api.sock');
});

beforeEach(async () => {
  api = await FakeAgentApi.create(ca);
  signed = 0;
  const web = identity('e-web', '/web');
  const nobody = identity('e-nobody', '/nobody');
  const jwt = new JwtSvidCache(
    async (entryId, audience) => {
      signed++;
      return api.jwtFor(entryId === web.entryId ? web.spiffeId : nobody.spiffeId, audience);
    },
    // A rate so low it never refills during the test: the burst is what a uid gets.
    { limits: { missBurst: BURST, missRatePerSecond: 0.001, cacheMaxBytesPerUid: SHARE, cacheMaxBytes: 4 * SHARE } },
  );
  cache = new JwtOnlyCache(
    { own: api.bundle, federated: [] },
    [
      { selectors: [{ type: 'unix', value: `uid:${UID}` }], identity: web },
      { selectors: [{ type: 'unix', value: `uid:${NOBODY}` }], identity: nobody },
    ],
    jwt,
  );
  const attestor = new UnixWorkloadAttestor({ logger: quiet });
  attested = 0;
  const counting: CallerAttestor = {
    attest: (caller) => {
      attested++;
      return attestor.attest(caller);
    },
  };
  const handler = new WorkloadApiHandler(counting, cache, { logger: quiet });
  // Refusals answered at once: these calls come one after the other, and the hold has its own spec (server spec).
  server = new WorkloadApiServer({
    socketPath,
    service: handler.service(),
    logger: quiet,
    limits: { refusalHoldMs: 0 },
  });
  await server.start();
});

afterEach(async () => {
  await server.stop();
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `count` FetchJWTSVID calls, one after the other, each for a new audience of 1,000 bytes (a miss costs 1). */
async function fanOut(caller: Awaited<ReturnType<typeof spawnRelayCaller>>, count: number, tag: string) {
  const answers = [];
  for (let i = 0; i < count; i++) answers.push(await caller.fetchJwtSvids([`${tag}-${i}-`.padEnd(1000, 'x')]));
  return answers;
}

describe('JWT-SVID fan-out through the Workload API socket', () => {
  it('refuses a caller past its misses with RESOURCE_EXHAUSTED, keeps serving its cached tokens, and bounds its cache', async () => {
    const caller = await spawnRelayCaller(socketPath);
    try {
      expect(await caller.fetchJwtSvids(Array.from({ length: 17 }, (_, i) => `a${i}`))).toEqual({
        grpcStatus: 3,
        message: 'audience: at most 16 audiences per request, got 17',
      });
      const answers = await fanOut(caller, 30, 'same');
      expect(answers.slice(0, BURST).every((answer) => 'tokens' in answer)).toBe(true);
      const refused = answers.slice(BURST);
      expect(refused).toHaveLength(30 - BURST);
      for (const answer of refused) {
        expect(answer).toEqual({
          grpcStatus: 8,
          message: expect.stringContaining(`uid ${UID}: over its rate of JWT-SVIDs not in the agent's cache`),
        });
      }
      expect(signed).toBe(BURST);
      expect(cache.jwt.bytesOf(UID)).toBeLessThanOrEqual(SHARE);
      // The last token signed is still cached: asked again, it costs the server nothing.
      expect(await caller.fetchJwtSvids([`same-${BURST - 1}-`.padEnd(1000, 'x')])).toMatchObject({
        tokens: [expect.any(String)],
      });
      expect(signed).toBe(BURST);
    } finally {
      await caller.close();
    }
  });

  it('refuses misses past the limits before attesting the caller, but attests and serves audiences with a token', async () => {
    const caller = await spawnRelayCaller(socketPath);
    try {
      await fanOut(caller, BURST, 'early');
      expect(attested).toBe(BURST);
      const refused = await fanOut(caller, 20, 'late');
      expect(refused.every((answer) => 'grpcStatus' in answer && answer.grpcStatus === 8)).toBe(true);
      expect(attested).toBe(BURST);
      // A cached token's audiences may be a hit: that request is attested and served as before.
      expect(await caller.fetchJwtSvids([`early-${BURST - 1}-`.padEnd(1000, 'x')])).toMatchObject({
        tokens: [expect.any(String)],
      });
      expect(attested).toBe(BURST + 1);
      expect(signed).toBe(BURST);
    } finally {
      await caller.close();
    }
  });

  it.skipIf(!isRoot)(
    "leaves another uid's misses and cached tokens alone while nobody fans out (root only: runs it as nobody)",
    async () => {
      const workload = await spawnRelayCaller(socketPath);
      const attacker = await spawnRelayCaller(socketPath, { asNobody: true });
      try {
        const first = await workload.fetchJwtSvids(['db']);
        expect(first).toMatchObject({ tokens: [expect.any(String)] });
        const attack = await fanOut(attacker, 40, 'nobody');
        expect(attack.filter((answer) => 'tokens' in answer)).toHaveLength(BURST);
        expect(attack.filter((answer) => 'grpcStatus' in answer && answer.grpcStatus === 8)).toHaveLength(40 - BURST);
        expect(cache.jwt.bytesOf(NOBODY)).toBeLessThanOrEqual(SHARE);
        // The workload's token survived the attack in the cache, and its own misses still go to the server.
        expect(await workload.fetchJwtSvids(['db'])).toEqual(first);
        expect(await workload.fetchJwtSvids(['cache'])).toMatchObject({ tokens: [expect.any(String)] });
        expect(signed).toBe(1 + BURST + 1);
      } finally {
        await attacker.close();
        await workload.close();
      }
    },
  );
});
