/**
 * Test support: the agent's real Workload API server (gRPC on a real Unix socket, the real handler and security
 * header middleware) in front of a hand-written identity cache, so the client library is tested against the real
 * protocol. Not part of the library build.
 */
import { webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import { matchesAllSelectors, type Selector } from '@sigil/runtime';
import { SpiffeId, TrustBundle, TrustDomain, signJwtSvid } from '@sigil/spiffe';
import { TestCa, type TestSvid } from './test-ca.js';
import {
  type IdentityCache,
  type CallerAttestor,
  WorkloadApiHandler,
} from '../../apps/agent/src/endpoints/workload-api/workload-api.handler.js';
import { WorkloadApiServer } from '../../apps/agent/src/endpoints/workload-api/workload-api.server.js';
import {
  type AgentBundles,
  type WorkloadIdentity,
} from '../../apps/agent/src/endpoints/workload-api/workload-responses.js';
import { type SpiffeWorkloadAPI } from '../../libs/workload-api/src/gen/workload_pb.js';

const quiet = { debug: () => undefined, warn: () => undefined, log: () => undefined };
const SELECTOR = { type: 'test', value: 'caller' };
/** Key ID of the fake agent's JWT authority. */
export const JWT_KID = 'fake-jwt-authority';

/** An identity of the fake cache and the selectors a caller must have all of to get it. */
export interface FakeEntry {
  readonly selectors: readonly Selector[];
  readonly identity: WorkloadIdentity;
}

/**
 * An in-memory identity cache holding real certificates and a real JWT signing key: a caller gets the identities of
 * the entries whose selectors it has all of; `update()` tells the open streams.
 */
export class FakeIdentityCache implements IdentityCache {
  entries: FakeEntry[] = [];
  agentBundles: AgentBundles | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly jwtKey: webcrypto.CryptoKey) {}

  /** Every entry's identity; setting it gives each one to the fake agent's callers (selector `test:caller`). */
  get identities(): WorkloadIdentity[] {
    return this.entries.map((entry) => entry.identity);
  }
  set identities(identities: WorkloadIdentity[]) {
    this.entries = identities.map((identity) => ({ selectors: [SELECTOR], identity }));
  }

  bundles(): AgentBundles | undefined {
    return this.agentBundles;
  }
  identitiesFor(selectors: readonly Selector[]): readonly WorkloadIdentity[] {
    return this.entries.filter((entry) => matchesAllSelectors(entry.selectors, selectors)).map((e) => e.identity);
  }
  fetchJwtSvid(identity: WorkloadIdentity, audience: readonly string[]): Promise<string> {
    return signJwtSvid({
      spiffeId: identity.spiffeId,
      audience,
      expiresAt: new Date(Date.now() + 300_000),
      privateKey: this.jwtKey,
      kid: JWT_KID,
    });
  }
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  /** Applies `change` and notifies every open stream, as the agent's cache does after a rotation. */
  update(change: (cache: this) => void): void {
    change(this);
    for (const listener of this.listeners) listener();
  }
}

const attestor: CallerAttestor = { attest: async () => [SELECTOR] };

/** A running fake agent for one trust domain. */
export class FakeWorkloadApi {
  /** When set, every RPC fails with this code before reaching the handler (to provoke codes the agent never sends). */
  failWith: Code | undefined;
  /** The value of the security header on every call received, in order. */
  readonly securityHeaders: (string | null)[] = [];
  private server: WorkloadApiServer;

  private constructor(
    readonly dir: string,
    readonly socketPath: string,
    readonly ca: TestCa,
    readonly cache: FakeIdentityCache,
    readonly jwtKeys: webcrypto.CryptoKeyPair,
  ) {
    this.server = this.newServer();
  }

