/**
 * SubjectPublicKeyInfo handling for signing and CSR parsing. The supported key types are recognised by their canonical
 * DER layout ({@link classifySpki}); how a recognised EC key then becomes a KeyObject depends on the OpenSSL Node
 * runs on ({@link ecImportPathFor}): OpenSSL 3.0's generic SPKI decoder costs more than importing the point alone,
 * OpenSSL 3.5's costs less. RSA keys are imported as PKCS#1 DER.
 */
import { createPublicKey, type JsonWebKey, KeyObject, webcrypto } from 'node:crypto';
import { PkiError, type PkiErrorCode } from './errors.js';
import type { KeyType } from './keys.js';
import { decodeDerOid, derBytes, DerCursor, type DerContext } from './der-reader.js';
import { DerTag } from './der-tags.js';
import { Oid } from './oids.js';

/** Canonical SPKI DER up to the EC point's 0x04 byte: named curve, uncompressed point (RFC 5480 §2). */
const EC_P256_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex');
const EC_P384_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b8104002203620004', 'hex');
/** Canonical SPKI DER of RSA 2048 with a 3-byte exponent up to the RSAPublicKey (RFC 3279 §2.3.1: NULL params). */
const RSA_2048_PREFIX = Buffer.from('30820122300d06092a864886f70d01010105000382010f00', 'hex');
const KEY_ALGORITHM_NAMES = new Map([
  ['1.3.101.112', 'ed25519'],
  ['1.3.101.113', 'ed448'],
  ['1.2.840.113549.1.1.10', 'rsa-pss'],
  ['1.2.840.10040.4.1', 'dsa'],
]);
const CURVE_NAMES = new Map([
  ['1.2.840.10045.3.1.7', 'prime256v1'],
  ['1.3.132.0.34', 'secp384r1'],
  ['1.3.132.0.35', 'secp521r1'],
  ['1.3.132.0.10', 'secp256k1'],
]);

/** A recognised SubjectPublicKeyInfo: its key type and the raw key to import. */
export type ClassifiedSpki =
  | { readonly keyType: 'ec-p256' | 'ec-p384'; readonly point: Uint8Array }
  | { readonly keyType: 'rsa-2048'; readonly rsaPublicKey: Uint8Array };

/**
 * Recognises the canonical DER of an EC P-256 or P-384 key (named curve, uncompressed point) or an RSA 2048 key
 * (NULL parameters, minimal INTEGERs, a 2048-bit modulus). Checks the shape only, not the key itself.
 *
 * @throws PkiError with `code`, naming `field`: the key type is unsupported or the encoding is not canonical
 */
export function classifySpki(spki: Uint8Array, field: string, code: PkiErrorCode): ClassifiedSpki {
  const bytes = Buffer.from(spki.buffer, spki.byteOffset, spki.length);
  const startsWith = (prefix: Buffer): boolean => bytes.subarray(0, prefix.length).equals(prefix);
  if (bytes.length === EC_P256_PREFIX.length + 64 && startsWith(EC_P256_PREFIX)) {
    return { keyType: 'ec-p256', point: spki.subarray(EC_P256_PREFIX.length - 1) };
  }
  if (bytes.length === EC_P384_PREFIX.length + 96 && startsWith(EC_P384_PREFIX)) {
    return { keyType: 'ec-p384', point: spki.subarray(EC_P384_PREFIX.length - 1) };
  }
  if (bytes.length === RSA_2048_PREFIX.length + 270 && startsWith(RSA_2048_PREFIX)) {
    const rsaPublicKey = canonicalRsa2048(bytes.subarray(RSA_2048_PREFIX.length));
    if (rsaPublicKey) return { keyType: 'rsa-2048', rsaPublicKey };
  }
  throw new PkiError(code, `${field}: ${unsupportedReason(bytes, code)}`);
}

/** RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } (RFC 8017 §A.1.1), 2048 bits, 65537-sized. */
function canonicalRsa2048(der: Buffer): Uint8Array | undefined {
  const context: DerContext = { name: 'rsa public key', code: 'ERR_KEY_INVALID' };
  try {
    const top = DerCursor.over(der, context);
    const key = top.expect(DerTag.SEQUENCE, 'RSAPublicKey');
    top.finish('RSAPublicKey');
    const fields = top.enter(key, 'RSAPublicKey');
    const modulus = fields.expect(DerTag.INTEGER, 'modulus');
    const exponent = fields.expect(DerTag.INTEGER, 'publicExponent');
    fields.finish('RSAPublicKey');
    // A positive 2048-bit modulus is exactly 0x00 then 256 bytes with the top bit set; the exponent is minimal.
    const modulusOk =
      modulus.end - modulus.contentStart === 257 &&
      der[modulus.contentStart] === 0 &&
      ((der[modulus.contentStart + 1] as number) & 0x80) !== 0;
    const exponentOk = der[exponent.contentStart] !== 0 && ((der[exponent.contentStart] as number) & 0x80) === 0;
    return modulusOk && exponentOk ? derBytes(der, key) : undefined;
  } catch {
    return undefined;
  }
}

