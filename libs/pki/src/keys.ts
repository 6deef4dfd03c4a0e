import {
  KeyObject,
  createPrivateKey,
  createPublicKey,
  generateKeyPair as generateNodeKeyPair,
  webcrypto,
} from 'node:crypto';
import { PkiError, messageOf } from './errors.js';
import { privateKeyDerOf } from './spki.js';

/** The key types Sigil issues and accepts: EC P-256 (SPIRE's default), EC P-384 and RSA 2048. */
export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

/** SPIRE's default key type for CAs and SVIDs. */
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

/** The WebCrypto parameters of a signature made with a given key type (always including the hash). */
export type SigningAlgorithm =
  | { readonly name: 'ECDSA'; readonly hash: 'SHA-256' | 'SHA-384' }
  | { readonly name: 'RSASSA-PKCS1-v1_5'; readonly hash: 'SHA-256' };

const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];

/** True for one of the key types Sigil issues and accepts ({@link KeyType}). */
export function isKeyType(value: unknown): value is KeyType {
  return KEY_TYPES.includes(value as KeyType);
}
const RSA_PUBLIC_EXPONENT = new Uint8Array([0x01, 0x00, 0x01]);

// Node 20 exposes the CryptoKey class only as a global (not on `crypto.webcrypto`).
const CryptoKeyClass = (globalThis as unknown as { CryptoKey: abstract new () => webcrypto.CryptoKey }).CryptoKey;

/** True for a WebCrypto key object. */
export function isCryptoKey(value: unknown): value is webcrypto.CryptoKey {
  return value instanceof CryptoKeyClass;
}

type ImportParams = webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams;

