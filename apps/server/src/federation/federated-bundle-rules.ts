import { isCaCertificate } from '@sigil/pki';
import { SpiffeError, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { AppError } from '../common/errors.js';

/** The two forms `bundle set` takes, as SPIRE's `-format`: PEM certificates or a SPIFFE bundle (JWKS). */
export const FEDERATED_BUNDLE_FORMATS = ['pem', 'spiffe'] as const;
export type FederatedBundleFormat = (typeof FEDERATED_BUNDLE_FORMATS)[number];

/** What a foreign bundle may hold (README, Limits). */
export const FEDERATED_BUNDLE_LIMITS = {
  /** Characters of the PEM or JSON text (a bundle of a few roots and keys is a few KiB). */
  maxTextLength: 256 * 1024,
  maxX509Authorities: 64,
  maxJwtAuthorities: 64,
  /** `spiffe_refresh_hint` in seconds: at most a week (the column is a 32-bit integer). */
  maxRefreshHintSeconds: 7 * 24 * 3600,
} as const;

function invalid(message: string): AppError {
  return new AppError('invalid_argument', message);
}

/**
 * A foreign trust domain's name or SPIFFE ID (`example.org`, `spiffe://example.org`), by the one trust-domain rule
 * of `@sigil/spiffe`.
 *
 * @throws AppError `invalid_argument` naming `field` and the broken rule.
 */
export function parseFederatedTrustDomain(value: string, field = 'trust_domain'): TrustDomain {
  try {
    return TrustDomain.parse(value);
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`${field}: ${error.message}`);
    throw error;
  }
}

/**
 * Parses the bundle `bundle set` was given and checks it: the PEM or JWKS must parse by the SPIFFE bundle rules
 * (SPIFFE_Trust_Domain_and_Bundle.md §4: `use` `x509-svid` keys with one `x5c` certificate, `jwt-svid` keys with a
 * `kid`), every X.509 authority must be a CA certificate, the bundle must hold at least one authority, and the
 * counts stay within {@link FEDERATED_BUNDLE_LIMITS}.
 *
 * @throws AppError `invalid_argument` naming the broken rule.
 */
export function parseFederatedBundle(
  trustDomain: TrustDomain,
  format: FederatedBundleFormat,
  text: string,
): TrustBundle {
  const limits = FEDERATED_BUNDLE_LIMITS;
  if (text.length > limits.maxTextLength) {
    throw invalid(`bundle: ${text.length} characters, more than the ${limits.maxTextLength}-character limit`);
  }
  let bundle: TrustBundle;
  try {
    bundle = format === 'pem' ? TrustBundle.fromX509Pem(trustDomain, text) : TrustBundle.parseJwks(trustDomain, text);
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`bundle (${format}): ${error.message}`);
    throw error;
  }
  if (bundle.isEmpty()) throw invalid('bundle: holds no x509 or jwt authority (to stop trusting it, delete it)');
  const x509Count = bundle.x509Authorities.length;
  if (x509Count > limits.maxX509Authorities) {
    throw invalid(`bundle: ${x509Count} x509 authorities, more than the limit of ${limits.maxX509Authorities}`);
  }
  const jwtCount = bundle.jwtAuthorities.size;
  if (jwtCount > limits.maxJwtAuthorities) {
    throw invalid(`bundle: ${jwtCount} jwt authorities, more than the limit of ${limits.maxJwtAuthorities}`);
  }
  bundle.x509Authorities.forEach((certificate, index) => {
    if (!isCaCertificate(certificate)) {
      throw invalid(
        `bundle: x509 authority ${index} (${certificate.subject || 'empty subject'}) is not a ca certificate (basicConstraints cA=true)`,
      );
    }
  });
  const hint = bundle.refreshHintSeconds;
  if (hint !== undefined && (hint < 1 || hint > limits.maxRefreshHintSeconds)) {
    throw invalid(`bundle: spiffe_refresh_hint must be from 1 to ${limits.maxRefreshHintSeconds} seconds, got ${hint}`);
  }
  return bundle;
}
