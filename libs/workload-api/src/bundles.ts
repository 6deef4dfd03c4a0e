import { readFile } from 'node:fs/promises';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';

function trustDomainOf(trustDomain: TrustDomain | string): TrustDomain {
  return typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
}

/**
 * Loads the X.509 authorities of `trustDomain` from a PEM file of `CERTIFICATE` blocks (go-spiffe
 * `x509bundle.Load`), e.g. the output of `sigil-server bundle show --format pem`. The bundle is a `BundleSource`
 * for `verifyX509Svid` and {@link createTlsClientOptions}. To parse PEM already in memory
 * (`x509bundle.Parse`), use `TrustBundle.fromX509Pem`.
 *
 * Every certificate in the file is trusted as given (as go-spiffe does): load only your trust domain's CA certificates.
 *
 * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID` for a bad trust domain, `ERR_BUNDLE_INVALID` for a file that is not
 * strict PEM of certificates; the file system's error when the file cannot be read.
 */
export async function loadX509Bundle(trustDomain: TrustDomain | string, path: string): Promise<TrustBundle> {
  const td = trustDomainOf(trustDomain);
  return TrustBundle.fromX509Pem(td, await readFile(path, 'utf8'));
}

/**
 * Loads the JWT authorities of `trustDomain` from a JWKS file (go-spiffe `jwtbundle.Load`), e.g. the output of
 * `sigil-server bundle show --format spiffe`; a `BundleSource` for `parseAndValidateJwtSvid` and
 * `validateBearerJwtSvid`. To parse JWKS already in memory (`jwtbundle.Parse`), use `TrustBundle.parseJwks`.
 *
 * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID` or `ERR_BUNDLE_INVALID`; the file system's error when the file
 * cannot be read.
 */
export async function loadJwtBundle(trustDomain: TrustDomain | string, path: string): Promise<TrustBundle> {
  const td = trustDomainOf(trustDomain);
  return TrustBundle.parseJwks(td, await readFile(path));
}
