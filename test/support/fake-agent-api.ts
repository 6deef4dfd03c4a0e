/**
 * Test helper: an in-memory stand-in for a sigil-server's agent API, as the agent's SVID cache, rotator and sync
 * loop see it (the `AgentApi` seam). It holds entries with revisions, answers long polls as soon as something
 * changes, and signs real X509-SVIDs (with a TestCa) and JWT-SVIDs from the CSRs it receives. Tests switch it
 * `down` to play an unreachable server, or refuse given entries or the agent itself.
 */
import { webcrypto } from 'node:crypto';
import { importPublicKeySpki, parseCsrFast } from '@sigil/pki';
import { type SpiffeId, TrustBundle, signJwtSvid } from '@sigil/spiffe';
import {
  type AgentEntry,
  type AgentSvidResponse,
  type JwtSvidResponse,
  type SyncQuery,
  type SyncResponse,
  type X509SignResult,
} from '@sigil/agent-api';
import { type AgentApi } from '../../apps/agent/src/client/agent-api.js';
import { AgentApiError } from '../../apps/agent/src/client/server-client.js';
import { ServerUnavailableError } from '../../apps/agent/src/client/tls-transport.js';
import { type TestCa, generateTestKeys } from './test-ca.js';

export const FAKE_JWT_KID = 'fake-jwt-1';

interface Change {
  readonly revision: number;
  readonly id: string;
  readonly deleted: boolean;
}

