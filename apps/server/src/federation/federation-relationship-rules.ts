import { SpiffeError, SpiffeId, type TrustDomain } from '@sigil/spiffe';
import { BUNDLE_ENDPOINT_PROFILES, type BundleEndpointProfile } from '../config.js';
import { AppError } from '../common/errors.js';
import { parseFederatedTrustDomain } from './federated-bundle-rules.js';

/** Longest bundle endpoint URL accepted. */
export const MAX_BUNDLE_ENDPOINT_URL_LENGTH = 2048;

/** A federation relationship as checked: what the table stores. */
export interface FederationRelationship {
  readonly trustDomain: TrustDomain;
  readonly bundleEndpointUrl: string;
  readonly bundleEndpointProfile: BundleEndpointProfile;
  /** The SPIFFE ID the `https_spiffe` endpoint's certificate must carry; absent for `https_web`. */
  readonly endpointSpiffeId?: SpiffeId;
}

export interface FederationRelationshipInput {
  readonly trust_domain: string;
  readonly bundle_endpoint_url: string;
  readonly bundle_endpoint_profile: string;
  readonly endpoint_spiffe_id?: string | undefined;
}

function invalid(message: string): AppError {
  return new AppError('invalid_argument', message);
}

/**
 * Checks a relationship (SPIRE's `federation create` rules): a foreign trust domain (not ours), an `https://` URL with
 * a host and no credentials or fragment (SPIFFE_Federation.md §4 serves over HTTPS only), a known profile, and a
 * SPIFFE ID exactly when the profile is `https_spiffe`.
 *
 * @throws AppError `invalid_argument` naming the field and the broken rule.
 */
export function parseFederationRelationship(input: FederationRelationshipInput): FederationRelationship {
  const trustDomain = parseFederatedTrustDomain(input.trust_domain);
  const text = input.bundle_endpoint_url;
  if (text.length > MAX_BUNDLE_ENDPOINT_URL_LENGTH) {
    throw invalid(`bundle_endpoint_url: longer than ${MAX_BUNDLE_ENDPOINT_URL_LENGTH} characters`);
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid(`bundle_endpoint_url: not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'https:' || url.hostname === '') {
    throw invalid('bundle_endpoint_url: must be an https:// URL with a host');
  }
  if (url.username !== '' || url.password !== '' || url.hash !== '') {
    throw invalid('bundle_endpoint_url: must not hold credentials or a fragment');
  }
  const profile = input.bundle_endpoint_profile;
  if (!(BUNDLE_ENDPOINT_PROFILES as readonly string[]).includes(profile)) {
    throw invalid(`bundle_endpoint_profile: must be one of ${BUNDLE_ENDPOINT_PROFILES.join(', ')}`);
  }
  const base = { trustDomain, bundleEndpointUrl: url.href, bundleEndpointProfile: profile as BundleEndpointProfile };
  if (profile === 'https_web') {
    if (input.endpoint_spiffe_id !== undefined) {
      throw invalid('endpoint_spiffe_id: only for the https_spiffe profile');
    }
    return base;
  }
  if (input.endpoint_spiffe_id === undefined) throw invalid('endpoint_spiffe_id: required by the https_spiffe profile');
  try {
    return { ...base, endpointSpiffeId: SpiffeId.parse(input.endpoint_spiffe_id) };
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`endpoint_spiffe_id: ${error.message}`);
    throw error;
  }
}
