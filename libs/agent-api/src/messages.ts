import { type Selector, SelectorError, checkSelector } from '@sigil/runtime';
import { SpiffeId, type SpiffeJwks, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { AgentApiProtocolError, type ErrorKind } from './errors.js';
import { CSR_MAX_BYTES, MAX_CSR_BATCH } from './limits.js';
import { AGENT_API_ROUTES } from './routes.js';
import { type SvidIssuers, serializeSvidIssuers } from './svid-issuers.js';

/*
 * The messages of the agent API (JSON, snake_case keys, binary values in standard base64), three ways each:
 * - `…Wire`: the JSON as it travels. The keys are the contract: an agent of an older release reads them too.
 * - the typed message (camelCase, parsed values) the agent works with, built by `parse…`, which checks every field
 *   and throws AgentApiProtocolError naming the first bad one: the agent trusts the server, but a malformed answer
 *   must fail loudly here rather than as a confusing error deep in its caches.
 * - `serialize…`, which the sender uses to build the wire form. Its input is structural, so the server passes its
 *   own records (SPIFFE IDs as strings, DER chains) without converting them first.
 */

// ---- wire forms ------------------------------------------------------------------------------------------------

/** A selector, `type` and `value` apart. */
export interface SelectorWire {
  type: string;
  value: string;
}

/**
 * A registration entry authorised for the agent, as `GET /agent/v1/sync` lists it: what an agent needs to serve it
 * (the admin API's entry has more). Keys and their order are those of the admin entry an older server sent.
 */
export interface SyncEntryWire {
  id: string;
  spiffe_id: string;
  parent_id: string;
  selectors: SelectorWire[];
  /** Seconds; 0 = the server default. */
  x509_svid_ttl: number;
  /** Seconds; 0 = the server default. */
  jwt_svid_ttl: number;
  dns_names: string[];
  /** Trust domain names. */
  federates_with: string[];
  admin: boolean;
  downstream: boolean;
  /** Empty when unset. */
  hint: string;
  /** RFC 3339, or null: never expires. */
  expires_at: string | null;
  /** Registry revision of the entry's last change. */
  revision_number: number;
  /** RFC 3339; the agent orders identities by it (oldest first, as SPIRE). */
  created_at: string;
}

/** `POST /agent/v1/renew`. */
export interface RenewRequestWire {
  /** PEM PKCS#10 request for the renewed SVID. */
  csr: string;
}

/** The agent's own X509-SVID, as attestation and renewal return it. */
export interface AgentSvidWire {
  spiffe_id: string;
  /** Base64 DER certificates, leaf first. */
  svid: string[];
  expires_at: string;
}

/** Attestation also returns the trust domain's bundle. */
export interface AttestationResponseWire extends AgentSvidWire {
  bundle: SpiffeJwks;
}

/** The query of `GET /agent/v1/sync`, as numbers in decimal. */
export interface SyncQueryWire {
  /** Revision of the last answer; 0 for everything. */
  revision?: number;
  /** `spiffe_sequence` of the bundle the agent holds. */
  bundle_sequence?: number;
  /** How long to wait for a change, in ms (the server caps it). */
  wait_ms?: number;
  /** The authorities that issued the SVIDs the agent holds (see `serializeSvidIssuers`); absent: not reported. */
  svid_issuers?: string;
}

/** One answer of `GET /agent/v1/sync`. */
export interface SyncResponseWire {
  revision: number;
  /** True: `entries` is every authorised entry, replacing what the agent holds. */
  full: boolean;
  entries: SyncEntryWire[];
  deleted_ids: string[];
  /** Our trust bundle, SPIFFE JWKS with spiffe_sequence. */
  bundle: SpiffeJwks;
  /** By `spiffe://<trust domain>`. */
  federated_bundles: Record<string, SpiffeJwks>;
  /**
   * Authority IDs of our trust domain's tainted keys (X.509: hex subject key identifier; JWT: kid), still in the
   * bundle but no longer to be relied on: the agent replaces every SVID they issued (SPIRE's `tainted` authorities).
   */
  tainted_authorities: string[];
}

export interface X509SvidRequestWire {
  entry_id: string;
  /** PEM PKCS#10 request; its URI SAN, if any, must be the entry SPIFFE ID. */
  csr: string;
}

/** `POST /agent/v1/svids/x509`: 1 to {@link MAX_CSR_BATCH} requests. */
export interface BatchX509SvidRequestWire {
  csrs: X509SvidRequestWire[];
}

/** Whether one CSR of a batch was signed. */
export interface SvidStatusWire {
  /** `ok`, or the error kind of this CSR (the others of the batch go on). */
  code: 'ok' | ErrorKind;
  message: string;
}

/** The answer for one CSR of a batch. */
export interface X509SvidResultWire {
  entry_id: string;
  status: SvidStatusWire;
  /** Only when `ok`: base64 DER certificates, leaf first. */
  svid?: string[];
  expires_at?: string;
}

/** The answer to a CSR batch, one result per CSR in request order. */
export interface BatchX509SvidResponseWire {
  results: X509SvidResultWire[];
}

/** `POST /agent/v1/svids/jwt`. */
export interface JwtSvidRequestWire {
  entry_id: string;
  audience: string[];
}

/** A signed JWT-SVID. */
export interface JwtSvidResponseWire {
  spiffe_id: string;
  token: string;
  expires_at: string;
}

// ---- typed messages --------------------------------------------------------------------------------------------

/** A registration entry authorised for this agent (see {@link SyncEntryWire}). */
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

/** What the agent asks the sync for (see {@link SyncQueryWire}). */
export interface SyncQuery {
  readonly revision: number;
  readonly bundleSequence: number | undefined;
  readonly waitMs: number;
  /** The authorities that issued the SVIDs the agent holds, with the latest expiry under each. */
  readonly svidIssuers?: SvidIssuers;
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
  /** Authority IDs of our tainted keys (see {@link SyncResponseWire.tainted_authorities}); absent: none. */
  readonly taintedAuthorities?: ReadonlySet<string>;
}

/** One CSR of a batch. */
export interface X509SvidRequest {
  readonly entryId: string;
  /** PEM PKCS#10. */
  readonly csr: string;
}

/** The outcome of one CSR of a batch. */
export type X509SignResult =
  | { readonly entryId: string; readonly ok: true; readonly chain: readonly Uint8Array[]; readonly expiresAt: Date }
  | { readonly entryId: string; readonly ok: false; readonly code: string; readonly message: string };

/** A signed JWT-SVID of an entry. */
export interface JwtSvidResponse {
  readonly spiffeId: SpiffeId;
  readonly token: string;
  readonly expiresAt: Date;
}

// ---- checks of JSON values -------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

function fail(field: string, problem: string): never {
  throw new AgentApiProtocolError(`server answer: ${field}${problem}`, field);
}

/** Runs `parse`, turning any error but ours into a protocol error for `field`. */
function checked<T>(field: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof AgentApiProtocolError) throw error;
    fail(field, `: ${(error as Error).message}`);
  }
}

const isPlainObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function object(value: unknown, field: string): Json {
  if (!isPlainObject(value)) fail(field, ' must be an object');
  return value;
}

function string(value: unknown, field: string): string {
  if (typeof value !== 'string') fail(field, ' must be a string');
  return value;
}

function integer(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    fail(field, ' must be a non-negative integer');
  }
  return value;
}

function array(value: unknown, field: string): unknown[] {
  if (!Array.isArray(value)) fail(field, ' must be an array');
  return value;
}

function date(value: unknown, field: string): Date {
  const parsed = new Date(string(value, field));
  if (Number.isNaN(parsed.getTime())) fail(field, ' must be an RFC 3339 time');
  return parsed;
}

function spiffeId(value: unknown, field: string): SpiffeId {
  const text = string(value, field);
  return checked(field, () => SpiffeId.parse(text));
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function base64(value: unknown, field: string): Uint8Array {
  const text = string(value, field);
  if (!BASE64.test(text) || text.length % 4 !== 0) fail(field, ' must be standard base64');
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function derChain(value: unknown, field: string): Uint8Array[] {
  const items = array(value, field);
  if (items.length === 0) fail(field, ' must hold at least one certificate');
  return items.map((item, i) => base64(item, `${field}[${i}]`));
}

function bundle(value: unknown, field: string, trustDomain: TrustDomain): TrustBundle {
  const jwks = object(value, field);
  return checked(field, () => TrustBundle.parseJwks(trustDomain, jwks));
}

function selectors(value: unknown, field: string): Selector[] {
  return array(value, field).map((item, i) => {
    try {
      return checkSelector(item);
    } catch (error) {
      if (!(error instanceof SelectorError)) throw error;
      fail(`${field}[${i}]${error.part === 'selector' ? '' : `.${error.part}`}`, `: ${error.problem}`);
    }
  });
}

/** Base64 of each certificate, without copying the bytes first (the signing hot path). */
const base64Chain = (chain: readonly Uint8Array[]): string[] =>
  chain.map((der) => Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64'));

/** Standard base64 of DER bytes, as the agent API carries binary values. */
export function toBase64(der: Uint8Array): string {
  return Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
}

// ---- sync entry ------------------------------------------------------------------------------------------------

/**
 * What {@link serializeSyncEntry} reads: an {@link AgentEntry}, or the server's registry entry (IDs as strings).
 */
export interface SyncEntrySource {
  readonly id: string;
  readonly spiffeId: string | SpiffeId;
  readonly parentId: string;
  readonly selectors: readonly Selector[];
  readonly x509SvidTtl: number;
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  readonly federatesWith: readonly (string | TrustDomain)[];
  readonly admin: boolean;
  readonly downstream: boolean;
  readonly hint: string;
  readonly expiresAt: Date | null;
  readonly revisionNumber: number;
  readonly createdAt: Date;
}

/** The sync's form of an entry: only what an agent needs (the admin API's entry adds `updated_at`). */
export function serializeSyncEntry(entry: SyncEntrySource): SyncEntryWire {
  return {
    id: entry.id,
    spiffe_id: String(entry.spiffeId),
    parent_id: entry.parentId,
    selectors: entry.selectors.map(({ type, value }) => ({ type, value })),
    x509_svid_ttl: entry.x509SvidTtl,
    jwt_svid_ttl: entry.jwtSvidTtl,
    dns_names: [...entry.dnsNames],
    federates_with: entry.federatesWith.map(String),
    admin: entry.admin,
    downstream: entry.downstream,
    hint: entry.hint,
    expires_at: entry.expiresAt?.toISOString() ?? null,
    revision_number: entry.revisionNumber,
    created_at: entry.createdAt.toISOString(),
  };
}

/**
 * An entry of the sync. Fields an older server may leave out take their defaults (TTL 0, no DNS names, no hint, …);
 * `id`, `spiffe_id`, `parent_id` and `selectors` are required.
 */
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
      const text = string(name, `${field}.federates_with[${i}]`);
      return checked(`${field}.federates_with[${i}]`, () => TrustDomain.parse(text));
    }),
    hint: entry['hint'] === undefined ? '' : string(entry['hint'], `${field}.hint`),
    admin: entry['admin'] === true,
    downstream: entry['downstream'] === true,
    expiresAt: expiresAt === null || expiresAt === undefined ? null : date(expiresAt, `${field}.expires_at`),
    revisionNumber: integer(entry['revision_number'] ?? 0, `${field}.revision_number`),
    createdAt: entry['created_at'] === undefined ? new Date(0) : date(entry['created_at'], `${field}.created_at`),
  };
}

