import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, createContextValues, createHandlerContext } from '@connectrpc/connect';
import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { matchesAllSelectors, type Selector } from '@sigil/runtime';
import {
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  SECRET_TYPE_URL,
  SecretDiscoveryService,
} from '@sigil/workload-api/envoy-sds';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TestCa } from '../../../../../test/support/test-ca.js';
import { PEER_CREDENTIALS } from '../peer-credentials.js';
import { type CallerAttestor } from '../workload-api/caller-attestation.js';
import { type IdentityCache } from '../workload-api/workload-api.handler.js';
import { type AgentBundles, type CachedX509Svid, type WorkloadIdentity } from '../workload-api/workload-responses.js';
import { SDS_DEFAULTS } from './sds-secrets.js';
import { MAX_ONE_OFF_PINS, MAX_QUEUED_REQUESTS, MAX_RESOURCE_NAMES, SdsHandler } from './sds.handler.js';

const CALLER = { pid: 4242, uid: 1000, gid: 1000, startTime: 1n };
const UID_1000: Selector = { type: 'unix', value: 'uid:1000' };

class FakeAttestor implements CallerAttestor {
  calls = 0;
  failure: Error | undefined;
  selectors: readonly Selector[] = [UID_1000];
  async attest(): Promise<readonly Selector[]> {
    this.calls++;
    if (this.failure !== undefined) throw this.failure;
    return this.selectors;
  }
}

class FakeCache implements IdentityCache {
  entries: { selectors: Selector[]; identity: WorkloadIdentity }[] = [];
  private readonly listeners = new Set<() => void>();
  constructor(public agentBundles: AgentBundles | undefined) {}
  bundles = () => this.agentBundles;
  identitiesFor = (selectors: readonly Selector[]) =>
    this.entries.filter((e) => matchesAllSelectors(e.selectors, selectors)).map((e) => e.identity);
  fetchJwtSvid = async () => 'unused';
  subscribe = (listener: () => void) => (this.listeners.add(listener), () => void this.listeners.delete(listener));
  changed(): void {
    for (const listener of this.listeners) listener();
  }
}

