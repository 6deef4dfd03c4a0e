import { type BundleSource, type JwtSvid, parseAndValidateJwtSvid } from '@sigil/spiffe';
import { WorkloadApiError } from './errors.js';

/** Options of {@link validateBearerJwtSvid}. */
export interface ValidateBearerOptions {
  /** The instant the token must be valid at; default: now. */
  readonly now?: Date;
}

// RFC 6750 §2.1: `Bearer` (case-insensitive), then one or more spaces, then a token68. A compact JWS is base64url
// parts joined by dots, all within token68's alphabet.
const BEARER = /^bearer(?: +(.*))?$/i;
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

function invalid(message: string): WorkloadApiError {
  return new WorkloadApiError('ERR_BEARER_INVALID', message);
}

/**
 * Validates the JWT-SVID of an incoming `Authorization: Bearer <token>` header offline, against the JWT bundles of
 * `source` (a `JwtSource`, or any `BundleSource`): the signature by a key of the bundle of the token's trust domain,
 * `alg`, `kid`, expiry and `audience` (JWT-SVID.md §4), with `parseAndValidateJwtSvid`.
 *
 * @param authorizationHeader The header's value as Node gives it (`req.headers.authorization`).
 * @throws WorkloadApiError `ERR_BEARER_INVALID` when the header is missing, repeated or not a bearer token;
 * SpiffeError `ERR_JWT_SVID_INVALID` or `ERR_BUNDLE_NOT_FOUND` when the token does not validate.
 *
 * @example
 * ```ts
 * const svid = await validateBearerJwtSvid(req.headers.authorization, jwtSource, 'spiffe://example.org/api');
 * console.log(svid.spiffeId.toString());
 * ```
 */
export async function validateBearerJwtSvid(
  authorizationHeader: string | readonly string[] | undefined,
  source: BundleSource,
  audience: string | readonly string[],
  options: ValidateBearerOptions = {},
): Promise<JwtSvid> {
  if (authorizationHeader === undefined || authorizationHeader === '') {
    throw invalid('authorization header is missing');
  }
  if (typeof authorizationHeader !== 'string') throw invalid('authorization header must appear once');
  const match = BEARER.exec(authorizationHeader.trim());
  if (match === null) throw invalid('authorization header must use the bearer scheme');
  const token = match[1] ?? '';
  if (token === '') throw invalid('bearer token is empty');
  if (!TOKEN68.test(token)) throw invalid('bearer token has characters outside the token68 alphabet');
  return parseAndValidateJwtSvid(token, source, audience, options.now === undefined ? {} : { now: options.now });
}
