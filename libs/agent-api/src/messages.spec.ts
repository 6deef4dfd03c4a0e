import { createRootCa, generateKeyPair } from '@sigil/pki';
import { SpiffeId, TrustBundle, TrustDomain, type SpiffeJwks } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { AgentApiProtocolError, parseErrorBody } from './errors.js';
import { MAX_CSR_BATCH } from './limits.js';
import {
  type SyncEntrySource,
  type SyncResponseWire,
  parseAgentEntry,
  parseAgentSvidResponse,
  parseAttestationResponse,
  parseJwtSvidResponse,
  parseSyncResponse,
  parseX509SignResults,
  parseX509SvidBatchRequest,
  serializeAgentSvid,
  serializeAttestationResponse,
  serializeJwtSvidRequest,
  serializeJwtSvidResponse,
  serializeSyncEntry,
  serializeSyncResponse,
  serializeX509SignResults,
  serializeX509SvidBatchRequest,
  syncPath,
} from './messages.js';
import { AGENT_API_PREFIX, AGENT_API_ROUTES, routePath } from './routes.js';
import { parseSvidIssuers, serializeSvidIssuers } from './svid-issuers.js';

const td = TrustDomain.parse('example.org');
const ENTRY_ID = '0b7e6f3a-1f2c-4d5e-8a9b-0c1d2e3f4a5b';

/** A registry entry as the server holds it (IDs as strings, as in apps/server's Entry). */
const registryEntry: SyncEntrySource & { updatedAt: Date } = {
  id: ENTRY_ID,
  spiffeId: 'spiffe://example.org/web',
  parentId: 'spiffe://example.org/sigil/agent/join_token/a1',
  selectors: [{ type: 'unix', value: 'uid:1000' }],
  x509SvidTtl: 3600,
  jwtSvidTtl: 300,
  dnsNames: ['web.example.org'],
  federatesWith: ['other.org'],
  admin: false,
  downstream: true,
  hint: 'external',
  expiresAt: new Date('2031-02-03T04:05:06.000Z'),
  revisionNumber: 7,
  createdAt: new Date('2030-01-01T00:00:00.000Z'),
  updatedAt: new Date('2030-06-01T00:00:00.000Z'),
};

/** Parses and catches, for the message and field of the protocol error. */
function refusal(parse: () => unknown): { message: string; field: string | undefined } {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(AgentApiProtocolError);
    return { message: (error as AgentApiProtocolError).message, field: (error as AgentApiProtocolError).field };
  }
  throw new Error('expected a protocol error');
}

let caDer: Uint8Array;
let jwks: SpiffeJwks;

beforeAll(async () => {
  const ca = await createRootCa({ trustDomain: td, keys: await generateKeyPair('ec-p256'), now: new Date() });
  caDer = ca.der;
  jwks = TrustBundle.create(td, { x509Authorities: [ca.der], sequenceNumber: 2 }).toJwks();
});

describe('routes', () => {
  it('keeps every path of the wire under /agent/v1, relative paths for the server router', () => {
    expect(Object.values(AGENT_API_ROUTES).map((route) => `${route.method} ${route.path}`)).toEqual([
      'POST /agent/v1/attest/join-token',
      'POST /agent/v1/attest/x509pop/challenge',
      'POST /agent/v1/attest/x509pop',
      'POST /agent/v1/renew',
      'GET /agent/v1/sync',
      'POST /agent/v1/svids/x509',
      'POST /agent/v1/svids/jwt',
    ]);
    expect(routePath(AGENT_API_ROUTES.signX509Svids)).toBe('svids/x509');
    expect(routePath(AGENT_API_ROUTES.attestX509pop, `${AGENT_API_PREFIX}/attest`)).toBe('x509pop');
    expect(() => routePath({ method: 'GET', path: '/bundle' })).toThrow('route /bundle is not under /agent/v1');
  });

  it('puts the sync query in the path, bundle_sequence only when known', () => {
    expect(syncPath({ revision: 3, bundleSequence: undefined, waitMs: 25_000 })).toBe(
      '/agent/v1/sync?revision=3&wait_ms=25000',
    );
    expect(syncPath({ revision: 0, bundleSequence: 2, waitMs: 0 })).toBe(
      '/agent/v1/sync?revision=0&wait_ms=0&bundle_sequence=2',
    );
  });
});