// ---- agent SVID: attestation and renewal -----------------------------------------------------------------------

/** The body of `POST /agent/v1/renew`. */
export function serializeRenewRequest(csrPem: string): RenewRequestWire {
  return { csr: csrPem };
}

/** What {@link serializeAgentSvid} reads. */
export interface AgentSvidSource {
  readonly spiffeId: string | SpiffeId;
  /** DER certificates, leaf first. */
  readonly chain: readonly Uint8Array[];
  readonly expiresAt: Date;
}

/** `{ spiffe_id, svid, expires_at }` of renewal (and of attestation, with the bundle). */
export function serializeAgentSvid(svid: AgentSvidSource): AgentSvidWire {
  return { spiffe_id: String(svid.spiffeId), svid: base64Chain(svid.chain), expires_at: svid.expiresAt.toISOString() };
}

/** `{ spiffe_id, svid, expires_at, bundle }` of attestation. */
export function serializeAttestationResponse(svid: AgentSvidSource, bundle: SpiffeJwks): AttestationResponseWire {
  return { ...serializeAgentSvid(svid), bundle };
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

// ---- sync ------------------------------------------------------------------------------------------------------

/** The path and query of a sync request. */
export function syncPath(query: SyncQuery): string {
  const params = new URLSearchParams({ revision: String(query.revision), wait_ms: String(query.waitMs) });
  if (query.bundleSequence !== undefined) params.set('bundle_sequence', String(query.bundleSequence));
  if (query.svidIssuers !== undefined) params.set('svid_issuers', serializeSvidIssuers(query.svidIssuers));
  return `${AGENT_API_ROUTES.sync.path}?${params.toString()}`;
}

/** What {@link serializeSyncResponse} reads: a full answer (replaces everything, so deletes nothing) or a delta. */
export type SyncResponseSource = {
  readonly revision: number;
  readonly entries: readonly SyncEntrySource[];
  readonly bundle: SpiffeJwks;
  /** By trust domain name. */
  readonly federatedBundles: ReadonlyMap<string, SpiffeJwks>;
  /** Absent: none. */
  readonly taintedAuthorities?: readonly string[];
} & ({ readonly full: true } | { readonly full: false; readonly deletedIds: Iterable<string> });

/** The sync answer; federated bundles are keyed `spiffe://<trust domain>`. */
export function serializeSyncResponse(sync: SyncResponseSource): SyncResponseWire {
  return {
    revision: sync.revision,
    full: sync.full,
    entries: sync.entries.map(serializeSyncEntry),
    deleted_ids: sync.full ? [] : [...sync.deletedIds],
    bundle: sync.bundle,
    federated_bundles: Object.fromEntries(
      [...sync.federatedBundles].map(([trustDomain, jwks]) => [`spiffe://${trustDomain}`, jwks]),
    ),
    tainted_authorities: [...(sync.taintedAuthorities ?? [])],
  };
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
      const td = checked(`federated_bundles key ${key}`, () => TrustDomain.parse(key));
      return bundle(jwks, `federated_bundles[${key}]`, td);
    }),
    // An older server sends none.
    taintedAuthorities: new Set(
      array(body['tainted_authorities'] ?? [], 'tainted_authorities').map((id, i) =>
        string(id, `tainted_authorities[${i}]`),
      ),
    ),
  };
}

