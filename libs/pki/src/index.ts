export { PkiError, type PkiErrorCode } from './errors.js';
export {
  DEFAULT_KEY_TYPE,
  exportPrivateKeyPkcs8,
  exportPublicKeySpki,
  generateKeyPair,
  importPrivateKeyPkcs8,
  importPublicKeySpki,
  keyTypeOf,
  signingAlgorithmFor,
  toKeyObject,
  type KeyType,
  type SigningAlgorithm,
} from './keys.js';
export {
  PEM_LABEL,
  certificatesFromPem,
  certificatesToPem,
  pemBlocks,
  privateKeyFromPem,
  privateKeyToPem,
  toPem,
  type PemBlock,
} from './pem.js';
export { createCsr, parseCsr, type CreateCsrParams, type CreatedCsr, type ParsedCsr } from './csr.js';
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
export { buildX509SvidReference, type SigningCa, type X509SvidParams } from './x509-svid.js';
export { createCsrFast, type CreateCsrFastParams } from './fast/csr-builder.js';
export { CSR_MAX_BYTES, parseCsrFast, parseCsrFastAsync, type FastParsedCsr } from './fast/csr-parser.js';
export { X509SvidSigner, type FastSvidParams, type X509SvidSignerOptions } from './fast/svid-signer.js';