describe('sync entry', () => {
  it('serializes a registry entry with the keys, in the order, an older agent reads (no admin-only fields)', () => {
    const wire = serializeSyncEntry(registryEntry);
    expect(JSON.stringify(wire)).toBe(
      JSON.stringify({
        id: ENTRY_ID,
        spiffe_id: 'spiffe://example.org/web',
        parent_id: 'spiffe://example.org/sigil/agent/join_token/a1',
        selectors: [{ type: 'unix', value: 'uid:1000' }],
        x509_svid_ttl: 3600,
        jwt_svid_ttl: 300,
        dns_names: ['web.example.org'],
        federates_with: ['other.org'],
        admin: false,
        downstream: true,
        hint: 'external',
        expires_at: '2031-02-03T04:05:06.000Z',
        revision_number: 7,
        created_at: '2030-01-01T00:00:00.000Z',
      }),
    );
  });

  it('round-trips: parse(serialize(entry)) is the entry, and serialize(parse(wire)) the wire', () => {
    const wire = JSON.parse(JSON.stringify(serializeSyncEntry(registryEntry))) as unknown;
    const parsed = parseAgentEntry(wire);
    expect(parsed).toEqual({
      ...registryEntry,
      updatedAt: undefined,
      spiffeId: SpiffeId.parse('spiffe://example.org/web'),
      federatesWith: [TrustDomain.parse('other.org')],
    });
    expect(serializeSyncEntry(parsed)).toEqual(wire);
    const never = serializeSyncEntry({ ...registryEntry, expiresAt: null });
    expect(never.expires_at).toBeNull();
    expect(parseAgentEntry(never).expiresAt).toBeNull();
  });

  it('takes the defaults for fields an older server leaves out', () => {
    const entry = parseAgentEntry({
      id: ENTRY_ID,
      spiffe_id: 'spiffe://example.org/web',
      parent_id: 'spiffe://example.org/sigil/agent/join_token/a1',
      selectors: [],
    });
    expect(entry).toMatchObject({ x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: [], hint: '', expiresAt: null });
    expect(entry.createdAt.getTime()).toBe(0);
  });

  it.each<[string, Record<string, unknown>, string, string]>([
    ['no id', { id: undefined }, 'entry.id', 'server answer: entry.id must be a string'],
    [
      'a bad SPIFFE ID',
      { spiffe_id: 'https://example.org/web' },
      'entry.spiffe_id',
      'server answer: entry.spiffe_id: ',
    ],
    [
      'a bad selector',
      { selectors: [{ type: 'unix', value: 7 }] },
      'entry.selectors[0].value',
      'server answer: entry.selectors[0].value: must be a string',
    ],
    [
      'a negative TTL',
      { x509_svid_ttl: -1 },
      'entry.x509_svid_ttl',
      'server answer: entry.x509_svid_ttl must be a non-negative integer',
    ],
    [
      'a bad trust domain',
      { federates_with: ['Not A Domain!'] },
      'entry.federates_with[0]',
      'server answer: entry.federates_with[0]: ',
    ],
    ['a bad time', { expires_at: 'soon' }, 'entry.expires_at', 'server answer: entry.expires_at must be an RFC 3339'],
  ])('refuses %s, naming the field', (_case, change, field, message) => {
    const wire = { ...serializeSyncEntry(registryEntry), ...change };
    const refused = refusal(() => parseAgentEntry(wire));
    expect(refused.field).toBe(field);
    expect(refused.message.startsWith(message)).toBe(true);
  });
});

