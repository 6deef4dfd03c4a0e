import { webcrypto } from 'node:crypto';
import { Code, ConnectError, createContextValues, createHandlerContext } from '@connectrpc/connect';
import { SpiffeId, TrustBundle, TrustDomain, signJwtSvid } from '@sigil/spiffe';
import { type JWTSVIDRequest, SpiffeWorkloadAPI, type ValidateJWTSVIDRequest } from '@sigil/workload-api';
import { LOG_INTERVAL_MS, LOG_LINES_PER_INTERVAL, LOG_TEXT_MAX_LENGTH } from '@sigil/logging';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { settledState } from '../../../../../test/support/settled.js';
import { TestCa } from '../../../../../test/support/test-ca.js';
import { matchesAllSelectors, type Selector } from '@sigil/runtime';
import { AgentApiError } from '../../client/server-client.js';
import { JwtSvidLimitError } from '../../manager/jwt-signing-lane.js';
import { PEER_CREDENTIALS } from '../peer-credentials.js';
import { type IdentityCache, WorkloadApiHandler, type CallerAttestor } from './workload-api.handler.js';
import { type AgentBundles, type CachedX509Svid, type WorkloadIdentity } from './workload-responses.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const CALLER = { pid: 4242, uid: 1000, gid: 1000, startTime: 1n };
const UID_1000: Selector = { type: 'unix', value: 'uid:1000' };
const example = TrustDomain.parse('example.org');
const other = TrustDomain.parse('other.org');

class FakeAttestor implements CallerAttestor {
  calls = 0;
  failure: Error | undefined;
  async attest(): Promise<readonly Selector[]> {
    this.calls++;
    if (this.failure !== undefined) throw this.failure;
    return [UID_1000];
  }
}

class FakeCache implements IdentityCache {
  entries: { selectors: Selector[]; identity: WorkloadIdentity }[] = [];
  jwtFailure: Error | undefined;
  private readonly listeners = new Set<() => void>();
  constructor(public agentBundles: AgentBundles | undefined) {}
  bundles = () => this.agentBundles;
  identitiesFor = (selectors: readonly Selector[]) =>
    this.entries.filter((e) => matchesAllSelectors(e.selectors, selectors)).map((e) => e.identity);
  fetchJwtSvid = async (identity: WorkloadIdentity) => {
    if (this.jwtFailure !== undefined) throw this.jwtFailure;
    return `token-of-${identity.entryId}`;
  };
  subscribe = (listener: () => void) => (this.listeners.add(listener), () => void this.listeners.delete(listener));
  changed(): void {
    for (const listener of this.listeners) listener();
  }
}

function context(method: string, withCredentials = true) {
  return createHandlerContext({
    service: SpiffeWorkloadAPI,
    method: SpiffeWorkloadAPI.methods.find((m) => m.name === method)!,
    protocolName: 'grpc',
    requestMethod: 'POST',
    url: `/SpiffeWorkloadAPI/${method}`,
    contextValues: createContextValues().set(PEER_CREDENTIALS, withCredentials ? CALLER : undefined),
  });
}

