import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { SelectorError, checkSelector, type Selector } from '@sigil/runtime';

/**
 * The agent API of sigil-server as the agent sees it (`/agent/v1`, JSON, binary values in standard base64), and
 * the checks of every answer: the agent trusts the server, but a malformed answer must fail loudly here rather than
 * as a confusing error deep in the cache.
 */

/** A registration entry authorised for this agent, as `GET /agent/v1/sync` lists it. */
export interface AgentEntry {
  readonly id: string;
  readonly spiffeId: SpiffeId;
  readonly parentId: string;
  readonly selectors: readonly Selector[];
  /** Seconds; 0 = the server default. */
  readonly x509SvidTtl: number;
  /** Seconds; 0 = the server default. */
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  readonly federatesWith: readonly TrustDomain[];
  readonly hint: string;
  readonly admin: boolean;
  readonly downstream: boolean;
  readonly expiresAt: Date | null;
  readonly revisionNumber: number;
  readonly createdAt: Date;
}

/** The agent's own X509-SVID as attestation and renewal return it. */
export interface AgentSvidResponse {
  readonly spiffeId: SpiffeId;
  /** DER certificates, leaf first. */
  readonly chain: readonly Uint8Array[];
  readonly expiresAt: Date;
}

/** Attestation also returns the bundle of the trust domain. */
export interface AttestationResponse extends AgentSvidResponse {
  readonly bundle: TrustBundle;
}

/** One answer of the long-poll sync. */
export interface SyncResponse {
  readonly revision: number;
  /** True: `entries` is the complete authorised set (replace); false: a delta (upsert, then delete). */
  readonly full: boolean;
  readonly entries: readonly AgentEntry[];
  readonly deletedIds: readonly string[];
  readonly bundle: TrustBundle;
  readonly federatedBundles: readonly TrustBundle[];
}

/** The outcome of one CSR of a batch. */
export type X509SignResult =
  | { readonly entryId: string; readonly ok: true; readonly chain: readonly Uint8Array[]; readonly expiresAt: Date }
  | { readonly entryId: string; readonly ok: false; readonly code: string; readonly message: string };

export interface JwtSvidResponse {
  readonly spiffeId: SpiffeId;
  readonly token: string;
  readonly expiresAt: Date;
}

export { MAX_CSR_BATCH } from '@sigil/agent-api';

/** What the SVID cache and the agent manager need from the server (the seam the tests fake). */
export interface AgentApi {
  renew(csrPem: string): Promise<AgentSvidResponse>;
  sync(query: SyncQuery, signal?: AbortSignal): Promise<SyncResponse>;
  signX509Svids(csrs: readonly { entryId: string; csrPem: string }[]): Promise<X509SignResult[]>;
  signJwtSvid(entryId: string, audience: readonly string[]): Promise<JwtSvidResponse>;
}

export interface SyncQuery {
  readonly revision: number;
  readonly bundleSequence: number | undefined;
  readonly waitMs: number;
}

/** An answer of the server that does not follow the protocol. */
export class AgentApiProtocolError extends Error {
  override readonly name = 'AgentApiProtocolError';
}

type Json = Record<string, unknown>;

function fail(message: string): never {
  throw new AgentApiProtocolError(`server answer: ${message}`);
}

