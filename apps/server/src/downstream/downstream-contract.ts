import { createPublicKey, type KeyObject } from 'node:crypto';
import { isKeyType, keyTypeOfKeyObject } from '@sigil/pki';
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
  /** The upstream bundle's JWT authorities, with their expiry (absent from a server before this field). */
  readonly jwt_authorities: DownstreamJwtAuthorityBody[];
}

/** More tainted keys than a journal ever holds: a larger answer is not the upstream's. */
const MAX_TAINTED_AUTHORITIES = 1_000;
/** An X.509 authority ID is a hex key identifier; a JWT one a base64url key ID. */
export const AUTHORITY_ID = /^[A-Za-z0-9_-]{1,128}$/;

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

/**
 * `POST` on the upstream server's TLS port, same mTLS authentication as the CA route (SPIRE's
 * `PublishJWTAuthority`, formerly `PublishJWTKey`): a nested server publishes the public part of a new JWT key before
 * it signs with it; the upstream server adds it to the trust bundle (so every agent and nested server of the trust
 * domain gets it through the bundle paths) until it expires, and answers the bundle's JWT authorities now.
 */
export const DOWNSTREAM_JWT_AUTHORITY_PATH = '/downstream/v1/jwt-authority';

/** A JWT authority on the wire: SPIRE's `JWTKey` field names. */
export interface DownstreamJwtAuthorityBody {
  /** The `kid`: {@link AUTHORITY_ID}, as our own JWT keys' (32 base64url characters). */
  readonly key_id: string;
  /** SubjectPublicKeyInfo DER, base64: EC P-256, EC P-384 or RSA 2048 (the key types our JWT keys have). */
  readonly public_key: string;
  /** Unix seconds. */
  readonly expires_at: number;
}

/** The publication request body. */
export interface DownstreamJwtAuthorityRequestBody {
  readonly jwt_authority: DownstreamJwtAuthorityBody;
}

/** The publication response body: the upstream bundle's JWT authorities after the publication. */
export interface DownstreamJwtAuthorityResponseBody {
  readonly jwt_authorities: DownstreamJwtAuthorityBody[];
}

/**
 * How many unexpired JWT keys one downstream caller may have published at once: a nested server holds a prepared, an
 * active and a few old keys within one key lifetime, and each `localauthority jwt prepare` publishes another; 16
 * leaves room for that while bounding what one caller adds to every bundle of the trust domain.
 */
export const MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER = 16;
/** More JWT authorities than an upstream bundle holds (its own keys and its downstream callers'): not the upstream's. */
export const MAX_UPSTREAM_JWT_AUTHORITIES = 1_024;

/** A checked JWT authority: its kid, SubjectPublicKeyInfo DER and expiry. */
export interface SharedJwtAuthority {
  readonly kid: string;
  readonly publicKeyDer: Buffer;
  readonly notAfter: Date;
}

/**
 * Checks one JWT authority as sent on the wire (both sides: the upstream server checks what a downstream caller
 * publishes, a nested server what the upstream answers); throws naming the field that breaks the rule: `key_id` an
 * {@link AUTHORITY_ID}, `public_key` base64 SubjectPublicKeyInfo DER of a key type our JWT keys may have (EC P-256,
 * EC P-384, RSA 2048; the key itself is checked: a point on its curve), `expires_at` whole unix seconds.
 * `encoding`: `canonical` (what a caller publishes) refuses any other encoding of the key than the one Node exports;
 * `normalise` (what an upstream server answers, which may hold keys an older upstream stored as sent) takes the key
 * in that encoding, so that one odd entry does not make the whole answer fail.
 */
export function parseJwtAuthority(
  value: unknown,
  field: string,
  encoding: 'canonical' | 'normalise' = 'canonical',
): SharedJwtAuthority {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${field}: must be a JSON object`);
  }
  const record = value as Record<string, unknown>;
  const kid = record['key_id'];
  if (typeof kid !== 'string' || !AUTHORITY_ID.test(kid)) {
    throw new Error(`${field}.key_id: must be 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'`);
  }
  const publicKey = record['public_key'];
  if (typeof publicKey !== 'string' || !BASE64.test(publicKey) || publicKey.length > MAX_PUBLIC_KEY_BASE64) {
    throw new Error(`${field}.public_key: must be base64 SubjectPublicKeyInfo DER`);
  }
  const publicKeyDer = Buffer.from(publicKey, 'base64');
  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey({ key: publicKeyDer, format: 'der', type: 'spki' });
  } catch {
    throw new Error(`${field}.public_key: is not a SubjectPublicKeyInfo DER public key`);
  }
  const keyType = keyTypeOfKeyObject(keyObject);
  if (!isKeyType(keyType)) throw new Error(`${field}.public_key: ${keyType}`);
  // Stored and compared as bytes: only the one encoding Node exports (no trailing bytes, uncompressed point).
  const canonical = keyObject.export({ type: 'spki', format: 'der' });
  if (encoding === 'canonical' && !canonical.equals(publicKeyDer)) {
    throw new Error(`${field}.public_key: must be the canonical DER encoding of the key`);
  }
  const expiresAt = record['expires_at'];
  if (typeof expiresAt !== 'number' || !Number.isSafeInteger(expiresAt) || expiresAt <= 0) {
    throw new Error(`${field}.expires_at: must be unix seconds`);
  }
  return { kid, publicKeyDer: canonical, notAfter: new Date(expiresAt * 1000) };
}

/** A JWT authority as sent on the wire. */
export function toJwtAuthorityBody(authority: SharedJwtAuthority): DownstreamJwtAuthorityBody {
  return {
    key_id: authority.kid,
    public_key: authority.publicKeyDer.toString('base64'),
    expires_at: Math.floor(authority.notAfter.getTime() / 1000),
  };
}

/**
 * Checks the `jwt_authorities` of an upstream answer (the publication's or the authorities route's); undefined when
 * the field is absent (an upstream server from before JWT authorities were shared); throws naming what breaks it.
 */
export function parseDownstreamJwtAuthorities(body: unknown): SharedJwtAuthority[] | undefined {
  if (typeof body !== 'object' || body === null) throw new Error('response: must be a JSON object');
  const value = (body as Record<string, unknown>).jwt_authorities;
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new Error('jwt_authorities: must be an array');
  if (value.length > MAX_UPSTREAM_JWT_AUTHORITIES) {
    throw new Error(`jwt_authorities: at most ${MAX_UPSTREAM_JWT_AUTHORITIES} keys, got ${value.length}`);
  }
  const authorities = value.map((item: unknown, index) =>
    parseJwtAuthority(item, `jwt_authorities[${index}]`, 'normalise'),
  );
  const kids = new Set<string>();
  for (const { kid } of authorities) {
    if (kids.has(kid)) throw new Error(`jwt_authorities: key_id ${kid} is listed twice`);
    kids.add(kid);
  }
  return authorities;
}

/** An RSA 2048 SubjectPublicKeyInfo is 294 bytes; anything much longer is no key we take. */
const MAX_PUBLIC_KEY_BASE64 = 1_024;
