/**
 * Stable error codes of `@sigil/spiffe`. Callers branch on `code`, never on the message text.
 *
 * - `ERR_SPIFFE_ID_INVALID`: a string or path breaks a rule of the SPIFFE ID standard (SPIFFE-ID.md §2).
 * - `ERR_TRUST_DOMAIN_INVALID`: a trust domain name breaks a rule of SPIFFE-ID.md §2.1.
 * - `ERR_X509_SVID_INVALID`: an X.509-SVID breaks a rule of X509-SVID.md or fails path validation.
 * - `ERR_JWT_SVID_INVALID`: a JWT-SVID breaks a rule of JWT-SVID.md or fails signature validation.
 * - `ERR_BUNDLE_INVALID`: a trust bundle breaks a rule of SPIFFE_Trust_Domain_and_Bundle.md §4.
 * - `ERR_BUNDLE_NOT_FOUND`: no bundle is known for the trust domain asked for.
 */
export type SpiffeErrorCode =
  | 'ERR_SPIFFE_ID_INVALID'
  | 'ERR_TRUST_DOMAIN_INVALID'
  | 'ERR_X509_SVID_INVALID'
  | 'ERR_JWT_SVID_INVALID'
  | 'ERR_BUNDLE_INVALID'
  | 'ERR_BUNDLE_NOT_FOUND';

/**
 * The one error type thrown by `@sigil/spiffe`. The message states the broken rule (lowercase, no final period);
 * an underlying error, if any, is kept in `cause`.
 */
export class SpiffeError extends Error {
  /** Stable machine-readable code. */
  readonly code: SpiffeErrorCode;

  constructor(code: SpiffeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpiffeError';
    this.code = code;
  }
}

/** Quotes untrusted input for an error message, shortened so a huge input cannot flood logs. */
export function quote(value: string, max = 80): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}
