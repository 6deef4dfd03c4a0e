import type { JWTPayload } from 'jose';
import type { KeyObject, webcrypto } from 'node:crypto';
import type { BundleSource } from './bundle.js';
import { SpiffeError, quote } from './errors.js';
import { loadJose } from './lazy-modules.js';
import { SpiffeId } from './spiffe-id.js';

/** The signature algorithms JWT-SVID.md §2.1 allows. */
export type JwtSvidAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'ES256' | 'ES384' | 'ES512' | 'PS256' | 'PS384' | 'PS512';

const ALGORITHMS: readonly JwtSvidAlgorithm[] = [
  'RS256',
  'RS384',
  'RS512',
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
];
const REGISTERED_CLAIMS = ['sub', 'aud', 'exp', 'iat', 'iss'];

/** A validated JWT-SVID (JWT-SVID.md §3). */
export interface JwtSvid {
  /** The `sub` claim. */
  readonly spiffeId: SpiffeId;
  /** The `aud` claim, always as a list. */
  readonly audience: readonly string[];
  /** The `exp` claim. */
  readonly expiry: Date;
  /** The `iat` claim, if present. */
  readonly issuedAt?: Date;
  /** Every claim of the token. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** The compact JWS itself. */
  readonly token: string;
}

/** Parameters of `signJwtSvid`. */
export interface SignJwtSvidParams {
  readonly spiffeId: SpiffeId;
  /** At least one audience (`aud`). */
  readonly audience: readonly string[];
  readonly expiresAt: Date;
  /** `iat`; defaults to the current time. */
  readonly issuedAt?: Date;
  readonly privateKey: webcrypto.CryptoKey | KeyObject;
  /** The key ID published with the public key in the bundle; SPIFFE clients need it on every token. */
  readonly kid: string;
  /** Defaults to ES256, SPIRE's default. */
  readonly alg?: JwtSvidAlgorithm;
  /** `iss`, when the issuer is configured (SPIRE's `jwt_issuer`, for OIDC consumers); absent: no `iss`. */
  readonly issuer?: string;
  /** Further claims; they cannot replace sub, aud, exp, iat or iss. */
  readonly extraClaims?: Readonly<Record<string, unknown>>;
}

/** Options of `parseAndValidateJwtSvid`. */
export interface ValidateJwtSvidOptions {
  /** The instant at which the token must be valid; defaults to the current time. */
  readonly now?: Date;
}

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError('ERR_JWT_SVID_INVALID', message, cause === undefined ? undefined : { cause });
}

function isAlgorithm(alg: unknown): alg is JwtSvidAlgorithm {
  return typeof alg === 'string' && (ALGORITHMS as readonly string[]).includes(alg);
}

/**
 * Shows a JSON value of an untrusted token in a message: a string quoted, another type by name. `String()` would
 * throw on `{"toString":null}` and show `["JWT"]` as `JWT`; JSON.stringify would overflow on deep nesting.
 */
function shown(value: unknown): string {
  if (typeof value === 'string') return quote(value);
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}

function checkDate(value: unknown, field: string): Date {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw invalid(`${field} must be a valid date`);
  return value;
}

function seconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

/**
 * Signs a JWT-SVID (JWT-SVID.md): header `{ alg, kid, typ: "JWT" }`, claims `sub`, `aud` (a string when there is
 * one audience, as SPIRE emits it), `exp`, `iat` and `iss` when an issuer is given, plus `extraClaims`.
 *
 * @throws SpiffeError `ERR_JWT_SVID_INVALID` naming the bad parameter, or when the key cannot sign with `alg`.
 */