describe('WorkloadApiHandler', () => {
  let svid: CachedX509Svid;
  let keys: { example: webcrypto.CryptoKeyPair; other: webcrypto.CryptoKeyPair };
  let bundles: AgentBundles;
  let attestor: FakeAttestor;
  let cache: FakeCache;
  let warnings: unknown[];
  let handler: WorkloadApiHandler;

  const identity = (path: string, extra: Partial<WorkloadIdentity> = {}): WorkloadIdentity => ({
    entryId: path.slice(1),
    spiffeId: SpiffeId.fromPath(example, path),
    hint: '',
    federatesWith: [],
    x509Svid: svid,
    ...extra,
  });

  const sign = (td: TrustDomain, key: webcrypto.CryptoKey, expiresAt = new Date(NOW.getTime() + 60_000)) =>
    signJwtSvid({
      spiffeId: SpiffeId.fromPath(td, '/peer'),
      audience: ['me'],
      expiresAt,
      issuedAt: new Date(expiresAt.getTime() - 60_000),
      privateKey: key,
      kid: td.name,
    });

  const jwtAuthority = async (td: TrustDomain, pair: webcrypto.CryptoKeyPair) => {
    const { x, y } = await webcrypto.subtle.exportKey('jwk', pair.publicKey);
    return TrustBundle.create(td, { jwtAuthorities: { [td.name]: { kty: 'EC', crv: 'P-256', x, y } } });
  };

  beforeAll(async () => {
    const ca = await TestCa.create(example);
    const leaf = await ca.createX509Svid('spiffe://example.org/web');
    svid = { chain: leaf.chainDer(), privateKey: await leaf.privateKeyPkcs8() };
    const generate = () =>
      webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
        'sign',
        'verify',
      ]) as Promise<webcrypto.CryptoKeyPair>;
    keys = { example: await generate(), other: await generate() };
    bundles = {
      own: (await jwtAuthority(example, keys.example)).withX509Authorities([ca.certificate]),
      federated: [await jwtAuthority(other, keys.other)],
    };
  });

  beforeEach(() => {
    attestor = new FakeAttestor();
    cache = new FakeCache(bundles);
    cache.entries = [{ selectors: [UID_1000], identity: identity('/web') }];
    warnings = [];
    handler = new WorkloadApiHandler(attestor, cache, {
      now: () => NOW,
      logger: { debug: () => undefined, warn: (message: unknown) => void warnings.push(message) },
    });
  });

  it('holds back the first X.509 response until every matching SVID is signed', async () => {
    cache.entries = [{ selectors: [UID_1000], identity: identity('/web', { x509Svid: undefined }) }];
    const stream = handler.fetchX509Svid(context('FetchX509SVID'));
    const first = stream.next();
    expect(await settledState(first)).toBe('pending');
    cache.entries = [{ selectors: [UID_1000], identity: identity('/web') }];
    cache.changed();
    const response = (await first).value!;
    expect((response.svids ?? []).map((s: { spiffeId?: string }) => s.spiffeId)).toEqual(['spiffe://example.org/web']);
    await stream.return(undefined);
  });

  it('attests once per stream and re-matches the kept selectors on every change', async () => {
    const stream = handler.fetchX509Svid(context('FetchX509SVID'));
    expect((await stream.next()).value!.svids).toHaveLength(1);
    cache.entries.push({ selectors: [UID_1000], identity: identity('/db') });
    cache.changed();
    expect((await stream.next()).value!.svids).toHaveLength(2);
    expect(attestor.calls).toBe(1);
    await stream.return(undefined);
  });

  it("sends nothing after a change that leaves the caller's state as it was", async () => {
    const stream = handler.fetchX509Bundles(context('FetchX509Bundles'));
    await stream.next();
    cache.entries.push({ selectors: [{ type: 'unix', value: 'uid:2000' }], identity: identity('/other') });
    cache.changed();
    const next = stream.next();
    expect(await settledState(next)).toBe('pending');
    cache.entries[0] = { selectors: [UID_1000], identity: identity('/web', { federatesWith: [other] }) };
    cache.changed();
    expect(Object.keys((await next).value!.bundles)).toEqual(['spiffe://example.org', 'spiffe://other.org']);
    await stream.return(undefined);
  });

  it('sends nothing for the same state made of new objects, then the next change that is one', async () => {
    const stream = handler.fetchX509Svid(context('FetchX509SVID'));
    const first = (await stream.next()).value!;
    // New identity and bundle objects with the same content (as after an entry's TTL changed, before re-signing).
    cache.entries = [{ selectors: [UID_1000], identity: identity('/web') }];
    cache.agentBundles = { ...bundles, own: bundles.own.withX509Authorities(bundles.own.x509Authorities) };
    cache.changed();
    const next = stream.next();
    expect(await settledState(next)).toBe('pending');
    const rotated = { chain: [...svid.chain], privateKey: new Uint8Array(svid.privateKey.length).fill(7) };
    cache.entries = [{ selectors: [UID_1000], identity: identity('/web', { x509Svid: rotated }) }];
    cache.changed();
    const second = (await next).value!;
    expect(second.svids).toHaveLength(1);
    expect(second.svids[0]!.x509SvidKey).toEqual(rotated.privateKey);
    expect(second.svids[0]!.x509SvidKey).not.toEqual(first.svids[0]!.x509SvidKey);
    await stream.return(undefined);
  });

  it('ends a stream with the reason it was aborted with', async () => {
    const ctx = context('FetchJWTBundles');
    const stream = handler.fetchJwtBundles(ctx);
    await stream.next();
    ctx.abort(new ConnectError('the agent is shutting down', Code.Unavailable));
    await expect(stream.next()).rejects.toThrow('the agent is shutting down');
  });

  it('keeps the first of several identities with the same hint and says which entry it dropped', async () => {
    cache.entries = [
      { selectors: [UID_1000], identity: identity('/a', { hint: 'internal' }) },
      { selectors: [UID_1000], identity: identity('/b', { hint: 'internal' }) },
      { selectors: [UID_1000], identity: identity('/c', { hint: 'external' }) },
    ];
    const jwt = await handler.fetchJwtSvid(
      { audience: ['x'], spiffeId: '' } as JWTSVIDRequest,
      context('FetchJWTSVID'),
    );
    expect(jwt.svids?.map((s) => s.spiffeId)).toEqual(['spiffe://example.org/a', 'spiffe://example.org/c']);
    expect(warnings).toEqual([
      { msg: 'entry ignored: another entry of the workload has the same hint', entryId: 'b', hint: 'internal' },
    ]);
  });

  it('logs failed attestations of one uid a few times per interval, then how many it dropped', async () => {
    let now = NOW.getTime();
    const logged: Record<string, unknown>[] = [];
    const quiet = new WorkloadApiHandler(attestor, cache, {
      now: () => new Date(now),
      logger: { debug: () => undefined, warn: (message: unknown) => void logged.push(message as never) },
    });
    attestor.failure = new Error(`process 4242 exited ${'x'.repeat(10_000)}`);
    const fetch = () =>
      quiet.fetchJwtSvid({ audience: ['x'], spiffeId: '' } as JWTSVIDRequest, context('FetchJWTSVID'));
    for (let i = 0; i < 1_000; i += 1) await expect(fetch()).rejects.toMatchObject({ code: Code.Unavailable });
    expect(logged).toHaveLength(LOG_LINES_PER_INTERVAL);
    expect(logged[0]).toMatchObject({
      msg: 'workload attestation failed',
      method: 'FetchJWTSVID',
      pid: 4242,
      uid: 1000,
    });
    expect((logged[0]?.['reason'] as string).length).toBeLessThanOrEqual(LOG_TEXT_MAX_LENGTH);

    now += LOG_INTERVAL_MS;
    await expect(fetch()).rejects.toMatchObject({ code: Code.Unavailable });
    expect(logged.at(-2)).toMatchObject({ dropped: 1_000 - LOG_LINES_PER_INTERVAL });
    expect(logged).toHaveLength(LOG_LINES_PER_INTERVAL + 2);
  });

  it.each([
    ['attestation fails', 'FetchX509SVID', Code.Unavailable, 'workload attestation failed: process 4242 exited'],
    ['peer credentials are missing', 'FetchJWTBundles', Code.Internal, 'caller peer credentials are unavailable'],
  ])('answers a stream whose %s', async (_case, method, code, message) => {
    attestor.failure = new Error('process 4242 exited');
    const ctx = context(method, method !== 'FetchJWTBundles');
    const stream = method === 'FetchX509SVID' ? handler.fetchX509Svid(ctx) : handler.fetchJwtBundles(ctx);
    const error = await stream.next().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code, rawMessage: expect.stringContaining(message) });
  });

  it('answers UNAVAILABLE when the cache cannot get a JWT-SVID signed', async () => {
    cache.jwtFailure = new Error('server unreachable');
    await expect(
      handler.fetchJwtSvid({ audience: ['x'], spiffeId: '' } as JWTSVIDRequest, context('FetchJWTSVID')),
    ).rejects.toMatchObject({
      code: Code.Unavailable,
      rawMessage: 'could not fetch a JWT-SVID for spiffe://example.org/web: server unreachable',
    });
  });

  it('answers RESOURCE_EXHAUSTED naming the limit when the caller is over its JWT-SVID limits, logged per uid', async () => {
    cache.jwtFailure = new JwtSvidLimitError(1000, 'rate', 'uid 1000: over its rate of JWT-SVIDs');
    const fetch = () =>
      handler.fetchJwtSvid({ audience: ['x'], spiffeId: '' } as JWTSVIDRequest, context('FetchJWTSVID'));
    for (let i = 0; i < 100; i++) {
      await expect(fetch()).rejects.toMatchObject({
        code: Code.ResourceExhausted,
        rawMessage: 'uid 1000: over its rate of JWT-SVIDs',
      });
    }
    expect(warnings).toHaveLength(LOG_LINES_PER_INTERVAL);
    expect(warnings[0]).toMatchObject({ msg: 'refusing JWT-SVID requests over the caller limits', uid: 1000 });
    cache.jwtFailure = new AgentApiError(429, 'resource_exhausted', 'agent x: over its signing rate limit');
    await expect(fetch()).rejects.toMatchObject({
      code: Code.ResourceExhausted,
      rawMessage: expect.stringContaining('the server is rate limiting this agent'),
    });
  });

  it.each([
    [[], 'audience must be specified'],
    [Array.from({ length: 17 }, (_, i) => `a${i}`), 'audience: at most 16 audiences per request, got 17'],
    [['ok', ''], 'audience[1]: must not be empty or blank'],
    [['x'.repeat(2049)], 'audience[0]: at most 2048 bytes per audience, got 2049'],
  ])('refuses FetchJWTSVID audiences %# with INVALID_ARGUMENT naming the limit', async (audience, message) => {
    await expect(
      handler.fetchJwtSvid({ audience, spiffeId: '' } as JWTSVIDRequest, context('FetchJWTSVID')),
    ).rejects.toMatchObject({ code: Code.InvalidArgument, rawMessage: message });
    expect(attestor.calls).toBe(0);
  });

  it('takes 16 audiences of 2048 bytes', async () => {
    const audience = Array.from({ length: 16 }, (_, i) => `${i}`.padEnd(2048, 'x'));
    const jwt = await handler.fetchJwtSvid({ audience, spiffeId: '' } as JWTSVIDRequest, context('FetchJWTSVID'));
    expect(jwt.svids).toHaveLength(1);
  });

  it('refuses a ValidateJWTSVID audience over 2048 bytes with INVALID_ARGUMENT', async () => {
    await expect(
      handler.validateJwtSvid(
        { audience: 'é'.repeat(1025), svid: 'a.b.c' } as ValidateJWTSVIDRequest,
        context('ValidateJWTSVID'),
      ),
    ).rejects.toMatchObject({
      code: Code.InvalidArgument,
      rawMessage: 'audience: at most 2048 bytes per audience, got 2050',
    });
  });

  describe('ValidateJWTSVID', () => {
    const validate = (svid: string) =>
      handler.validateJwtSvid({ audience: 'me', svid } as ValidateJWTSVIDRequest, context('ValidateJWTSVID'));

    it('validates with the agent clock and returns the claims with aud as a list', async () => {
      const response = await validate(await sign(example, keys.example.privateKey));
      expect(response).toEqual({
        spiffeId: 'spiffe://example.org/peer',
        claims: {
          sub: 'spiffe://example.org/peer',
          aud: ['me'],
          exp: NOW.getTime() / 1000 + 60,
          iat: NOW.getTime() / 1000,
        },
      });
    });

    it('refuses an expired token with INVALID_ARGUMENT naming the reason', async () => {
      const token = await sign(example, keys.example.privateKey, new Date(NOW.getTime() - 1000));
      await expect(validate(token)).rejects.toMatchObject({
        code: Code.InvalidArgument,
        rawMessage: expect.stringMatching(/expired/),
      });
    });

    it("trusts a federated trust domain's keys only when the caller's entries federate with it", async () => {
      const token = await sign(other, keys.other.privateKey);
      await expect(validate(token)).rejects.toMatchObject({ code: Code.InvalidArgument });
      cache.entries = [{ selectors: [UID_1000], identity: identity('/web', { federatesWith: [other] }) }];
      expect((await validate(token)).spiffeId).toBe('spiffe://other.org/peer');
    });
  });
});
