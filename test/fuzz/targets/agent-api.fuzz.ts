import { createRootCa, generateKeyPair } from '@sigil/pki';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import fc from 'fast-check';
import {
  AgentApiProtocolError,
  MAX_CSR_BATCH,
  parseAgentSvidResponse,
  parseAttestationResponse,
  parseJwtSvidResponse,
  parseSyncResponse,
  parseX509SignResults,
  parseX509SvidBatchRequest,
} from '@sigil/agent-api';
import { jsonText, mutatedJson } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, tryParse, type FuzzReport } from '../harness.js';

const ENTRY_ID = '0b7e6f3a-1f2c-4d5e-8a9b-0c1d2e3f4a5b';
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';

const isProtocolError = (error: unknown): boolean => error instanceof AgentApiProtocolError;

/** JSON.parse of the text, as the transports do; undefined when it is not JSON (the transport refuses it). */
function parsed(text: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) as unknown };
  } catch {
    return undefined;
  }
}

/**
 * The agent API contract's hand-written parsers, both directions: the CSR batch request the server checks without
 * the ValidationPipe (the signing hot path) and every server answer the agent parses (attestation, renewal, sync,
 * X.509 batch results, JWT-SVID), on mutated valid bodies as documents and as JSON text (cut, spliced, nested up to
 * 100,000 levels). Only `AgentApiProtocolError` may be thrown (the server answers it as `invalid_argument`); an
 * accepted batch has one string request per item.
 */
export async function fuzzAgentApi(runs: number): Promise<FuzzReport> {
  const td = TrustDomain.parse('example.org');
  const ca = await createRootCa({ trustDomain: td, keys: await generateKeyPair('ec-p256'), now: new Date() });
  const svid = [Buffer.from(ca.der).toString('base64')];
  const jwks = TrustBundle.create(td, { x509Authorities: [ca.der], sequenceNumber: 2 }).toJwks();
  const entry = {
    id: ENTRY_ID,
    spiffe_id: 'spiffe://example.org/web',
    parent_id: 'spiffe://example.org/sigil/agent/join_token/a1',
    selectors: [{ type: 'unix', value: 'uid:1000' }],
    x509_svid_ttl: 0,
    jwt_svid_ttl: 0,
    dns_names: [],
    federates_with: ['other.org'],
    admin: false,
    downstream: false,
    hint: '',
    expires_at: null,
    revision_number: 3,
    created_at: '2030-01-01T00:00:00.000Z',
  };
  const batches = [
    { csrs: [{ entry_id: ENTRY_ID, csr: CSR }] },
    {
      csrs: [
        { entry_id: ENTRY_ID, csr: CSR },
        { entry_id: 'x', csr: '' },
      ],
    },
  ];
  const answers = [
    {
      spiffe_id: 'spiffe://example.org/sigil/agent/join_token/a1',
      svid,
      expires_at: '2030-01-01T00:00:00Z',
      bundle: jwks,
    },
    {
      revision: 4,
      full: false,
      entries: [entry],
      deleted_ids: [ENTRY_ID],
      bundle: jwks,
      federated_bundles: { 'spiffe://other.org': { keys: [] } },
    },
    {
      results: [
        { entry_id: ENTRY_ID, status: { code: 'ok', message: 'ok' }, svid, expires_at: '2030-01-01T00:00:00Z' },
        { entry_id: ENTRY_ID, status: { code: 'permission_denied', message: 'no' } },
      ],
    },
    { spiffe_id: 'spiffe://example.org/web', token: 'a.b.c', expires_at: '2030-01-01T00:00:00Z' },
  ];
  const document = fc.oneof(mutatedJson(batches, 4), mutatedJson(answers, 4));
  const body = fc.oneof(
    { weight: 3, arbitrary: document.map((value) => ({ value })) },
    { weight: 2, arbitrary: jsonText(document).map(parsed) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: MAX_CSR_BATCH + 2 }).map((count) => ({
        value: { csrs: Array.from({ length: count }, (_, i) => ({ entry_id: `${i}`, csr: CSR })) },
      })),
    },
  );
  const agentParsers: [string, (value: unknown) => unknown][] = [
    ['parseAgentSvidResponse', parseAgentSvidResponse],
    ['parseAttestationResponse', parseAttestationResponse],
    ['parseSyncResponse', (value) => parseSyncResponse(value, td)],
    ['parseX509SignResults', parseX509SignResults],
    ['parseJwtSvidResponse', parseJwtSvidResponse],
  ];
  const outcomes = new Outcomes();
  return runTarget(
    'agent-api',
    body,
    async (input) => {
      if (input === undefined) return;
      const requests = await tryParse('parseX509SvidBatchRequest', isProtocolError, () =>
        parseX509SvidBatchRequest(input.value),
      );
      if (requests !== undefined) {
        const items = (input.value as { csrs: unknown[] }).csrs;
        const ok =
          requests.length === items.length &&
          requests.every((request) => typeof request?.entryId === 'string' && typeof request.csr === 'string');
        if (!ok) throw new ContractViolation('an accepted batch has holes or non-string requests');
      }
      outcomes.add(`batch ${requests ? 'accepted' : 'refused'}`);
      for (const [name, parse] of agentParsers) {
        if ((await tryParse(name, isProtocolError, () => parse(input.value))) !== undefined)
          outcomes.add(`${name} accepted`);
      }
    },
    runs,
    outcomes,
  );
}