export async function signJwtSvid(params: SignJwtSvidParams): Promise<string> {
  const { spiffeId, audience, kid, extraClaims = {} } = params;
  const alg = params.alg ?? 'ES256';
  if (!(spiffeId instanceof SpiffeId)) throw invalid('spiffeId must be a parsed SpiffeId');
  if (!Array.isArray(audience) || audience.length === 0) throw invalid('audience must list at least one value');
  if (!audience.every((value) => typeof value === 'string' && value.length > 0)) {
    throw invalid('audience values must be non-empty strings');
  }
  if (typeof kid !== 'string' || kid.length === 0) throw invalid('kid must be a non-empty string');
  if (!isAlgorithm(alg)) throw invalid(`alg must be one of ${ALGORITHMS.join(', ')}, got ${quote(String(alg))}`);
  const expiresAt = checkDate(params.expiresAt, 'expiresAt');
  const issuedAt = checkDate(params.issuedAt ?? new Date(), 'issuedAt');
  if (seconds(expiresAt) <= seconds(issuedAt)) throw invalid('expiresAt must be at least one second after issuedAt');
  const overridden = Object.keys(extraClaims).filter((claim) => REGISTERED_CLAIMS.includes(claim));
  if (overridden.length > 0) throw invalid(`extraClaims must not set ${overridden.join(', ')}`);
  if (params.issuer !== undefined && (typeof params.issuer !== 'string' || params.issuer === '')) {
    throw invalid('issuer must be a non-empty string when set');
  }

  const { SignJWT } = loadJose();
  try {
    const jwt = new SignJWT({ ...extraClaims });
    if (params.issuer !== undefined) jwt.setIssuer(params.issuer);
    return await jwt
      .setProtectedHeader({ alg, kid, typ: 'JWT' })
      .setSubject(spiffeId.toString())
      .setAudience(audience.length === 1 ? (audience[0] as string) : [...audience])
      .setExpirationTime(seconds(expiresAt))
      .setIssuedAt(seconds(issuedAt))
      .sign(params.privateKey);
  } catch (error) {
    throw invalid(`cannot sign with alg ${alg}: ${(error as Error).message}`, error);
  }
}

function expectedAudiences(audience: string | readonly string[]): readonly string[] {
  const list = typeof audience === 'string' ? [audience] : audience;
  if (!Array.isArray(list) || list.length === 0 || !list.every((value) => typeof value === 'string' && value !== '')) {
    throw invalid('expected audience must be a non-empty string or a non-empty list of them');
  }
  return list;
}

interface Unverified {
  readonly alg: JwtSvidAlgorithm;
  readonly kid: string | undefined;
  readonly claims: JWTPayload;
  readonly spiffeId: SpiffeId;
  readonly audience: readonly string[];
  readonly expiry: Date;
  readonly exp: number;
}

/**
 * A NumericDate claim (RFC 7519 §2) as a Date, undefined when absent. A non-number, or a number of seconds outside
 * the range of dates (whose Date would be invalid and throw on `toISOString`), is refused.
 */
function numericDate(claims: JWTPayload, claim: 'exp' | 'nbf' | 'iat'): Date | undefined {
  const value = claims[claim];
  if (value === undefined) return undefined;
  const date = typeof value === 'number' ? new Date(value * 1000) : undefined;
  if (date === undefined || Number.isNaN(date.getTime())) {
    throw invalid(`token ${claim} claim must be a time (seconds since the epoch) within the range of dates`);
  }
  return date;
}

/** The checks that need no key: JOSE header (JWT-SVID.md §2) and required claims (§3), on the unverified token. */
function decodeUnverified(token: string): Unverified {
  if (typeof token !== 'string' || token.split('.').length !== 3) {
    throw invalid('token must be a compact jws (three base64url parts separated by dots)');
  }
  const { decodeJwt, decodeProtectedHeader } = loadJose();
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (error) {
    throw invalid('token header is not valid base64url json', error);
  }
  // JWT-SVID.md §2.1 and §4: check the algorithm before anything else; `none` and HMAC are never accepted.
  if (!isAlgorithm(header.alg)) {
    throw invalid(`token alg ${shown(header.alg)} is not allowed (allowed: ${ALGORITHMS.join(', ')})`);
  }
  if (header.typ !== undefined && header.typ !== 'JWT' && header.typ !== 'JOSE') {
    throw invalid(`token typ ${shown(header.typ)} must be JWT or JOSE`);
  }
  if (header.kid !== undefined && typeof header.kid !== 'string') throw invalid('token header kid must be a string');
  let claims: JWTPayload;
  try {
    claims = decodeJwt(token);
  } catch (error) {
    throw invalid('token payload is not a json object', error);
  }
  if (claims.sub === undefined) throw invalid('token must have a sub claim');
  let spiffeId: SpiffeId;
  try {
    spiffeId = SpiffeId.parse(claims.sub);
  } catch (error) {
    throw invalid(`token sub claim is not a spiffe id: ${(error as Error).message}`, error);
  }
  if (claims.aud === undefined) throw invalid('token must have an aud claim');
  const audience = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
  if (!Array.isArray(audience) || audience.length === 0 || !audience.every((value) => typeof value === 'string')) {
    throw invalid('token aud claim must be a string or a non-empty list of strings');
  }
  if (claims.exp === undefined) throw invalid('token must have an exp claim');
  if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) throw invalid('token exp claim must be a number');
  const expiry = numericDate(claims, 'exp') as Date;
  numericDate(claims, 'nbf');
  numericDate(claims, 'iat');
  return { alg: header.alg, kid: header.kid, claims, spiffeId, audience, expiry, exp: claims.exp };
}