export class FakeAgentApi implements AgentApi {
  readonly entries = new Map<string, AgentEntry>();
  /** Sizes of the CSR batches received. */
  readonly batches: number[] = [];
  /** Every CSR received, as PEM. */
  readonly csrs: string[] = [];
  /** Entry ids whose CSRs are refused with `permission_denied`. */
  readonly refused = new Set<string>();
  /** When true, every call fails as an unreachable server. */
  down = false;
  /** When set, every call fails with this error (e.g. a 403 for an evicted agent). */
  agentError: AgentApiError | undefined;
  /** Misbehaves when set: certifies a key of its own instead of the CSR's, or names another SPIFFE ID. */
  tamper: 'key' | 'id' | undefined;
  /** Lifetime of the X509-SVIDs it signs, in seconds. */
  x509TtlSeconds = 3600;
  jwtTtlSeconds = 300;
  jwtCalls = 0;
  syncCalls = 0;
  /** Authority IDs the sync reports as tainted (set with {@link taint}). */
  tainted: ReadonlySet<string> = new Set();
  /** The queries of every sync received, in order. */
  readonly syncQueries: SyncQuery[] = [];
  private revision = 0;
  private changes: Change[] = [];
  private bundleValue: TrustBundle;
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly ca: TestCa,
    private readonly jwtKeys: webcrypto.CryptoKeyPair,
    private readonly jwtPublic: webcrypto.JsonWebKey,
  ) {
    this.bundleValue = this.makeBundle(1);
  }

  static async create(ca: TestCa): Promise<FakeAgentApi> {
    const keys = await generateTestKeys('P-256');
    const jwk = await webcrypto.subtle.exportKey('jwk', keys.publicKey);
    return new FakeAgentApi(ca, keys, jwk);
  }

  get bundle(): TrustBundle {
    return this.bundleValue;
  }

  /** Adds or replaces an entry (a new revision). */
  put(entry: AgentEntry): void {
    this.entries.set(entry.id, entry);
    this.change(entry.id, false);
  }

  /** Deletes an entry (a new revision). */
  delete(id: string): void {
    this.entries.delete(id);
    this.change(id, true);
  }

  /** Publishes a new bundle sequence. */
  bumpBundle(): void {
    this.bundleValue = this.makeBundle((this.bundleValue.sequenceNumber ?? 0) + 1);
    this.wake();
  }

  /** Taints these authority IDs, as the server publishes a taint: with a new bundle sequence. */
  taint(...authorityIds: string[]): void {
    this.tainted = new Set(authorityIds);
    this.bumpBundle();
  }

  renew(): Promise<AgentSvidResponse> {
    throw new Error('FakeAgentApi: renew is not served');
  }

  async sync(query: SyncQuery, signal?: AbortSignal): Promise<SyncResponse> {
    this.check();
    this.syncCalls++;
    this.syncQueries.push(query);
    // As the server: from revision 0 a full answer is news only when there are entries.
    const unchanged = (): boolean =>
      query.revision === this.revision &&
      (query.revision !== 0 || this.entries.size === 0) &&
      query.bundleSequence === this.bundleValue.sequenceNumber;
    if (unchanged() && query.waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, query.waitMs);
        this.waiters.add(done);
        signal?.addEventListener('abort', done);
      });
      signal?.throwIfAborted();
      this.check();
    }
    const full = query.revision === 0;
    const since = this.changes.filter((change) => change.revision > query.revision);
    const ids = [...new Set(since.map((change) => change.id))];
    return {
      revision: this.revision,
      full,
      entries: full ? [...this.entries.values()] : ids.flatMap((id) => this.entries.get(id) ?? []),
      deletedIds: full ? [] : ids.filter((id) => !this.entries.has(id)),
      bundle: this.bundleValue,
      federatedBundles: [],
      taintedAuthorities: this.tainted,
    };
  }

  async signX509Svids(csrs: readonly { entryId: string; csrPem: string }[]): Promise<X509SignResult[]> {
    this.check();
    this.batches.push(csrs.length);
    return Promise.all(
      csrs.map(async ({ entryId, csrPem }): Promise<X509SignResult> => {
        this.csrs.push(csrPem);
        const entry = this.entries.get(entryId);
        if (entry === undefined || this.refused.has(entryId)) {
          return { entryId, ok: false, code: 'permission_denied', message: `entry ${entryId} is not authorised` };
        }
        const publicKey = await importPublicKeySpki(parseCsrFast(csrPem).spkiDer);
        const now = Date.now();
        const id = this.tamper === 'id' ? `${entry.spiffeId.toString()}-other` : entry.spiffeId.toString();
        const keys = this.tamper === 'key' ? await generateTestKeys('P-256') : { publicKey, privateKey: publicKey };
        const svid = await this.ca.createX509Svid(id, {
          keys,
          notBefore: new Date(now - 10_000),
          notAfter: new Date(now + this.x509TtlSeconds * 1000),
          dnsNames: [...entry.dnsNames],
        });
        return { entryId, ok: true, chain: svid.chainDer(), expiresAt: svid.certificate.notAfter };
      }),
    );
  }

  async signJwtSvid(entryId: string, audience: readonly string[]): Promise<JwtSvidResponse> {
    this.check();
    this.jwtCalls++;
    const entry = this.entries.get(entryId);
    if (entry === undefined) throw new AgentApiError(403, 'permission_denied', `entry ${entryId} is not authorised`);
    return this.jwtFor(entry.spiffeId, audience);
  }

  /** A JWT-SVID signed with the fake's JWT key. */
  async jwtFor(spiffeId: SpiffeId, audience: readonly string[]): Promise<JwtSvidResponse> {
    const expiresAt = new Date(Math.floor(Date.now() / 1000) * 1000 + this.jwtTtlSeconds * 1000);
    const token = await signJwtSvid({
      spiffeId,
      audience,
      expiresAt,
      privateKey: this.jwtKeys.privateKey,
      kid: FAKE_JWT_KID,
    });
    return { spiffeId, token, expiresAt };
  }

  private check(): void {
    if (this.down) throw new ServerUnavailableError('fake server is down');
    if (this.agentError) throw this.agentError;
  }

  private change(id: string, deleted: boolean): void {
    this.revision++;
    this.changes.push({ revision: this.revision, id, deleted });
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  private makeBundle(sequenceNumber: number): TrustBundle {
    return TrustBundle.create(this.ca.trustDomain, {
      x509Authorities: [this.ca.root().certificate],
      jwtAuthorities: [[FAKE_JWT_KID, { ...this.jwtPublic }]],
      sequenceNumber,
    });
  }
}

let entryCounter = 0;

/** An entry for tests; `spiffeId` is required, the rest defaults (created in order of calls). */
export function testEntry(spiffeId: SpiffeId, fields: Partial<AgentEntry> = {}): AgentEntry {
  entryCounter++;
  return {
    id: `entry-${entryCounter}`,
    spiffeId,
    parentId: 'spiffe://example.org/sigil/agent/join_token/1',
    selectors: [{ type: 'unix', value: 'uid:1000' }],
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    hint: '',
    admin: false,
    downstream: false,
    expiresAt: null,
    revisionNumber: entryCounter,
    createdAt: new Date(Date.UTC(2026, 0, 1) + entryCounter * 1000),
    ...fields,
  };
}