function importParamsFor(keyType: KeyType): ImportParams {
  switch (keyType) {
    case 'ec-p256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ec-p384':
      return { name: 'ECDSA', namedCurve: 'P-384' };
    case 'rsa-2048':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

function checkKeyType(keyType: unknown, field: string): KeyType {
  if (!KEY_TYPES.includes(keyType as KeyType)) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: must be one of ${KEY_TYPES.join(', ')}, got ${String(keyType)}`);
  }
  return keyType as KeyType;
}

function checkCryptoKey(key: unknown, type: 'private' | 'public', field: string): webcrypto.CryptoKey {
  if (!isCryptoKey(key)) throw new PkiError('ERR_KEY_INVALID', `${field}: must be a CryptoKey`);
  if (key.type !== type)
    throw new PkiError('ERR_KEY_INVALID', `${field}: must be a ${type} key, got a ${key.type} key`);
  return key;
}

/**
 * Generates an extractable WebCrypto signing key pair: ECDSA on P-256 (default) or P-384, or RSASSA-PKCS1-v1_5
 * 2048 bits with SHA-256.
 */
export async function generateKeyPair(keyType: KeyType = DEFAULT_KEY_TYPE): Promise<webcrypto.CryptoKeyPair> {
  checkKeyType(keyType, 'keyType');
  const params =
    keyType === 'rsa-2048'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: RSA_PUBLIC_EXPONENT, hash: 'SHA-256' }
      : importParamsFor(keyType);
  return (await webcrypto.subtle.generateKey(params, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

/** A fresh private key as a Node key object, with its public key as SubjectPublicKeyInfo DER and itself as PKCS#8 DER. */
export interface GeneratedSigningKey {
  readonly privateKey: KeyObject;
  readonly spkiDer: Buffer;
  readonly pkcs8Der: Buffer;
}

/**
 * Generates a signing key pair as Node key objects (ECDSA on P-256 by default or P-384; RSA 2048 with exponent 65537),
 * for hot paths that sign a CSR with it and keep it as PKCS#8: an agent signing thousands of SVIDs. The key is made on
 * libuv's thread pool (off the event loop) and its public key (SPKI) and itself (PKCS#8) laid out by
 * {@link privateKeyDerOf}; together about a third of {@link generateKeyPair} plus `exportPublicKeySpki` on Node 20,
 * and without OpenSSL's PKCS#8 encoder (~0.1 ms a key).
 */
export async function generateSigningKey(keyType: KeyType = DEFAULT_KEY_TYPE): Promise<GeneratedSigningKey> {
  checkKeyType(keyType, 'keyType');
  const privateKey = await new Promise<KeyObject>((resolve, reject) => {
    const done = (error: Error | null, _publicKey: KeyObject, key: KeyObject): void =>
      error ? reject(error) : resolve(key);
    if (keyType === 'rsa-2048') generateNodeKeyPair('rsa', { modulusLength: 2048, publicExponent: 0x10001 }, done);
    else generateNodeKeyPair('ec', { namedCurve: keyType === 'ec-p256' ? 'prime256v1' : 'secp384r1' }, done);
  });
  return { privateKey, ...privateKeyDerOf(privateKey) };
}

/**
 * The {@link KeyType} of a WebCrypto key (public or private).
 *
 * @throws PkiError `ERR_KEY_INVALID` for any other algorithm, curve or modulus size.
 */
export function keyTypeOf(key: webcrypto.CryptoKey): KeyType {
  if (!isCryptoKey(key)) throw new PkiError('ERR_KEY_INVALID', 'key: must be a CryptoKey');
  const algorithm = key.algorithm as Partial<webcrypto.EcKeyAlgorithm & webcrypto.RsaHashedKeyAlgorithm>;
  if (algorithm.name === 'ECDSA' && algorithm.namedCurve === 'P-256') return 'ec-p256';
  if (algorithm.name === 'ECDSA' && algorithm.namedCurve === 'P-384') return 'ec-p384';
  if (algorithm.name === 'RSASSA-PKCS1-v1_5' && algorithm.modulusLength === 2048) {
    if (algorithm.hash?.name !== 'SHA-256') {
      throw new PkiError('ERR_KEY_INVALID', `key: rsa keys must be bound to SHA-256, got ${algorithm.hash?.name}`);
    }
    return 'rsa-2048';
  }
  const detail = algorithm.namedCurve ?? (algorithm.modulusLength ? `${algorithm.modulusLength} bits` : undefined);
  throw new PkiError(
    'ERR_KEY_INVALID',
    `key: unsupported key algorithm ${algorithm.name}${detail ? ` (${detail})` : ''}, expected ec P-256, ec P-384 or rsa 2048`,
  );
}

/** The signature parameters for a key type: ECDSA with SHA-256 (P-256) or SHA-384 (P-384), RSA PKCS#1 v1.5 SHA-256. */
export function signingAlgorithmFor(keyType: KeyType): SigningAlgorithm {
  switch (checkKeyType(keyType, 'keyType')) {
    case 'ec-p256':
      return { name: 'ECDSA', hash: 'SHA-256' };
    case 'ec-p384':
      return { name: 'ECDSA', hash: 'SHA-384' };
    case 'rsa-2048':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  }
}

/** The {@link KeyType} of a Node key object, or a message saying why it is not supported. */
export function keyTypeOfKeyObject(key: KeyObject): KeyType | string {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'ec-p256';
    if (details.namedCurve === 'secp384r1') return 'ec-p384';
    return `unsupported ec curve ${details.namedCurve}, expected P-256 or P-384`;
  }
  if (key.asymmetricKeyType === 'rsa') {
    if (details.modulusLength === 2048) return 'rsa-2048';
    return `unsupported rsa modulus of ${details.modulusLength} bits, expected 2048`;
  }
  return `unsupported key algorithm ${key.asymmetricKeyType}, expected ec P-256, ec P-384 or rsa 2048`;
}

function asBytes(der: unknown, field: string): Uint8Array {
  if (!(der instanceof Uint8Array))
    throw new PkiError('ERR_KEY_INVALID', `${field}: must be a Uint8Array of der bytes`);
  return der;
}

/** Exports a private key as PKCS#8 DER (RFC 5208). The key must be extractable. */
export function exportPrivateKeyPkcs8(key: webcrypto.CryptoKey): Uint8Array {
  checkCryptoKey(key, 'private', 'privateKey');
  if (!key.extractable) throw new PkiError('ERR_KEY_INVALID', 'privateKey: must be extractable to be exported');
  return new Uint8Array(KeyObject.from(key).export({ format: 'der', type: 'pkcs8' }));
}

/**
 * Imports a PKCS#8 DER private key as an extractable signing key. The key type is read from the PKCS#8 structure;
 * when `keyType` is given the key must be of that type.
 *
 * @throws PkiError `ERR_KEY_INVALID` for malformed DER, an unsupported algorithm or a type mismatch.
 */
export async function importPrivateKeyPkcs8(der: Uint8Array, keyType?: KeyType): Promise<webcrypto.CryptoKey> {
  const bytes = asBytes(der, 'pkcs8');
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: Buffer.from(bytes), format: 'der', type: 'pkcs8' });
  } catch (error) {
    throw new PkiError('ERR_KEY_INVALID', `pkcs8: not a valid private key: ${messageOf(error)}`, { cause: error });
  }
  const detected = detectedKeyType(keyObject, keyType, 'pkcs8');
  return webcrypto.subtle.importKey('pkcs8', bytes, importParamsFor(detected), true, ['sign']);
}

/** Exports a public key as SubjectPublicKeyInfo DER (RFC 5280 §4.1.2.7). */
export function exportPublicKeySpki(key: webcrypto.CryptoKey): Uint8Array {
  checkCryptoKey(key, 'public', 'publicKey');
  return new Uint8Array(KeyObject.from(key).export({ format: 'der', type: 'spki' }));
}

/** A SubjectPublicKeyInfo that parsed, with its key type, as Node and WebCrypto objects. */
export interface InspectedSpki {
  readonly keyType: KeyType;
  readonly keyObject: KeyObject;
}

/**
 * Checks SubjectPublicKeyInfo DER: a supported key type, in the canonical encoding (named curve, uncompressed point,
 * RSA with NULL parameters), so that copying its bytes into a certificate is the same as re-encoding it.
 *
 * @throws PkiError `ERR_KEY_INVALID` naming the failure.
 */
export function inspectSpki(der: Uint8Array, keyType?: KeyType, field = 'spki'): InspectedSpki {
  const bytes = asBytes(der, field);
  let keyObject: KeyObject;
  try {
    keyObject = createPublicKey({ key: Buffer.from(bytes), format: 'der', type: 'spki' });
  } catch (error) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: not a valid public key: ${messageOf(error)}`, { cause: error });
  }
  const detected = detectedKeyType(keyObject, keyType, field);
  // Re-encoding from the JWK form yields the canonical DER (named curve, uncompressed point, RSA NULL params); Go's
  // crypto/x509, used by go-spiffe clients, refuses compressed points in certificates.
  const canonical = createPublicKey({ key: keyObject.export({ format: 'jwk' }), format: 'jwk' }).export({
    format: 'der',
    type: 'spki',
  });
  if (!canonical.equals(bytes)) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: public key is not in canonical der form`);
  }
  return { keyType: detected, keyObject };
}

/**
 * Imports SubjectPublicKeyInfo DER as a WebCrypto verification key; the type is read from the SPKI and, when
 * `keyType` is given, must match.
 *
 * @throws PkiError `ERR_KEY_INVALID` for malformed or non-canonical DER, an unsupported key or a type mismatch.
 */
export async function importPublicKeySpki(der: Uint8Array, keyType?: KeyType): Promise<webcrypto.CryptoKey> {
  const { keyType: detected } = inspectSpki(der, keyType);
  return webcrypto.subtle.importKey('spki', der, importParamsFor(detected), true, ['verify']);
}

/** The Node `KeyObject` of a WebCrypto key, for `crypto.sign`/`crypto.verify`. */
export function toKeyObject(key: webcrypto.CryptoKey): KeyObject {
  if (!isCryptoKey(key)) throw new PkiError('ERR_KEY_INVALID', 'key: must be a CryptoKey');
  return KeyObject.from(key);
}

/**
 * A WebCrypto or Node private key as a Node `KeyObject` for `crypto.sign`, with its key type. WebCrypto keys need not
 * be extractable for this.
 *
 * @throws PkiError `ERR_KEY_INVALID` naming `field`: not a key, not a private key, or of an unsupported type.
 */
export function signingKeyObject(privateKey: unknown, field: string): { key: KeyObject; keyType: KeyType } {
  let key: KeyObject;
  try {
    key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey as webcrypto.CryptoKey);
  } catch (error) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: must be a CryptoKey or a KeyObject`, { cause: error });
  }
  if (key.type !== 'private') throw new PkiError('ERR_KEY_INVALID', `${field}: must be a private key, got ${key.type}`);
  const keyType = keyTypeOfKeyObject(key);
  if (!KEY_TYPES.includes(keyType as KeyType)) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: must be ec P-256, ec P-384 or rsa 2048`);
  }
  return { key, keyType: keyType as KeyType };
}

/** True when `privateKey` is the private half of the public key encoded in `spkiDer`. */
export function isKeyPairOf(privateKey: webcrypto.CryptoKey, spkiDer: Uint8Array): boolean {
  const derived = createPublicKey(toKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
  return derived.equals(spkiDer);
}

function detectedKeyType(keyObject: KeyObject, expected: KeyType | undefined, field: string): KeyType {
  const detected = keyTypeOfKeyObject(keyObject);
  if (!KEY_TYPES.includes(detected as KeyType)) throw new PkiError('ERR_KEY_INVALID', `${field}: ${detected}`);
  if (expected !== undefined && checkKeyType(expected, 'keyType') !== detected) {
    throw new PkiError('ERR_KEY_INVALID', `${field}: key is ${detected}, expected ${expected}`);
  }
  return detected as KeyType;
}
