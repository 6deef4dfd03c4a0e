import { request } from 'node:https';
import { rootCertificates, type PeerCertificate } from 'node:tls';
import { peerCertificateChain, SpiffeError, type SpiffeId, type TrustBundle, verifyX509SvidSync } from '@sigil/spiffe';
import { FEDERATED_BUNDLE_LIMITS, parseFederatedBundle } from './federated-bundle-rules.js';
import type { FederationRelationship } from './federation-relationship-rules.js';

/** How long one fetch may take in all (connect, TLS handshake, response), in milliseconds. */
export const BUNDLE_FETCH_TIMEOUT_MS = 10_000;

/** How the endpoint of one relationship is authenticated: the trust anchors of its profile. */
export type BundleEndpointTrust =
  | {
      readonly profile: 'https_web';
      /** Extra PEM CA certificates trusted besides the system roots (`--federation-web-ca-file`). */
      readonly extraCaPem?: string;
    }
  | {
      readonly profile: 'https_spiffe';
      /** The stored bundle of the endpoint SPIFFE ID's trust domain (set by `bundle set` first, as in SPIRE). */
      readonly bundle: TrustBundle;
      readonly endpointSpiffeId: SpiffeId;
    };

/** A fetch that failed: `reason` is a short fixed word for metrics and log keys, the message says what went wrong. */
export class BundleFetchError extends Error {
  constructor(
    readonly reason: 'tls' | 'http' | 'size' | 'timeout' | 'network' | 'bundle' | 'trust' | 'store',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BundleFetchError';
  }
}

/**
 * Fetches a foreign trust domain's bundle from its bundle endpoint (SPIFFE_Federation.md §4-5): one `GET` of the
 * relationship's URL over TLS 1.2+, authenticated by the profile: `https_web` by the system roots (plus the extra
 * CAs) and the URL's host name; `https_spiffe` by the endpoint's X509-SVID, which must verify against the stored
 * bundle of its trust domain and carry exactly the relationship's `endpoint_spiffe_id` (host names are not checked,
 * §5.2.2). The answer must be 200 with at most {@link FEDERATED_BUNDLE_LIMITS}.maxTextLength bytes; redirects are
 * refused (§4.2: the endpoint is the URL itself); it is parsed and checked like `bundle set --format spiffe`.
 *
 * @throws BundleFetchError naming what failed.
 */
export async function fetchFederatedBundle(
  relationship: Pick<FederationRelationship, 'trustDomain' | 'bundleEndpointUrl'>,
  trust: BundleEndpointTrust,
  options: { timeoutMs?: number; now?: () => Date } = {},
): Promise<TrustBundle> {
  const text = await get(relationship.bundleEndpointUrl, trust, options.timeoutMs ?? BUNDLE_FETCH_TIMEOUT_MS, () =>
    (options.now ?? (() => new Date()))(),
  );
  try {
    return parseFederatedBundle(relationship.trustDomain, 'spiffe', text);
  } catch (error) {
    throw new BundleFetchError('bundle', `bundle endpoint answered an invalid bundle: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function get(url: string, trust: BundleEndpointTrust, timeoutMs: number, now: () => Date): Promise<string> {
  const maxBytes = FEDERATED_BUNDLE_LIMITS.maxTextLength;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (error: BundleFetchError): void => {
      if (settled) return;
      settled = true;
      req.destroy();
      reject(error);
    };
    const req = request(url, {
      method: 'GET',
      headers: { accept: 'application/json' },
      minVersion: 'TLSv1.2',
      // A connection of its own every time: the SPIFFE check runs in the handshake only.
      agent: false,
      ...tlsOptions(trust, now),
    });
    const timer = setTimeout(
      () => fail(new BundleFetchError('timeout', `bundle endpoint did not answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    timer.unref();
    req.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const tls = error.code?.startsWith('ERR_TLS') || /certificate|ssl|tls|spiffe|svid/i.test(error.message);
      fail(
        new BundleFetchError(
          tls ? 'tls' : 'network',
          `${tls ? 'bundle endpoint not authenticated' : 'bundle endpoint unreachable'}: ${error.message}`,
          { cause: error },
        ),
      );
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) {
        clearTimeout(timer);
        return fail(
          new BundleFetchError('http', `bundle endpoint answered a redirect (${status}); redirects are refused`),
        );
      }
      if (status !== 200) {
        clearTimeout(timer);
        return fail(new BundleFetchError('http', `bundle endpoint answered HTTP ${status}, expected 200`));
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxBytes) {
        clearTimeout(timer);
        return fail(tooLarge(maxBytes));
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) {
          clearTimeout(timer);
          fail(tooLarge(maxBytes));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        resolve(Buffer.concat(chunks).toString('utf8'));
      });
      res.on('error', (error) => {
        clearTimeout(timer);
        fail(new BundleFetchError('network', `bundle endpoint response failed: ${error.message}`, { cause: error }));
      });
    });
    req.end();
  });
}

function tooLarge(maxBytes: number): BundleFetchError {
  return new BundleFetchError('size', `bundle endpoint answer is larger than the ${maxBytes}-byte limit`);
}

function tlsOptions(trust: BundleEndpointTrust, now: () => Date): Record<string, unknown> {
  if (trust.profile === 'https_web') {
    // `ca` replaces Node's default roots, so the system roots are given back explicitly.
    return {
      rejectUnauthorized: true,
      ca: trust.extraCaPem === undefined ? [...rootCertificates] : [...rootCertificates, trust.extraCaPem],
    };
  }
  const { bundle, endpointSpiffeId } = trust;
  return {
    rejectUnauthorized: true,
    // OpenSSL validates the chain up to the stored bundle's authorities only; then the SPIFFE rules and the ID.
    ca: bundle.x509Pem(),
    // Node skips checkServerIdentity on a resumed session.
    session: undefined,
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      checkEndpointSvid(peerCertificateChain(cert), bundle, endpointSpiffeId, now()),
  };
}

/**
 * The `https_spiffe` check of the endpoint's certificate: an X509-SVID that verifies against `bundle` and whose
 * SPIFFE ID is exactly `expected`.
 *
 * @returns undefined when it passes, else the error that fails the handshake.
 */
export function checkEndpointSvid(
  chain: readonly Uint8Array[],
  bundle: TrustBundle,
  expected: SpiffeId,
  now: Date,
): Error | undefined {
  try {
    const verified = verifyX509SvidSync([...chain], bundle, { now });
    if (!verified.spiffeId.equals(expected)) {
      return new Error(`endpoint spiffe id ${verified.spiffeId.toString()} is not the expected ${expected.toString()}`);
    }
    return undefined;
  } catch (error) {
    if (error instanceof SpiffeError) return new Error(`endpoint x509 svid rejected: ${error.message}`);
    return error as Error;
  }
}