/** Why a SubjectPublicKeyInfo was not recognised, as precisely as its algorithm identifier allows. */
function unsupportedReason(spki: Buffer, code: PkiErrorCode): string {
  const context: DerContext = { name: 'spki', code };
  try {
    const top = DerCursor.over(spki, context);
    const info = top.enter(top.expect(DerTag.SEQUENCE, 'SubjectPublicKeyInfo'), 'SubjectPublicKeyInfo');
    const algorithm = info.enter(info.expect(DerTag.SEQUENCE, 'algorithm'), 'algorithm');
    const oid = decodeDerOid(spki, algorithm.expect(DerTag.OBJECT_IDENTIFIER, 'algorithm'), context);
    if (oid === Oid.ecPublicKey && !algorithm.isDone) {
      const parameters = algorithm.next('parameters');
      if (parameters.tag === DerTag.OBJECT_IDENTIFIER) {
        const curve = decodeDerOid(spki, parameters, context);
        const name = CURVE_NAMES.get(curve) ?? curve;
        if (name !== 'prime256v1' && name !== 'secp384r1')
          return `unsupported ec curve ${name}, expected P-256 or P-384`;
      }
    } else if (oid !== Oid.ecPublicKey && oid !== Oid.rsaEncryption) {
      return `unsupported key algorithm ${KEY_ALGORITHM_NAMES.get(oid) ?? oid}, expected ec P-256, ec P-384 or rsa 2048`;
    }
  } catch {
    return 'not a valid SubjectPublicKeyInfo';
  }
  return 'must be the canonical der of an ec P-256 (uncompressed point), ec P-384 or rsa 2048 public key';
}

const JWK_CURVES = { 'ec-p256': 'P-256', 'ec-p384': 'P-384' } as const;

/**
 * How a recognised EC SubjectPublicKeyInfo becomes a KeyObject. Both refuse a point off the curve or with a coordinate
 * not below the field prime (the point at infinity cannot be written in the layout {@link classifySpki} accepts),
 * which for P-256 and P-384 (cofactor 1) is the whole public key check:
 *
 * - `parts`: the point alone, as JWK coordinates ({@link importSpkiFast}) or through WebCrypto's raw import
 *   ({@link importSpkiFastAsync}, which adds a redundant order check, a full scalar multiplication);
 * - `der`: the canonical DER itself, through `createPublicKey` (OpenSSL's SPKI decoder).
 *
 * Per P-256 key, on the benchmark host (bench/README.md, "Which Node"): Node 20.20 (OpenSSL 3.0.19) DER 241 µs,
 * JWK 129, WebCrypto raw 142; Node 24.22 (OpenSSL 3.5.9) DER 46, JWK 59, WebCrypto raw 108.
 */
export type EcImportPath = 'parts' | 'der';

/**
 * The cheaper {@link EcImportPath} on OpenSSL `version` (`process.versions.openssl`, e.g. `3.0.19`, `3.0.15+quic`,
 * `3.5.9`): `der` from OpenSSL 3.5 on, `parts` before it and for a version it cannot read. Only 3.0 and 3.5 were
 * measured; 3.1 to 3.4 keep the path that was measured on 3.0.
 */
export function ecImportPathFor(version: string): EcImportPath {
  const match = /^(\d+)\.(\d+)\./.exec(version);
  if (match === null) return 'parts';
  const major = Number(match[1]);
  const minor = Number(match[2]);
  return major > 3 || (major === 3 && minor >= 5) ? 'der' : 'parts';
}

/** {@link ecImportPathFor} the OpenSSL this process runs on. */
export const EC_IMPORT_PATH: EcImportPath = ecImportPathFor(process.versions.openssl);

/**
 * Imports a SubjectPublicKeyInfo recognised by {@link classifySpki} as a Node KeyObject: EC keys by `path`
 * ({@link EcImportPath}, this runtime's cheaper one unless given), RSA keys as PKCS#1 DER.
 *
 * @throws PkiError with `code`, naming `field`, when the key is unsupported, not canonical or not a valid key
 */