  /** Starts a fake agent of `trustDomain` whose workload has the identities at `paths` (an intermediate CA signs). */
  static async start(trustDomain = 'example.org', paths: readonly string[] = ['/workload']): Promise<FakeWorkloadApi> {
    const td = TrustDomain.parse(trustDomain);
    const ca = await (await TestCa.create(td)).createIntermediate();
    const jwtKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const cache = new FakeIdentityCache(jwtKeys.privateKey);
    const { x, y } = await webcrypto.subtle.exportKey('jwk', jwtKeys.publicKey);
    cache.agentBundles = {
      own: TrustBundle.create(td, {
        x509Authorities: [ca.root().certificate],
        jwtAuthorities: { [JWT_KID]: { kty: 'EC', crv: 'P-256', x, y } },
      }),
      federated: [],
    };
    const dir = await mkdtemp(join(tmpdir(), 'sigil-wlc-'));
    const api = new FakeWorkloadApi(dir, join(dir, 'api.sock'), ca, cache, jwtKeys);
    cache.identities = await Promise.all(paths.map((path) => api.identity(path)));
    await api.server.start();
    return api;
  }

  /** `unix://` address of the socket. */
  get address(): string {
    return `unix://${this.socketPath}`;
  }

  get trustDomain(): TrustDomain {
    return this.ca.trustDomain;
  }

  /** A workload identity at `path` with a fresh X.509-SVID signed by `issuer` (default: this agent's CA). */
  async identity(path: string, options: { issuer?: TestCa; hint?: string } = {}): Promise<WorkloadIdentity> {
    const spiffeId = SpiffeId.fromPath(this.trustDomain, path);
    const svid = await (options.issuer ?? this.ca).createX509Svid(spiffeId.toString());
    return this.identityFor(spiffeId, svid, options.hint ?? '');
  }

  /** Rotates the X.509-SVID of every identity (new key, new serial) and notifies the streams. */
  async rotate(): Promise<void> {
    const rotated = await Promise.all(this.cache.identities.map((identity) => this.identity(identity.spiffeId.path)));
    this.cache.update((cache) => (cache.identities = rotated));
  }

  /** Trusts `other`'s root as a federated bundle and sends it to the workload. */
  federateWith(other: TestCa): void {
    this.cache.update((cache) => {
      cache.agentBundles = { own: cache.agentBundles!.own, federated: [other.bundle()] };
      cache.identities = cache.identities.map((identity) => ({ ...identity, federatesWith: [other.trustDomain] }));
    });
  }

  async stop(): Promise<void> {
    await this.server.stop();
  }

  /** Starts a new server on the same socket (after `stop()`), as an agent restart does. */
  async restart(): Promise<void> {
    this.server = this.newServer();
    await this.server.start();
  }

  async dispose(): Promise<void> {
    await this.server.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  private identityFor(spiffeId: SpiffeId, svid: TestSvid, hint: string): Promise<WorkloadIdentity> {
    return svid.privateKeyPkcs8().then((privateKey) => ({
      entryId: `entry-${spiffeId.path}`,
      spiffeId,
      hint,
      federatesWith: [],
      x509Svid: { chain: svid.chainDer(), privateKey },
    }));
  }

  private newServer(): WorkloadApiServer {
    const handler = new WorkloadApiHandler(attestor, this.cache, { logger: quiet }).service();
    const check = (context: HandlerContext): void => {
      this.securityHeaders.push(context.requestHeader.get('workload.spiffe.io'));
      if (this.failWith !== undefined) throw new ConnectError('failure injected by the test', this.failWith);
    };
    const service: ServiceImpl<typeof SpiffeWorkloadAPI> = {
      fetchX509SVID: (request, context) => (check(context), handler.fetchX509SVID(request, context)),
      fetchX509Bundles: (request, context) => (check(context), handler.fetchX509Bundles(request, context)),
      fetchJWTSVID: (request, context) => (check(context), handler.fetchJWTSVID(request, context)),
      fetchJWTBundles: (request, context) => (check(context), handler.fetchJWTBundles(request, context)),
      validateJWTSVID: (request, context) => (check(context), handler.validateJWTSVID(request, context)),
    };
    return new WorkloadApiServer({ socketPath: this.socketPath, service, logger: quiet, drainTimeoutMs: 200 });
  }
}

/** Waits until `predicate` holds, polling every 10 ms, for at most `timeoutMs`. */
export async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export { Code };
