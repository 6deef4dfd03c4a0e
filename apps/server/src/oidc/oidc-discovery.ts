import { jwtAlgorithmOf, type TrustBundle } from '@sigil/spiffe';
import { requestPath } from '../common/path-listener.js';
import { type OidcDiscoveryConfig } from '../config.js';

/** The discovery document's path (OpenID Connect Discovery 1.0 §4). */
export const OPENID_CONFIGURATION_PATH = '/.well-known/openid-configuration';
/** The JWKS path, as SPIRE's oidc-discovery-provider serves it. */
export const OIDC_KEYS_PATH = '/keys';

/** True for the paths the OIDC discovery listener serves (and the TLS port does not). */
export function isOidcDiscoveryPath(url: string | undefined): boolean {
  const path = requestPath(url);
  return path === OPENID_CONFIGURATION_PATH || path === OIDC_KEYS_PATH;
}

/** The OIDC discovery document, as SPIRE's oidc-discovery-provider writes it. */
export interface OpenIdConfiguration {
  readonly issuer: string;
  readonly jwks_uri: string;
  readonly authorization_endpoint: string;
  readonly response_types_supported: readonly string[];
  readonly subject_types_supported: readonly string[];
  readonly id_token_signing_alg_values_supported: readonly string[];
}

/** One public JWT authority key for OIDC relying parties: `use: "sig"` (not the bundle's `jwt-svid`), `kid`, `alg`. */
export type OidcJwk = Readonly<Record<string, string>> & { readonly kid: string; readonly use: 'sig' };

/**
 * The discovery document: `issuer` is `jwt_issuer` (the `iss` of every JWT-SVID), `jwks_uri` the configured one.
 * The fields OIDC requires but a JWT-SVID issuer has no use for are answered as SPIRE's provider does.
 */
export function openIdConfiguration(config: OidcDiscoveryConfig): OpenIdConfiguration {
  return {
    issuer: config.issuer,
    jwks_uri: config.jwksUri,
    authorization_endpoint: '',
    response_types_supported: ['id_token'],
    subject_types_supported: [],
    id_token_signing_alg_values_supported: ['RS256', 'ES256', 'ES384'],
  };
}

/**
 * The JWKS of our JWT authorities (prepared, active and old keys alike, as the bundle publishes them, so a token
 * signed just after a rotation validates): public members only, with `kid`, `use: "sig"` and `alg`.
 */
export function oidcJwks(bundle: TrustBundle): { keys: OidcJwk[] } {
  return {
    keys: [...bundle.jwtAuthorities].map(([kid, key]) => {
      const alg = jwtAlgorithmOf(key);
      return { ...key, kid, use: 'sig' as const, ...(alg !== undefined && { alg }) };
    }),
  };
}