export function importSpkiFast(
  spki: Uint8Array,
  field: string,
  code: PkiErrorCode,
  path: EcImportPath = EC_IMPORT_PATH,
): { keyType: KeyType; keyObject: KeyObject } {
  return importClassified(spki, classifySpki(spki, field, code), field, code, path);
}

/** {@link importSpkiFast} of a key {@link classifySpki} has recognised in `spki`. */
function importClassified(
  spki: Uint8Array,
  classified: ClassifiedSpki,
  field: string,
  code: PkiErrorCode,
  path: EcImportPath,
): { keyType: KeyType; keyObject: KeyObject } {
  try {
    if (classified.keyType === 'rsa-2048') {
      const keyObject = createPublicKey({ key: Buffer.from(classified.rsaPublicKey), format: 'der', type: 'pkcs1' });
      return { keyType: classified.keyType, keyObject };
    }
    if (path === 'der') {
      const der = Buffer.from(spki.buffer, spki.byteOffset, spki.length);
      return { keyType: classified.keyType, keyObject: createPublicKey({ key: der, format: 'der', type: 'spki' }) };
    }
    // The point is 0x04 || x || y with coordinates of equal length (RFC 5480 §2.2, SEC 1 §2.3.3).
    const size = (classified.point.length - 1) / 2;
    const point = Buffer.from(classified.point.buffer, classified.point.byteOffset, classified.point.length);
    const jwk = {
      kty: 'EC',
      crv: JWK_CURVES[classified.keyType],
      x: point.toString('base64url', 1, 1 + size),
      y: point.toString('base64url', 1 + size),
    };
    return { keyType: classified.keyType, keyObject: createPublicKey({ key: jwk, format: 'jwk' }) };
  } catch (error) {
    throw new PkiError(code, `${field}: not a valid public key`, { cause: error });
  }
}

const WEBCRYPTO_CURVES = {
  'ec-p256': { name: 'ECDSA', namedCurve: 'P-256' },
  'ec-p384': { name: 'ECDSA', namedCurve: 'P-384' },
} as const;

/**
 * {@link importSpkiFast} for hot batch paths. With the `parts` path EC points go through WebCrypto's raw import
 * (`importKey('raw')`, SEC 1 uncompressed point), which on Node 20 / OpenSSL 3.0 cost less than the JWK import on
 * an earlier benchmark host (a whole P-256 CSR parse with its signature check: ~140–155 µs instead of ~165–180 µs)
 * and about the same on the current one; with `der`, as {@link importSpkiFast}. RSA keys as in {@link importSpkiFast}.
 *
 * @throws PkiError with `code`, naming `field`, when the key is unsupported, not canonical or not a valid key (the
 *   promise rejects)
 */
export async function importSpkiFastAsync(
  spki: Uint8Array,
  field: string,
  code: PkiErrorCode,
  path: EcImportPath = EC_IMPORT_PATH,
): Promise<{ keyType: KeyType; keyObject: KeyObject }> {
  const classified = classifySpki(spki, field, code);
  if (classified.keyType === 'rsa-2048' || path === 'der') return importClassified(spki, classified, field, code, path);
  try {
    const key = await webcrypto.subtle.importKey('raw', classified.point, WEBCRYPTO_CURVES[classified.keyType], true, [
      'verify',
    ]);
    return { keyType: classified.keyType, keyObject: KeyObject.from(key) };
  } catch (error) {
    throw new PkiError(code, `${field}: not a valid public key`, { cause: error });
  }
}

const JWK_KEY_TYPES = { 'P-256': 'ec-p256', 'P-384': 'ec-p384' } as const;
const EC_PREFIXES = { 'ec-p256': EC_P256_PREFIX, 'ec-p384': EC_P384_PREFIX } as const;

/**
 * The canonical SubjectPublicKeyInfo DER of a key object's public key (a private key gives its public half). EC keys
 * are laid out from their JWK coordinates behind the same prefixes {@link classifySpki} recognises: on Node 20
 * (OpenSSL 3.0) `export({ format: 'der', type: 'spki' })` costs ~0.1 ms a key, about two key generations, and this a
 * few microseconds. Other keys are exported by OpenSSL. keys.spec checks the bytes equal OpenSSL's export.
 *
 * @throws PkiError `ERR_KEY_INVALID` when `key` is not an asymmetric key object
 */