describe('sync response', () => {
  it('round-trips a delta; a full answer carries no deletions', () => {
    const wire = serializeSyncResponse({
      revision: 9,
      full: false,
      entries: [registryEntry],
      deletedIds: new Set(['gone']),
      bundle: jwks,
      federatedBundles: new Map([['other.org', { keys: [] }]]),
      taintedAuthorities: ['0a1b'],
    });
    expect(Object.keys(wire)).toEqual([
      'revision',
      'full',
      'entries',
      'deleted_ids',
      'bundle',
      'federated_bundles',
      'tainted_authorities',
    ]);
    expect(wire.federated_bundles).toEqual({ 'spiffe://other.org': { keys: [] } });
    const parsed = parseSyncResponse(JSON.parse(JSON.stringify(wire)), td);
    expect(parsed.revision).toBe(9);
    expect(parsed.full).toBe(false);
    expect(parsed.deletedIds).toEqual(['gone']);
    expect(parsed.entries.map((entry) => serializeSyncEntry(entry))).toEqual(wire.entries);
    expect(parsed.bundle.toJwks()).toEqual(jwks);
    expect(parsed.federatedBundles.map((bundle) => bundle.trustDomain.name)).toEqual(['other.org']);
    expect(parsed.taintedAuthorities).toEqual(new Set(['0a1b']));
    // An older server sends no tainted list: none.
    const { tainted_authorities: _, ...older } = wire;
    expect(parseSyncResponse(JSON.parse(JSON.stringify(older)), td).taintedAuthorities).toEqual(new Set());

    const full = serializeSyncResponse({
      revision: 9,
      full: true,
      entries: [],
      bundle: jwks,
      federatedBundles: new Map(),
    });
    expect(full.deleted_ids).toEqual([]);
  });

  it.each<[string, (wire: SyncResponseWire) => unknown, string]>([
    ['a negative revision', (wire) => ({ ...wire, revision: -1 }), 'revision'],
    ['entries not an array', (wire) => ({ ...wire, entries: {} }), 'entries'],
    [
      'an entry without selectors',
      (wire) => ({ ...wire, entries: [{ ...wire.entries[0], selectors: 1 }] }),
      'entries[0].selectors',
    ],
    ['a deleted id not a string', (wire) => ({ ...wire, deleted_ids: [1] }), 'deleted_ids[0]'],
    ['a bundle that is no JWKS', (wire) => ({ ...wire, bundle: { keys: 'x' } }), 'bundle'],
    [
      'a federated bundle under a bad key',
      (wire) => ({ ...wire, federated_bundles: { 'spiffe://Bad Domain': { keys: [] } } }),
      'federated_bundles key spiffe://Bad Domain',
    ],
  ])('refuses %s, naming the field', (_case, change, field) => {
    const wire = serializeSyncResponse({
      revision: 1,
      full: false,
      entries: [registryEntry],
      deletedIds: [],
      bundle: jwks,
      federatedBundles: new Map(),
    });
    const refused = refusal(() => parseSyncResponse(change(wire), td));
    expect(refused.field).toBe(field);
    expect(refused.message).toMatch(new RegExp(`^server answer: ${field.replace(/[[\]]/g, '\\$&')}`));
  });
});

describe('agent SVID, attestation, X.509 batch and JWT-SVID messages', () => {
  const expiresAt = new Date('2030-01-01T01:00:00.000Z');

  it('round-trips the agent SVID and the attestation answer', () => {
    const svid = { spiffeId: 'spiffe://example.org/sigil/agent/join_token/a1', chain: [caDer], expiresAt };
    const renewal = parseAgentSvidResponse(JSON.parse(JSON.stringify(serializeAgentSvid(svid))));
    expect(renewal).toEqual({ spiffeId: SpiffeId.parse(svid.spiffeId), chain: [caDer], expiresAt });
    const attestation = parseAttestationResponse(JSON.parse(JSON.stringify(serializeAttestationResponse(svid, jwks))));
    expect(attestation.bundle.toJwks()).toEqual(jwks);
    expect(attestation.bundle.trustDomain.name).toBe('example.org');
  });

  it('refuses an SVID chain that is empty or not standard base64, naming the certificate', () => {
    const wire = serializeAgentSvid({ spiffeId: 'spiffe://example.org/a', chain: [caDer], expiresAt });
    expect(refusal(() => parseAgentSvidResponse({ ...wire, svid: [] }))).toEqual({
      message: 'server answer: svid must hold at least one certificate',
      field: 'svid',
    });
    expect(refusal(() => parseAgentSvidResponse({ ...wire, svid: [wire.svid[0], 'a-b_'] }))).toEqual({
      message: 'server answer: svid[1] must be standard base64',
      field: 'svid[1]',
    });
    expect(refusal(() => parseAgentSvidResponse([wire]))).toEqual({
      message: 'server answer: body must be an object',
      field: 'body',
    });
  });

  it('round-trips a CSR batch, both the request and the results', () => {
    const csrs = [
      { entryId: 'a', csrPem: 'PEM A' },
      { entryId: 'b', csrPem: 'PEM B' },
    ];
    const request = JSON.parse(JSON.stringify(serializeX509SvidBatchRequest(csrs))) as unknown;
    expect(request).toEqual({
      csrs: [
        { entry_id: 'a', csr: 'PEM A' },
        { entry_id: 'b', csr: 'PEM B' },
      ],
    });
    expect(parseX509SvidBatchRequest(request)).toEqual([
      { entryId: 'a', csr: 'PEM A' },
      { entryId: 'b', csr: 'PEM B' },
    ]);
    const tooMany = Array.from({ length: MAX_CSR_BATCH + 1 }, () => csrs[0]!);
    expect(() => serializeX509SvidBatchRequest(tooMany)).toThrow(`csrs: at most ${MAX_CSR_BATCH} per batch, got 501`);

    const results = serializeX509SignResults([
      { entryId: 'a', ok: true, chain: [caDer], expiresAt },
      { entryId: 'b', ok: false, code: 'permission_denied', message: 'entry "b" is not authorised for this agent' },
    ]);
    expect(results.results[1]).toEqual({
      entry_id: 'b',
      status: { code: 'permission_denied', message: 'entry "b" is not authorised for this agent' },
    });
    expect(parseX509SignResults(JSON.parse(JSON.stringify(results)))).toEqual([
      { entryId: 'a', ok: true, chain: [caDer], expiresAt },
      { entryId: 'b', ok: false, code: 'permission_denied', message: 'entry "b" is not authorised for this agent' },
    ]);
    expect(refusal(() => parseX509SignResults({ results: [{ entry_id: 'a', status: {} }] }))).toEqual({
      message: 'server answer: results[0].status.code must be a string',
      field: 'results[0].status.code',
    });
  });

  it('round-trips the JWT-SVID request and answer', () => {
    expect(serializeJwtSvidRequest('a', ['aud1', 'aud2'])).toEqual({ entry_id: 'a', audience: ['aud1', 'aud2'] });
    const signed = { spiffeId: 'spiffe://example.org/web', token: 'a.b.c', expiresAt };
    expect(parseJwtSvidResponse(JSON.parse(JSON.stringify(serializeJwtSvidResponse(signed))))).toEqual({
      ...signed,
      spiffeId: SpiffeId.parse(signed.spiffeId),
    });
    expect(refusal(() => parseJwtSvidResponse({ ...serializeJwtSvidResponse(signed), token: null }))).toEqual({
      message: 'server answer: token must be a string',
      field: 'token',
    });
  });
});

