import { create, toBinary, type DescMessage } from '@bufbuild/protobuf';
import { createContextValues } from '@connectrpc/connect';
import { generateKeyPair } from '@sigil/pki';
import { SpiffeId, TrustBundle, TrustDomain, signJwtSvid } from '@sigil/spiffe';
import {
  JWTBundlesRequestSchema,
  JWTSVIDRequestSchema,
  SpiffeWorkloadAPI,
  ValidateJWTSVIDRequestSchema,
  X509BundlesRequestSchema,
  X509SVIDRequestSchema,
} from '@sigil/workload-api';
import fc from 'fast-check';
import { KeyObject, type webcrypto } from 'node:crypto';
import { once } from 'node:events';
import { type ClientHttp2Session, type IncomingHttpHeaders, connect, createServer } from 'node:http2';
import { type AddressInfo } from 'node:net';
import { PEER_CREDENTIALS, type PeerCredentials } from '../../../apps/agent/src/endpoints/peer-credentials.js';
import { GrpcRouter } from '../../../apps/agent/src/endpoints/workload-api/grpc-router.js';
import { checkSecurityHeader } from '../../../apps/agent/src/endpoints/workload-api/security-header.js';
import { MAX_REQUEST_BYTES } from '../../../apps/agent/src/endpoints/workload-api/workload-api.server.js';
import {
  WorkloadApiHandler,
  type IdentityCache,
  type CallerAttestor,
} from '../../../apps/agent/src/endpoints/workload-api/workload-api.handler.js';
import type { WorkloadIdentity } from '../../../apps/agent/src/endpoints/workload-api/workload-responses.js';
import { matchesAllSelectors, type Selector } from '@sigil/runtime';
import { TestCa } from '../../support/test-ca.js';
import { anyString, mutatedBytes, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, type FuzzReport } from '../harness.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const UID_1000: Selector = { type: 'unix', value: 'uid:1000' };
const CALLER = { pid: 4242, uid: 1000, gid: 1000, startTime: 1n } as unknown as PeerCredentials;
// gRPC status codes the Workload API answers with (README, Workload API), besides OK.
const DOCUMENTED_CODES = new Set(['0', '3', '7', '14']);
const OVERSIZED = /^message size \d+ is larger than configured readMaxBytes \d+$/;
const LIBRARY_REFUSAL =
  /^(parse binary: |protocol error: |received compressed envelope, but do not know how to decompress$)/;

/** The attestor's seam: the caller's selectors. The real one reads /proc; here the caller is always uid 1000. */
class FixedAttestor implements CallerAttestor {
  async attest(): Promise<readonly Selector[]> {
    return [UID_1000];
  }
}

/** An in-memory identity cache: one entry for uid 1000, JWT-SVIDs signed on demand. */
class OneEntryCache implements IdentityCache {
  constructor(
    private readonly own: TrustBundle,
    private readonly identity: WorkloadIdentity,
    private readonly key: webcrypto.CryptoKey,
  ) {}
  bundles = () => ({ own: this.own, federated: [] });
  identitiesFor = (selectors: readonly Selector[]) =>
    matchesAllSelectors([UID_1000], selectors) ? [this.identity] : [];
  fetchJwtSvid = (identity: WorkloadIdentity, audience: readonly string[]) =>
    signJwtSvid({
      spiffeId: identity.spiffeId,
      audience,
      expiresAt: new Date(NOW.getTime() + 300_000),
      issuedAt: NOW,
      privateKey: this.key,
      kid: 'kid-1',
    });
  subscribe = () => () => undefined;
}

interface Call {
  readonly method: string;
  readonly header: string | undefined;
  readonly body: Uint8Array;
}

function envelope(message: Uint8Array, flags = 0, length = message.length): Uint8Array {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([head, message]);
}

/**
 * Runs one call over HTTP/2 through the agent's gRPC router and returns the gRPC status and message: the trailers',
 * or the headers' of a trailers-only answer. A stream's first message stands for OK (streams answer with the full
 * state at once and then wait for changes), and the call is cancelled then.
 */
async function invoke(session: ClientHttp2Session, call: Call): Promise<{ code: string; message: string }> {
  const headers: Record<string, string> = {
    ':method': 'POST',
    ':path': `/SpiffeWorkloadAPI/${call.method}`,
    'content-type': 'application/grpc',
    te: 'trailers',
  };
  if (call.header !== undefined) headers['workload.spiffe.io'] = call.header;
  const request = session.request(headers);
  request.on('error', () => undefined);
  let answer: IncomingHttpHeaders | undefined;
  request.once('response', (response) => {
    if (response['grpc-status'] !== undefined) answer = response;
  });
  request.once('trailers', (trailers) => {
    answer = trailers;
  });
  let sawMessage = false;
  request.on('data', (chunk: Buffer) => {
    if (chunk.length > 0 && !sawMessage) {
      sawMessage = true;
      request.close();
    }
  });
  request.end(call.body);
  await once(request, 'close');
  if (sawMessage) return { code: '0', message: '' };
  return {
    code: String(answer?.['grpc-status'] ?? `stream closed with code ${request.rstCode}`),
    message: decodeURIComponent(String(answer?.['grpc-message'] ?? '')),
  };
}

