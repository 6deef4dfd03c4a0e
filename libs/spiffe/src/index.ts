export { SpiffeError, type SpiffeErrorCode } from './errors.js';
export { TrustDomain } from './trust-domain.js';
export { SpiffeId } from './spiffe-id.js';
export { utf8LongerThan } from './utf8.js';
export type { JwtAuthorityKey } from './jwk.js';
export { jwtAlgorithmOf } from './jwk.js';
export { TrustBundle, type BundleSource, type SpiffeJwk, type SpiffeJwks, type TrustBundleInit } from './bundle.js';
export { TrustBundleSet } from './bundle-set.js';
export { MAX_X509_SVID_CHAIN_LENGTH, peerCertificateChain } from './peer-chain.js';
export {
  certificateChainDer,
  certificateSummary,
  idFromCertificate,
  parseX509Svid,
  verifyX509Svid,
  verifyX509SvidSync,
  type CertificateChainInput,
  type CertificateSummary,
  type VerifiedX509Svid,
  type VerifyX509SvidOptions,
  type X509Svid,
} from './x509-svid.js';
export {
  parseAndValidateJwtSvid,
  parseInsecureJwtSvid,
  signJwtSvid,
  type JwtSvid,
  type JwtSvidAlgorithm,
  type SignJwtSvidParams,
  type ValidateJwtSvidOptions,
} from './jwt-svid.js';
/** The one OBJECT IDENTIFIER decoder, for libs/pki's DER reader too. */
export {
  type OidProblem,
  CertificateFormatError,
  chainIssuerIds,
  decodeOidContent,
  nodeCertificateFromDer,
} from './certificate.js';
/** The one @peculiar/x509 setup, loaded on first use, for libs/pki too. */
export { loadX509 } from './lazy-modules.js';
/** The one PEM codec (RFC 7468, strict), for libs/pki too. */
export { decodePemBlocks, encodePem, encodePemBlock, isPemLabel, type PemBlock } from './pem.js';