function checkTimeAndAudience(decoded: Unverified, expected: readonly string[], now: Date): void {
  // Zero tolerance: SVIDs are short-lived and renewed at half their lifetime, so skew has ample room already.
  if (seconds(now) >= decoded.exp) {
    throw invalid(`token expired at ${decoded.expiry.toISOString()} (now is ${now.toISOString()})`);
  }
  if (typeof decoded.claims.nbf === 'number' && decoded.claims.nbf > seconds(now)) {
    throw invalid(`token is not valid before ${new Date(decoded.claims.nbf * 1000).toISOString()}`);
  }
  if (!expected.some((value) => decoded.audience.includes(value))) {
    throw invalid(
      `token audience ${JSON.stringify(decoded.audience)} does not contain the expected audience ` +
        JSON.stringify(expected.length === 1 ? expected[0] : expected),
    );
  }
}

function toJwtSvid(decoded: Unverified, token: string): JwtSvid {
  const { claims } = decoded;
  return {
    spiffeId: decoded.spiffeId,
    audience: decoded.audience,
    expiry: decoded.expiry,
    ...(typeof claims.iat === 'number' ? { issuedAt: new Date(claims.iat * 1000) } : {}),
    claims: { ...claims },
    token,
  };
}

/**
 * Validates a JWT-SVID (JWT-SVID.md §4): the `alg` is one of RS/ES/PS 256–512 (`none` and HS* are rejected first),
 * `kid` names a JWT authority in the bundle of the `sub`'s trust domain, the signature verifies, `sub` is a SPIFFE
 * ID, `aud` and `exp` are present, the token has not expired at `now` (no clock tolerance), and `aud` contains the
 * expected audience (any one of them when a list is given, as go-spiffe does).
 *
 * @throws SpiffeError `ERR_JWT_SVID_INVALID` naming the broken rule; `ERR_BUNDLE_NOT_FOUND` when `source` has no
 * bundle for the `sub`'s trust domain.
 */
export async function parseAndValidateJwtSvid(
  token: string,
  source: BundleSource,
  audience: string | readonly string[],
  options: ValidateJwtSvidOptions = {},
): Promise<JwtSvid> {
  const expected = expectedAudiences(audience);
  const now = checkDate(options.now ?? new Date(), 'now');
  const decoded = decodeUnverified(token);
  if (decoded.kid === undefined || decoded.kid === '') throw invalid('token header must have a kid');
  const trustDomain = decoded.spiffeId.trustDomain;
  const jwk = source.getBundleForTrustDomain(trustDomain).findJwtAuthority(decoded.kid);
  if (jwk === undefined) {
    throw invalid(`no jwt authority with kid ${quote(decoded.kid)} in the bundle of ${trustDomain.name}`);
  }

  const { errors, importJWK, jwtVerify } = loadJose();
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    // The bundle keeps keys without `use`, which jose would otherwise check against its own vocabulary.
    key = await importJWK({ ...jwk }, decoded.alg);
  } catch (error) {
    throw invalid(`jwt authority ${quote(decoded.kid)} cannot verify alg ${decoded.alg}`, error);
  }
  try {
    await jwtVerify(token, key, { algorithms: [decoded.alg], currentDate: now, clockTolerance: 0 });
  } catch (error) {
    if (error instanceof errors.JWSSignatureVerificationFailed) throw invalid('token signature is invalid', error);
    // Expiry and not-before failures get the same messages as the insecure path, from checkTimeAndAudience.
    const timeFailure =
      error instanceof errors.JWTExpired ||
      (error instanceof errors.JWTClaimValidationFailed && error.claim === 'nbf' && error.reason === 'check_failed');
    if (!timeFailure) {
      throw invalid(
        `token cannot be verified with jwt authority ${quote(decoded.kid)}: ${(error as Error).message}`,
        error,
      );
    }
  }
  checkTimeAndAudience(decoded, expected, now);
  return toJwtSvid(decoded, token);
}

/**
 * Parses a JWT-SVID and checks its header, claims, expiry and audience exactly as `parseAndValidateJwtSvid` does,
 * but WITHOUT verifying the signature. Only for tokens already authenticated by other means.
 *
 * @throws SpiffeError `ERR_JWT_SVID_INVALID` naming the broken rule.
 */
export function parseInsecureJwtSvid(
  token: string,
  audience: string | readonly string[],
  options: ValidateJwtSvidOptions = {},
): JwtSvid {
  const expected = expectedAudiences(audience);
  const now = checkDate(options.now ?? new Date(), 'now');
  const decoded = decodeUnverified(token);
  checkTimeAndAudience(decoded, expected, now);
  return toJwtSvid(decoded, token);
}
