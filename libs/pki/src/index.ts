export { PkiError, type PkiErrorCode } from './errors.js';
export {
  DEFAULT_KEY_TYPE,
  exportPrivateKeyPkcs8,
  exportPublicKeySpki,
  generateKeyPair,
  generateSigningKey,
  importPrivateKeyPkcs8,
  importPublicKeySpki,
  isKeyType,
  keyTypeOf,
  keyTypeOfKeyObject,
  signingAlgorithmFor,
  toKeyObject,
  type GeneratedSigningKey,
  type KeyType,
  type SigningAlgorithm,
} from './keys.js';
export { privateKeyDerOf, spkiDerOf } from './spki.js';
export {
  PEM_LABEL,
  certificatesToPem,
  pemBlocks,
  privateKeyFromPem,
  privateKeyToPem,
  toPem,
  type PemBlock,
} from './pem.js';
export { certificatesFromPem } from './pem-certificates.js';
export {
  DEFAULT_CA_TTL_SECONDS,
  createIntermediateCa,
  createRootCa,
  loadCaFromPem,
  type CaCertificate,
  type CaCredential,
  type CreateIntermediateCaParams,
  type CreateRootCaParams,
  type LoadedCa,
} from './ca.js';
export {
  SVID_BACKDATE_SECONDS,
  generateSerialNumber,
  subjectKeyIdentifier,
  validateDnsName,
  validateDnsNames,
} from './svid-profile.js';
export { isCaCertificate } from './signing-ca.js';
export {
  createCsr,
  createCsrFast,
  type CreateCsrFastParams,
  type CreateCsrParams,
  type CreatedCsr,
} from './csr-builder.js';
export { CSR_MAX_BYTES, parseCsrFast, parseCsrFastAsync, type FastParsedCsr } from './csr-parser.js';
export { X509SvidSigner, type FastSvidParams, type X509SvidSignerOptions } from './svid-signer.js';
export { requestedIdProblem, signCsrs, SpiffeIdCache, type CsrSigningOutcome, type CsrToSign } from './csr-signing.js';
export { CsrSigningPool, type SigningCaKey } from './signing-pool.js';
