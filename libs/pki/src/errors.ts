/**
 * Stable error codes of `@sigil/pki`. Callers branch on `code`, never on the message text.
 *
 * - `ERR_PKI_INVALID_INPUT`: an argument breaks a documented rule (TTL, DNS name, serial number, SPIFFE ID, …).
 * - `ERR_DER_INVALID`: a DER encoding is malformed (truncated, non-minimal length, trailing data, wrong tag).
 * - `ERR_PEM_INVALID`: a PEM text is malformed (unterminated block, bad base64, wrong or mismatched label).
 * - `ERR_KEY_INVALID`: a key is malformed, of an unsupported type, or not usable for the operation.
 * - `ERR_CSR_INVALID`: a PKCS#10 certificate signing request is malformed or its self-signature does not verify.
 * - `ERR_CERTIFICATE_INVALID`: an X.509 certificate is malformed.
 * - `ERR_CA_INVALID`: a certificate cannot act as a signing CA (not a CA, no keyCertSign, expired, key mismatch).
 */
export type PkiErrorCode =
  | 'ERR_PKI_INVALID_INPUT'
  | 'ERR_DER_INVALID'
  | 'ERR_PEM_INVALID'
  | 'ERR_KEY_INVALID'
  | 'ERR_CSR_INVALID'
  | 'ERR_CERTIFICATE_INVALID'
  | 'ERR_CA_INVALID';

/**
 * The one error type of `@sigil/pki`. The message states the broken rule and the field, in lowercase without a final
 * period; a wrapped library error is kept in `cause`.
 */
export class PkiError extends Error {
  /** Stable code to branch on. */
  readonly code: PkiErrorCode;

  constructor(code: PkiErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PkiError';
    this.code = code;
  }
}

/** The message of any thrown value, for wrapping third-party errors. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