// ---- X.509-SVID batch ------------------------------------------------------------------------------------------

/**
 * The body of `POST /agent/v1/svids/x509`.
 *
 * @throws RangeError past {@link MAX_CSR_BATCH} CSRs: the server would refuse the whole batch
 */
export function serializeX509SvidBatchRequest(
  csrs: readonly { readonly entryId: string; readonly csrPem: string }[],
): BatchX509SvidRequestWire {
  if (csrs.length > MAX_CSR_BATCH) {
    throw new RangeError(`csrs: at most ${MAX_CSR_BATCH} per batch, got ${csrs.length}`);
  }
  return { csrs: csrs.map(({ entryId, csrPem }) => ({ entry_id: entryId, csr: csrPem })) };
}

const BATCH_FIELDS = new Set(['csrs']);
const REQUEST_FIELDS = new Set(['entry_id', 'csr']);

/**
 * Checks a `POST /agent/v1/svids/x509` body (unknown fields refused, every failure listed, as the server's
 * validation of its other bodies does) and returns the requests in order. Only the shape: the server's signing
 * checks entries and CSRs. Written by hand because it is the signing hot path (a generic validator over up to 500
 * items cost about 3 % of the server's signing CPU).
 *
 * @throws AgentApiProtocolError with every failure as `<field>: <what>`, joined by `; `
 */