/**
 * The Workload API request path of the agent: arbitrary and mutated protobuf request messages (audience, spiffe_id,
 * svid strings including mutated real JWT-SVIDs; unknown fields; flipped, cut, extended bytes) in gRPC envelopes
 * (sometimes broken), with and without the security header, over HTTP/2 through the agent's gRPC router with its
 * security header check and `WorkloadApiHandler` (the attestor and cache are in-memory: the caller is uid 1000 with
 * one entry). Every call must end with OK, INVALID_ARGUMENT, PERMISSION_DENIED or UNAVAILABLE — or INTERNAL only for a
 * message the protobuf decoder refuses ("parse binary", as grpc-go answers too); an INTERNAL "internal error" means
 * the handler threw something it did not map.
 */
export async function fuzzWorkloadApi(runs: number): Promise<FuzzReport> {
  const example = TrustDomain.parse('example.org');
  const ca = await TestCa.create(example);
  const leaf = await ca.createX509Svid('spiffe://example.org/web');
  const keys = await generateKeyPair('ec-p256');
  const jwk = KeyObject.from(keys.publicKey).export({ format: 'jwk' });
  const own = TrustBundle.create(example, { x509Authorities: [ca.certificate], jwtAuthorities: [['kid-1', jwk]] });
  const identity: WorkloadIdentity = {
    entryId: 'web',
    spiffeId: SpiffeId.parse('spiffe://example.org/web'),
    hint: '',
    federatesWith: [],
    x509Svid: { chain: leaf.chainDer(), privateKey: await leaf.privateKeyPkcs8() },
  };
  const cache = new OneEntryCache(own, identity, keys.privateKey);
  const service = new WorkloadApiHandler(new FixedAttestor(), cache, {
    now: () => NOW,
    logger: { debug: () => undefined, warn: () => undefined },
  });
  const router = new GrpcRouter({
    readMaxBytes: MAX_REQUEST_BYTES,
    checkCall: (call) => checkSecurityHeader(call.service, call.headers, CALLER),
  }).service(SpiffeWorkloadAPI, service.service());
  const values = createContextValues().set(PEER_CREDENTIALS, CALLER);
  const server = createServer();
  server.on('stream', (stream, headers) => router.handle(stream, headers, values));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  session.on('error', () => undefined);

  const token = await cache.fetchJwtSvid(identity, ['aud']);
  const audience = fc.oneof(mutatedText(['aud', 'spiffe://example.org/x'], 2), anyString);
  const svid = fc.oneof({ weight: 3, arbitrary: mutatedText([token], 3) }, { weight: 1, arbitrary: anyString });
  const spiffeId = fc.oneof(
    fc.constant(''),
    mutatedText(['spiffe://example.org/web', 'spiffe://example.org/other'], 2),
    anyString,
  );
  const encode =
    <S extends DescMessage>(schema: S) =>
    (init: Record<string, unknown>) =>
      toBinary(schema, create(schema, init as never));
  const message: fc.Arbitrary<{ method: string; bytes: Uint8Array }> = fc.oneof(
    fc
      .record({ audience: fc.array(audience, { maxLength: 4 }), spiffeId })
      .map((init) => ({ method: 'FetchJWTSVID', bytes: encode(JWTSVIDRequestSchema)(init) })),
    fc
      .record({ audience, svid })
      .map((init) => ({ method: 'ValidateJWTSVID', bytes: encode(ValidateJWTSVIDRequestSchema)(init) })),
    fc.constantFrom(
      { method: 'FetchX509SVID', bytes: encode(X509SVIDRequestSchema)({}) },
      { method: 'FetchX509Bundles', bytes: encode(X509BundlesRequestSchema)({}) },
      { method: 'FetchJWTBundles', bytes: encode(JWTBundlesRequestSchema)({}) },
    ),
  );
  const call: fc.Arbitrary<Call> = fc
    .tuple(
      message,
      fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) }),
      fc.oneof(
        { weight: 8, arbitrary: fc.constant('true') },
        { weight: 1, arbitrary: fc.constantFrom(undefined, 'TRUE', 'false', 'true, true', '') },
      ),
      fc.oneof(
        { weight: 8, arbitrary: fc.constant('ok' as const) },
        {
          weight: 1,
          arbitrary: fc.constantFrom('compressed' as const, 'short' as const, 'long' as const, 'raw' as const),
        },
      ),
      fc.nat(),
    )
    .chain(([{ method, bytes }, mutations, header, frame]) =>
      (mutations === 0 ? fc.constant(bytes) : mutatedBytes([bytes], mutations)).map((body): Call => {
        const framed =
          frame === 'raw'
            ? body
            : frame === 'compressed'
              ? envelope(body, 1)
              : envelope(
                  body,
                  0,
                  frame === 'short' ? Math.max(0, body.length - 1) : frame === 'long' ? body.length + 7 : body.length,
                );
        return { method, header, body: framed };
      }),
    );
  const outcomes = new Outcomes();
  try {
    return await runTarget(
      'workload-api',
      call,
      async (value) => {
        const { code, message: text } = await invoke(session, value);
        outcomes.add(`grpc ${code}`);
        if (DOCUMENTED_CODES.has(code)) return;
        // The router's own refusals, before the handler runs: a message the protobuf decoder refuses or a compressed
        // flag without an encoding (INTERNAL, as grpc-go answers), a missing or extra message (UNIMPLEMENTED).
        if (LIBRARY_REFUSAL.test(text) && (code === '13' || code === '12')) return;
        // An envelope announcing more than the agent reads (1 MiB), e.g. a message sent without its 5-byte prefix.
        if (OVERSIZED.test(text) && code === '8') return;
        throw new ContractViolation(`${value.method} answered gRPC status ${code} ${JSON.stringify(text)}`);
      },
      runs,
      outcomes,
    );
  } finally {
    session.close();
    server.close();
  }
}