export function spkiDerOf(key: KeyObject): Buffer {
  if (!(key instanceof KeyObject) || key.type === 'secret') {
    throw new PkiError('ERR_KEY_INVALID', 'key: must be an asymmetric KeyObject');
  }
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  if (publicKey.asymmetricKeyType === 'ec') {
    const jwk = publicKey.export({ format: 'jwk' });
    const keyType = JWK_KEY_TYPES[jwk.crv as keyof typeof JWK_KEY_TYPES];
    if (keyType !== undefined && typeof jwk.x === 'string' && typeof jwk.y === 'string') {
      const x = Buffer.from(jwk.x, 'base64url');
      const y = Buffer.from(jwk.y, 'base64url');
      const prefix = EC_PREFIXES[keyType];
      // JWK coordinates are full length (RFC 7518 §6.2.1.2); anything else goes to OpenSSL's encoder.
      if (x.length === y.length && prefix.length + x.length * 2 === (keyType === 'ec-p256' ? 91 : 120)) {
        return Buffer.concat([prefix, x, y]);
      }
    }
  }
  return publicKey.export({ format: 'der', type: 'spki' });
}

/**
 * PKCS#8 (RFC 5208) DER of an EC private key up to its private scalar, and from there to the public point's
 * coordinates, as OpenSSL 3 writes it: the curve named in the AlgorithmIdentifier, an ECPrivateKey (RFC 5915) of
 * version 1 without parameters and with the public key.
 */
const EC_PKCS8_LAYOUTS = {
  'ec-p256': {
    size: 32,
    head: Buffer.from('308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420', 'hex'),
    middle: Buffer.from('a14403420004', 'hex'),
  },
  'ec-p384': {
    size: 48,
    head: Buffer.from('3081b6020100301006072a8648ce3d020106052b8104002204819e30819b0201010430', 'hex'),
    middle: Buffer.from('a16403620004', 'hex'),
  },
} as const;

/**
 * @internal The SPKI and PKCS#8 DER of an EC P-256 or P-384 private key given as JWK (`KeyObject.export({ format:
 * 'jwk' })`), laid out from its coordinates and scalar; undefined for any other curve, or when a member is missing or
 * not of the curve's full length (RFC 7518 §6.2.1.2 and §6.2.2.1 require it), which the caller leaves to OpenSSL.
 */
export function ecKeyDerOf(jwk: JsonWebKey): { spkiDer: Buffer; pkcs8Der: Buffer } | undefined {
  const keyType = jwk.kty === 'EC' ? JWK_KEY_TYPES[jwk.crv as keyof typeof JWK_KEY_TYPES] : undefined;
  if (keyType === undefined) return undefined;
  const { size, head, middle } = EC_PKCS8_LAYOUTS[keyType];
  // Unpadded base64url of `size` bytes; decoded straight into the key's own buffer (never the shared Buffer pool, and
  // no copy of the scalar left behind).
  const chars = Math.ceil((size * 4) / 3);
  const members = [jwk.d, jwk.x, jwk.y];
  if (!members.every((member) => typeof member === 'string' && member.length === chars)) return undefined;
  const pkcs8Der = Buffer.alloc(head.length + size + middle.length + 2 * size);
  let at = head.copy(pkcs8Der, 0);
  for (const [index, member] of members.entries()) {
    if (pkcs8Der.write(member!, at, size, 'base64url') !== size) {
      pkcs8Der.fill(0);
      return undefined;
    }
    at += size;
    if (index === 0) at += middle.copy(pkcs8Der, at);
  }
  return {
    spkiDer: Buffer.concat([EC_PREFIXES[keyType], pkcs8Der.subarray(pkcs8Der.length - 2 * size)]),
    pkcs8Der,
  };
}

/**
 * A private key's SubjectPublicKeyInfo DER ({@link spkiDerOf}) and its PKCS#8 DER, for a key just generated to be
 * kept as PKCS#8 (an agent's SVID keys). EC P-256 and P-384 keys are laid out from one JWK export: on Node 20
 * (OpenSSL 3.0) `export({ format: 'der', type: 'pkcs8' })` costs ~0.1 ms a key, more than the key generation, and the
 * JWK export and layout a few microseconds. Other keys are exported by OpenSSL. keys.spec checks both byte strings
 * equal OpenSSL's exports.
 *
 * @throws PkiError `ERR_KEY_INVALID` when `key` is not a private KeyObject
 */
export function privateKeyDerOf(key: KeyObject): { spkiDer: Buffer; pkcs8Der: Buffer } {
  if (!(key instanceof KeyObject) || key.type !== 'private') {
    throw new PkiError('ERR_KEY_INVALID', 'key: must be a private KeyObject');
  }
  const laidOut = key.asymmetricKeyType === 'ec' ? ecKeyDerOf(key.export({ format: 'jwk' })) : undefined;
  return laidOut ?? { spkiDer: spkiDerOf(key), pkcs8Der: key.export({ format: 'der', type: 'pkcs8' }) };
}
