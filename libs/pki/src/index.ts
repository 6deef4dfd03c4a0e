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
  SVID_BACKDATE_SECONDS,
  generateSerialNumber,
  subjectKeyIdentifier,
  validateDnsName,
  validateDnsNames,
} from './svid-profile.js';