export function parseX509SvidBatchRequest(body: unknown): X509SvidRequest[] {
  if (!isPlainObject(body)) throw new AgentApiProtocolError('body: must be a json object', 'body');
  const failures = Object.keys(body)
    .filter((key) => !BATCH_FIELDS.has(key))
    .map((key) => `${key}: unknown field`);
  const csrs = body['csrs'];
  if (!Array.isArray(csrs) || csrs.length < 1 || csrs.length > MAX_CSR_BATCH) {
    const got = Array.isArray(csrs) ? `${csrs.length} items` : csrs === null ? 'null' : typeof csrs;
    failures.push(`csrs: must be an array of 1 to ${MAX_CSR_BATCH} requests, got ${got}`);
    throw new AgentApiProtocolError(failures.join('; '), 'csrs');
  }
  const requests: X509SvidRequest[] = new Array<X509SvidRequest>(csrs.length);
  for (let index = 0; index < csrs.length; index++) {
    const item: unknown = csrs[index];
    const path = `csrs.${index}`;
    if (!isPlainObject(item)) {
      failures.push(`${path}: must be an object with entry_id and csr`);
      continue;
    }
    for (const key in item) if (!REQUEST_FIELDS.has(key)) failures.push(`${path}.${key}: unknown field`);
    const { entry_id: entryId, csr } = item;
    if (typeof entryId !== 'string') failures.push(`${path}.entry_id: must be a string`);
    if (typeof csr !== 'string') failures.push(`${path}.csr: must be a string`);
    else if (csr.length > CSR_MAX_BYTES) failures.push(`${path}.csr: must be at most ${CSR_MAX_BYTES} characters`);
    if (typeof entryId === 'string' && typeof csr === 'string') requests[index] = { entryId, csr };
  }
  if (failures.length > 0) {
    throw new AgentApiProtocolError(failures.join('; '), (failures[0] as string).split(':', 1)[0]);
  }
  return requests;
}

/** What {@link serializeX509SignResults} reads for each CSR. */
export type X509SignResultSource =
  | { readonly entryId: string; readonly ok: true; readonly chain: readonly Uint8Array[]; readonly expiresAt: Date }
  | { readonly entryId: string; readonly ok: false; readonly code: ErrorKind; readonly message: string };

/** The answer to a CSR batch: one result per CSR, in the order of the request. */
export function serializeX509SignResults(results: readonly X509SignResultSource[]): BatchX509SvidResponseWire {
  return {
    results: results.map((result) =>
      result.ok
        ? {
            entry_id: result.entryId,
            status: { code: 'ok', message: 'ok' },
            svid: base64Chain(result.chain),
            expires_at: result.expiresAt.toISOString(),
          }
        : { entry_id: result.entryId, status: { code: result.code, message: result.message } },
    ),
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

// ---- JWT-SVID --------------------------------------------------------------------------------------------------

/** The body of `POST /agent/v1/svids/jwt`. */
export function serializeJwtSvidRequest(entryId: string, audience: readonly string[]): JwtSvidRequestWire {
  return { entry_id: entryId, audience: [...audience] };
}

/** What {@link serializeJwtSvidResponse} reads. */
export interface JwtSvidSource {
  readonly spiffeId: string | SpiffeId;
  readonly token: string;
  readonly expiresAt: Date;
}

/** `{ spiffe_id, token, expires_at }` of JWT signing. */
export function serializeJwtSvidResponse(signed: JwtSvidSource): JwtSvidResponseWire {
  return { spiffe_id: String(signed.spiffeId), token: signed.token, expires_at: signed.expiresAt.toISOString() };
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