function object(value: unknown, field: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${field} must be an object`);
  return value as Json;
}

function string(value: unknown, field: string): string {
  if (typeof value !== 'string') fail(`${field} must be a string`);
  return value;
}

function integer(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    fail(`${field} must be a non-negative integer`);
  }
  return value;
}

function array(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) fail(`${field} must be an array`);
  return value;
}

function date(value: unknown, field: string): Date {
  const parsed = new Date(string(value, field));
  if (Number.isNaN(parsed.getTime())) fail(`${field} must be an RFC 3339 time`);
  return parsed;
}

function spiffeId(value: unknown, field: string): SpiffeId {
  try {
    return SpiffeId.parse(string(value, field));
  } catch (error) {
    if (error instanceof AgentApiProtocolError) throw error;
    fail(`${field}: ${(error as Error).message}`);
  }
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function derChain(value: unknown, field: string): Uint8Array[] {
  const items = array(value, field);
  if (items.length === 0) fail(`${field} must hold at least one certificate`);
  return items.map((item, i) => {
    const text = string(item, `${field}[${i}]`);
    if (!BASE64.test(text) || text.length % 4 !== 0) fail(`${field}[${i}] must be standard base64`);
    return new Uint8Array(Buffer.from(text, 'base64'));
  });
}

function bundle(value: unknown, field: string, trustDomain: TrustDomain): TrustBundle {
  try {
    return TrustBundle.parseJwks(trustDomain, object(value, field));
  } catch (error) {
    if (error instanceof AgentApiProtocolError) throw error;
    fail(`${field}: ${(error as Error).message}`);
  }
}

function selectors(value: unknown, field: string): Selector[] {
  return array(value, field).map((item, i) => {
    try {
      return checkSelector(item);
    } catch (error) {
      if (!(error instanceof SelectorError)) throw error;
      fail(`${field}[${i}]${error.part === 'selector' ? '' : `.${error.part}`}: ${error.problem}`);
    }
  });
}

/** An entry of the sync, in the admin API's JSON form. */
export function parseAgentEntry(value: unknown, field = 'entry'): AgentEntry {
  const entry = object(value, field);
  const expiresAt = entry['expires_at'];
  return {
    id: string(entry['id'], `${field}.id`),
    spiffeId: spiffeId(entry['spiffe_id'], `${field}.spiffe_id`),
    parentId: string(entry['parent_id'], `${field}.parent_id`),
    selectors: selectors(entry['selectors'], `${field}.selectors`),
    x509SvidTtl: integer(entry['x509_svid_ttl'] ?? 0, `${field}.x509_svid_ttl`),
    jwtSvidTtl: integer(entry['jwt_svid_ttl'] ?? 0, `${field}.jwt_svid_ttl`),
    dnsNames: array(entry['dns_names'] ?? [], `${field}.dns_names`).map((name, i) =>
      string(name, `${field}.dns_names[${i}]`),
    ),
    federatesWith: array(entry['federates_with'] ?? [], `${field}.federates_with`).map((name, i) => {
      try {
        return TrustDomain.parse(string(name, `${field}.federates_with[${i}]`));
      } catch (error) {
        if (error instanceof AgentApiProtocolError) throw error;
        fail(`${field}.federates_with[${i}]: ${(error as Error).message}`);
      }
    }),
    hint: entry['hint'] === undefined ? '' : string(entry['hint'], `${field}.hint`),
    admin: entry['admin'] === true,
    downstream: entry['downstream'] === true,
    expiresAt: expiresAt === null || expiresAt === undefined ? null : date(expiresAt, `${field}.expires_at`),
    revisionNumber: integer(entry['revision_number'] ?? 0, `${field}.revision_number`),
    createdAt: entry['created_at'] === undefined ? new Date(0) : date(entry['created_at'], `${field}.created_at`),
  };
}

/** `{ spiffe_id, svid, expires_at }` of renewal. */
export function parseAgentSvidResponse(value: unknown): AgentSvidResponse {
  const body = object(value, 'body');
  return {
    spiffeId: spiffeId(body['spiffe_id'], 'spiffe_id'),
    chain: derChain(body['svid'], 'svid'),
    expiresAt: date(body['expires_at'], 'expires_at'),
  };
}

/** `{ spiffe_id, svid, expires_at, bundle }` of attestation. */
export function parseAttestationResponse(value: unknown): AttestationResponse {
  const svid = parseAgentSvidResponse(value);
  return { ...svid, bundle: bundle(object(value, 'body')['bundle'], 'bundle', svid.spiffeId.trustDomain) };
}

/** The sync answer; `trustDomain` is the agent's. */
export function parseSyncResponse(value: unknown, trustDomain: TrustDomain): SyncResponse {
  const body = object(value, 'body');
  const federated = object(body['federated_bundles'] ?? {}, 'federated_bundles');
  return {
    revision: integer(body['revision'], 'revision'),
    full: body['full'] === true,
    entries: array(body['entries'], 'entries').map((entry, i) => parseAgentEntry(entry, `entries[${i}]`)),
    deletedIds: array(body['deleted_ids'] ?? [], 'deleted_ids').map((id, i) => string(id, `deleted_ids[${i}]`)),
    bundle: bundle(body['bundle'], 'bundle', trustDomain),
    federatedBundles: Object.entries(federated).map(([key, jwks]) => {
      let td: TrustDomain;
      try {
        td = TrustDomain.parse(key);
      } catch (error) {
        fail(`federated_bundles key ${key}: ${(error as Error).message}`);
      }
      return bundle(jwks, `federated_bundles[${key}]`, td);
    }),
  };
}

/** The results of a CSR batch. */
export function parseX509SignResults(value: unknown): X509SignResult[] {
  const body = object(value, 'body');
  return array(body['results'], 'results').map((item, i): X509SignResult => {
    const field = `results[${i}]`;
    const result = object(item, field);
    const entryId = string(result['entry_id'], `${field}.entry_id`);
    const status = object(result['status'], `${field}.status`);
    const code = string(status['code'], `${field}.status.code`);
    if (code !== 'ok') {
      return { entryId, ok: false, code, message: string(status['message'] ?? '', `${field}.status.message`) };
    }
    return {
      entryId,
      ok: true,
      chain: derChain(result['svid'], `${field}.svid`),
      expiresAt: date(result['expires_at'], `${field}.expires_at`),
    };
  });
}

/** `{ spiffe_id, token, expires_at }` of JWT signing. */
export function parseJwtSvidResponse(value: unknown): JwtSvidResponse {
  const body = object(value, 'body');
  return {
    spiffeId: spiffeId(body['spiffe_id'], 'spiffe_id'),
    token: string(body['token'], 'token'),
    expiresAt: date(body['expires_at'], 'expires_at'),
  };
}

/** Standard base64 of DER bytes, as the agent API carries binary values. */
export function toBase64(der: Uint8Array): string {
  return Buffer.from(der).toString('base64');
}