describe('error body', () => {
  it('reads the kind and message, and names the status when the body is not an error body', () => {
    expect(parseErrorBody(403, { error: 'permission_denied', message: 'agent is banned' })).toEqual({
      kind: 'permission_denied',
      message: 'agent is banned',
    });
    expect(parseErrorBody(502, undefined)).toEqual({ kind: 'http_502', message: 'HTTP 502' });
    expect(parseErrorBody(500, { error: 7 })).toEqual({ kind: 'http_500', message: 'HTTP 500' });
  });
});

describe('svid issuers report', () => {
  it('puts the report in the sync query, sorted, expiries in unix seconds; parses it back', () => {
    const issuers = new Map([
      ['ff00', new Date(2_000_000_500)],
      ['UyNh-_x', new Date(1_000_000_000)],
    ]);
    const text = serializeSvidIssuers(issuers);
    expect(text).toBe('UyNh-_x:1000000,ff00:2000001');
    expect(syncPath({ revision: 1, bundleSequence: undefined, waitMs: 0, svidIssuers: issuers })).toBe(
      '/agent/v1/sync?revision=1&wait_ms=0&svid_issuers=UyNh-_x%3A1000000%2Cff00%3A2000001',
    );
    expect(parseSvidIssuers(text)).toEqual(
      new Map([
        ['UyNh-_x', new Date(1_000_000_000)],
        ['ff00', new Date(2_000_001_000)],
      ]),
    );
    expect(parseSvidIssuers('')).toEqual(new Map());
  });

  it.each([
    ['ab', 'svid_issuers[0]: must be <authority id>:<unix seconds>'],
    ['ab:1:2', 'svid_issuers[0]: must be <authority id>:<unix seconds>'],
    ['ab:1,a b:2', 'svid_issuers[1]: must be <authority id>:<unix seconds>'],
    ['ab:x', 'svid_issuers[0]: must be <authority id>:<unix seconds>'],
    ['ab:1,ab:2', "svid_issuers[1]: authority 'ab' is named twice"],
    [Array.from({ length: 33 }, (_, i) => `k${i}:1`).join(','), 'svid_issuers: at most 32 authorities, got 33'],
  ])('refuses %s, naming the item', (text, message) => {
    expect(() => parseSvidIssuers(text)).toThrow(message);
  });
});