/** Requests the test writes one by one into a bidi stream. */
class Requests implements AsyncIterable<DiscoveryRequest> {
  private readonly queue: DiscoveryRequest[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  /** How many requests the handler has taken from the stream. */
  taken = 0;
  send(init: Parameters<typeof create<typeof DiscoveryRequestSchema>>[1]): void {
    this.queue.push(create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, ...init }));
    this.wake?.();
  }
  end(): void {
    this.ended = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<DiscoveryRequest> {
    for (;;) {
      const next = this.queue.shift();
      if (next !== undefined) {
        this.taken++;
        yield next;
      } else if (this.ended) return;
      else await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

function context(method: string, abort = new AbortController()) {
  return createHandlerContext({
    service: SecretDiscoveryService,
    method: SecretDiscoveryService.methods.find((m) => m.name === method)!,
    protocolName: 'grpc',
    requestMethod: 'POST',
    url: `/envoy.service.secret.v3.SecretDiscoveryService/${method}`,
    requestSignal: abort.signal,
    contextValues: createContextValues().set(PEER_CREDENTIALS, CALLER),
  });
}

/** Resolves with the next value of `iterator`, or 'pending' when none came once the event loop turned a few times. */
async function nextOrPending<T>(pending: Promise<IteratorResult<T>>): Promise<IteratorResult<T> | 'pending'> {
  let result: IteratorResult<T> | 'pending' = 'pending';
  void pending.then((value) => (result = value)).catch(() => undefined);
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  return result;
}

describe('SdsHandler', () => {
  let svids: CachedX509Svid[];
  let bundles: AgentBundles;
  let attestor: FakeAttestor;
  let cache: FakeCache;
  let warnings: unknown[];
  let handler: SdsHandler;

  const identity = (svid: CachedX509Svid | undefined): WorkloadIdentity => ({
    entryId: 'e1',
    spiffeId: SpiffeId.parse('spiffe://example.org/web'),
    hint: '',
    federatesWith: [],
    x509Svid: svid,
  });

  beforeAll(async () => {
    const ca = await TestCa.create('example.org');
    svids = [];
    for (let i = 0; i < 2; i++) {
      const svid = await ca.createX509Svid('spiffe://example.org/web');
      svids.push({ chain: [new Uint8Array(svid.certificate.rawData)], privateKey: await svid.privateKeyPkcs8() });
    }
    bundles = {
      own: TrustBundle.create(TrustDomain.parse('example.org'), { x509Authorities: [ca.certificate] }),
      federated: [],
    };
  });

  beforeEach(() => {
    attestor = new FakeAttestor();
    cache = new FakeCache(bundles);
    cache.entries = [{ selectors: [UID_1000], identity: identity(svids[0]) }];
    warnings = [];
    handler = new SdsHandler(attestor, cache, SDS_DEFAULTS, {
      logger: { debug: () => undefined, warn: (fields: unknown) => void warnings.push(fields) },
    });
  });

  it('pushes a new version only when the caller’s secrets change, not on every change of the cache', async () => {
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['default'] });
    const first = (await stream.next()).value!;
    expect(first.versionInfo).toBe('1');
    requests.send({ resourceNames: ['default'], versionInfo: '1', responseNonce: first.nonce as string });
    // Another workload's entry changed: same secrets for this caller, nothing sent.
    cache.changed();
    const pending = stream.next();
    expect(await nextOrPending(pending)).toBe('pending');
    // Rotation: a new certificate, version 2.
    cache.entries = [{ selectors: [UID_1000], identity: identity(svids[1]) }];
    cache.changed();
    const second = await pending;
    expect(second.value!.versionInfo).toBe('2');
    expect(second.value!.nonce).not.toBe(first.nonce);
    expect(attestor.calls).toBe(1);
    requests.end();
    expect((await stream.next()).done).toBe(true);
  });

  it('stops reading requests while answers are not read, so a client cannot make it buffer requests', async () => {
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['default'] });
    const first = (await stream.next()).value!;
    // Each request names other resources, so each needs an answer; the test reads none of them.
    for (let i = 0; i < 1000; i++) {
      const names = i % 2 === 0 ? ['default', 'ROOTCA'] : ['default'];
      requests.send({ resourceNames: names, versionInfo: '1', responseNonce: first.nonce as string });
    }
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(requests.taken).toBeLessThanOrEqual(MAX_QUEUED_REQUESTS + 2);
    void stream.return(undefined);
  });

  it('ends the stream with UNAVAILABLE once the caller’s SVID expired unrenewed, and refuses a fetch likewise', async () => {
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['default'] });
    const first = (await stream.next()).value!;
    requests.send({ resourceNames: ['default'], versionInfo: '1', responseNonce: first.nonce as string });
    const expired: WorkloadIdentity = {
      ...identity(undefined),
      expired: { notAfter: new Date('2026-01-01T00:00:00Z'), reason: 'cannot connect to the server' },
    };
    cache.entries = [{ selectors: [UID_1000], identity: expired }];
    cache.changed();
    const ended = await stream.next().catch((error: unknown) => error);
    expect(ended).toBeInstanceOf(ConnectError);
    expect((ended as ConnectError).code).toBe(Code.Unavailable);
    expect((ended as ConnectError).rawMessage).toMatch(/expired at 2026-01-01T00:00:00.000Z .*cannot connect/);
    const fetched = await handler
      .fetchSecrets(
        create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, resourceNames: ['default'] }),
        context('FetchSecrets'),
      )
      .catch((error: unknown) => error);
    expect((fetched as ConnectError).code).toBe(Code.Unavailable);
  });

  it('waits for an SVID still being signed before the first answer', async () => {
    cache.entries = [{ selectors: [UID_1000], identity: identity(undefined) }];
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['default'] });
    const pending = stream.next();
    expect(await nextOrPending(pending)).toBe('pending');
    cache.entries = [{ selectors: [UID_1000], identity: identity(svids[0]) }];
    cache.changed();
    expect((await pending).value!.versionInfo).toBe('1');
    requests.end();
  });

  it('logs each NACK with Envoy’s reason and sends nothing for it', async () => {
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['default'] });
    const first = (await stream.next()).value!;
    for (let i = 0; i < 3; i++) {
      requests.send({
        resourceNames: ['default'],
        versionInfo: '0',
        responseNonce: first.nonce as string,
        errorDetail: { code: 3, message: 'bad key' },
      });
    }
    expect(await nextOrPending(stream.next())).toBe('pending');
    // Rate limited per uid by RateLimitedLog (a few lines per interval, then a count), like every caller-made line.
    expect(warnings).toHaveLength(3);
    for (const warning of warnings) {
      expect(warning).toMatchObject({ msg: 'Envoy rejected the secrets it was sent', reason: 'bad key', uid: 1000 });
    }
    requests.end();
  });

  it('ends the stream with INVALID_ARGUMENT for an identity the caller does not have', async () => {
    const requests = new Requests();
    const stream = handler.streamSecrets(requests, context('StreamSecrets'));
    requests.send({ resourceNames: ['spiffe://example.org/db'] });
    await expect(stream.next()).rejects.toMatchObject({
      code: Code.InvalidArgument,
      rawMessage: 'workload is not authorized for the requested identities ["spiffe://example.org/db"]',
    });
  });

  it("keeps a one-off caller's entries pinned for lazy signing a while, not just during the call", async () => {
    const events: string[] = [];
    const watching = Object.assign(cache, {
      watch: (selectors: readonly Selector[]) => {
        events.push(`watch ${selectors.map((selector) => selector.value).join(',')}`);
        return () => events.push('release');
      },
    });
    const pinned = new SdsHandler(attestor, watching, SDS_DEFAULTS, {
      logger: { debug: () => undefined, warn: () => undefined },
      oneOffPinMs: 50,
    });
    cache.entries = [{ selectors: [UID_1000], identity: identity(undefined) }];
    const answer = await pinned
      .fetchSecrets(create(DiscoveryRequestSchema), context('FetchSecrets'))
      .catch((error: unknown) => error);
    expect((answer as ConnectError).rawMessage).toBe("the caller's X509-SVIDs are still being signed; retry");
    expect(events).toEqual(['watch uid:1000']);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(events).toEqual(['watch uid:1000', 'release']);
  });

  it('holds one one-off pin per selector set, re-armed by each call, and at most MAX_ONE_OFF_PINS of them', async () => {
    const events: string[] = [];
    const watching = Object.assign(cache, {
      watch: (selectors: readonly Selector[]) => {
        const name = selectors.map((selector) => selector.value).join(',');
        events.push(`watch ${name}`);
        return () => events.push(`release ${name}`);
      },
    });
    const pinned = new SdsHandler(attestor, watching, SDS_DEFAULTS, {
      logger: { debug: () => undefined, warn: () => undefined },
      oneOffPinMs: 60_000,
    });
    const fetch = () =>
      pinned.fetchSecrets(create(DiscoveryRequestSchema), context('FetchSecrets')).catch(() => undefined);
    await fetch();
    await fetch();
    expect(events).toEqual(['watch uid:1000']);
    for (let i = 0; i < MAX_ONE_OFF_PINS; i++) {
      attestor.selectors = [{ type: 'unix', value: `uid:${2000 + i}` }];
      await fetch();
    }
    // The 257th selector set released the oldest (uid:1000) early; nothing else was released.
    expect(events.filter((event) => event.startsWith('release'))).toEqual(['release uid:1000']);
    expect(events.filter((event) => event.startsWith('watch'))).toHaveLength(MAX_ONE_OFF_PINS + 1);
  });

  it('answers UNAVAILABLE when the caller cannot be attested or the agent has no bundle yet', async () => {
    attestor.failure = new Error('pid 4242 exited');
    await expect(handler.fetchSecrets(create(DiscoveryRequestSchema), context('FetchSecrets'))).rejects.toMatchObject({
      code: Code.Unavailable,
      rawMessage: 'workload attestation failed: pid 4242 exited',
    });
    cache.agentBundles = undefined;
    await expect(handler.fetchSecrets(create(DiscoveryRequestSchema), context('FetchSecrets'))).rejects.toMatchObject({
      code: Code.Unavailable,
    });
  });

  it.each([
    [{ typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' }, /^type_url: must be /],
    [{ resourceNames: Array.from({ length: MAX_RESOURCE_NAMES + 1 }, (_, i) => `n${i}`) }, /^resource_names: at most /],
    [{ resourceNames: ['x'.repeat(2049)] }, /^resource_names: each name must be at most 2048 bytes, got 2049$/],
  ])('refuses %# before attesting', async (init, message) => {
    await expect(handler.fetchSecrets(create(DiscoveryRequestSchema, init), context('FetchSecrets'))).rejects.toSatisfy(
      (error: unknown) =>
        error instanceof ConnectError && error.code === Code.InvalidArgument && message.test(error.rawMessage),
    );
    expect(attestor.calls).toBe(0);
  });

  it('answers DeltaSecrets with UNIMPLEMENTED, as SPIRE', async () => {
    const delta = handler.service().deltaSecrets as unknown as () => AsyncGenerator;
    await expect(delta().next()).rejects.toMatchObject({ code: Code.Unimplemented });
  });
});
