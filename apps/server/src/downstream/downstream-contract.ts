/**
 * The downstream CA route between two Sigil servers of one trust domain (SPIRE's `SVID.NewDownstreamX509CA`): a
 * server whose CA is "upstream authority: sigil" sends a CSR for its CA key, authenticated over mTLS by the X509-SVID
 * of a downstream entry, and gets the signed CA certificate with the chain above it and the upstream trust bundle.
 * Both sides live in this app: the route in downstream/, the caller in ca/upstream-sigil.ts.
 */

/** `POST` on the upstream server's TLS port. */
export const DOWNSTREAM_X509_CA_PATH = '/downstream/v1/x509-ca';

/** The request body: SPIRE's field names. */
export interface DownstreamX509CaRequestBody {
  /** PKCS#10 CSR, base64 DER; only its public key is used. */
  readonly csr: string;
  /** Requested lifetime in seconds; absent or 0: the upstream's maximum (`downstream_ca_max_ttl`). */
  readonly preferred_ttl?: number;
}

/** The response body: SPIRE's field names, base64 DER certificates. */
export interface DownstreamX509CaResponseBody {
  /** The new CA certificate first, then the upstream's CA and its intermediates (never a root). */
  readonly ca_cert_chain: string[];
  /** The upstream trust bundle's X.509 authorities (roots). */
  readonly x509_authorities: string[];
  readonly expires_at: string;
}

/** A checked response: DER certificates. */
export interface DownstreamX509Ca {
  readonly caCertChainDer: Buffer[];
  readonly x509AuthoritiesDer: Buffer[];
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Checks a response body's shape; throws naming the first field that breaks it (the caller wraps the message).
 */
export function parseDownstreamX509CaResponse(body: unknown): DownstreamX509Ca {
  if (typeof body !== 'object' || body === null) throw new Error('response: must be a JSON object');
  const record = body as Record<string, unknown>;
  const certificates = (field: 'ca_cert_chain' | 'x509_authorities'): Buffer[] => {
    const value = record[field];
    if (!Array.isArray(value) || value.length === 0) throw new Error(`${field}: must be a non-empty array`);
    return value.map((item: unknown, index) => {
      if (typeof item !== 'string' || !BASE64.test(item)) throw new Error(`${field}[${index}]: must be base64 DER`);
      return Buffer.from(item, 'base64');
    });
  };
  return { caCertChainDer: certificates('ca_cert_chain'), x509AuthoritiesDer: certificates('x509_authorities') };
}

/**
 * `GET` on the upstream server's TLS port, same mTLS authentication as the CA route: the upstream server's bundle as
 * a nested server follows it, its X.509 authorities now and the authority IDs of its tainted keys (SPIRE's `spire`
 * upstream authority reads both from the upstream server, not from the agent; the Workload API carries no taint
 * marks). A nested server publishes those roots as its own, and moves to a new CA at once when a tainted key signed
 * its CA.
 */
export const DOWNSTREAM_AUTHORITIES_PATH = '/downstream/v1/authorities';

/** The response body. */
export interface DownstreamAuthoritiesResponseBody {
  /** The same list the agent sync carries as `tainted_authorities`. */
  readonly tainted_authorities: string[];
  /** The upstream bundle's X.509 authorities (roots), base64 DER, as in the CA route's answer. */
  readonly x509_authorities: string[];
}

/** More tainted keys than a journal ever holds: a larger answer is not the upstream's. */
const MAX_TAINTED_AUTHORITIES = 1_000;
/** An X.509 authority ID is a hex key identifier; a JWT one a base64url key ID. */
const AUTHORITY_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** Checks a tainted authorities response body; throws naming what breaks it. */
export function parseDownstreamAuthoritiesResponse(body: unknown): Set<string> {
  if (typeof body !== 'object' || body === null) throw new Error('response: must be a JSON object');
  const value = (body as Record<string, unknown>).tainted_authorities;
  if (!Array.isArray(value)) throw new Error('tainted_authorities: must be an array');
  if (value.length > MAX_TAINTED_AUTHORITIES) {
    throw new Error(`tainted_authorities: at most ${MAX_TAINTED_AUTHORITIES} authority IDs`);
  }
  return new Set(
    value.map((item: unknown, index) => {
      if (typeof item !== 'string' || !AUTHORITY_ID.test(item)) {
        throw new Error(`tainted_authorities[${index}]: must be an authority ID`);
      }
      return item.toLowerCase();
    }),
  );
}

/** Checks the `x509_authorities` of a tainted authorities response body's shape; throws naming what breaks it. */
export function parseDownstreamX509AuthoritiesResponse(body: unknown): Buffer[] {
  if (typeof body !== 'object' || body === null) throw new Error('response: must be a JSON object');
  const value = (body as Record<string, unknown>).x509_authorities;
  if (!Array.isArray(value) || value.length === 0) throw new Error('x509_authorities: must be a non-empty array');
  return value.map((item: unknown, index) => {
    if (typeof item !== 'string' || !BASE64.test(item)) {
      throw new Error(`x509_authorities[${index}]: must be base64 DER`);
    }
    return Buffer.from(item, 'base64');
  });
}
