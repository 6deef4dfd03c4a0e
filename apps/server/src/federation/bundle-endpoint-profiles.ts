/**
 * The bundle endpoint profiles of SPIFFE_Federation.md §5: `https_spiffe` authenticates the endpoint by an
 * X509-SVID of its trust domain, `https_web` by a WebPKI certificate. No imports: the CLI's client commands load it.
 */
export const BUNDLE_ENDPOINT_PROFILES = ['https_spiffe', 'https_web'] as const;
export type BundleEndpointProfile = (typeof BUNDLE_ENDPOINT_PROFILES)[number];
