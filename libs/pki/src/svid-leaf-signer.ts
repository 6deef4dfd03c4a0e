/**
 * The X.509-SVID signer, Sigil's one implementation of leaf signing: everything constant per CA is DER-encoded once
 * when a signer is made for a CA; each {@link SvidLeafSigner.sign} encodes only the serial, validity, subject,
 * public key, SKI and SAN, then signs the TBSCertificate with Node's `crypto.sign`. Validation and every per-leaf
 * value come from `svid-profile.ts`. The specs cross-check its TBSCertificates byte for byte against a reference
 * builder on @peculiar/x509 (test/support/pki-reference) and have openssl verify its leaves.
 *
 * This module and everything it imports load no @peculiar/x509: the signing workers (`signing-worker.ts`) build their
 * signer here from the CA profile the pool read ({@link SvidLeafSigner.fromCaProfile}); `svid-signer.ts` adds
 * {@link X509SvidSigner.create}, which reads the CA certificate itself.
 */
import { createPublicKey, getRandomValues, hash, type KeyObject, sign, type webcrypto } from 'node:crypto';
import type { SpiffeId } from '@sigil/spiffe';
import { parseCsrFast } from './csr-parser.js';
import {
  DER_TRUE,
  derBitString,
  derOctetString,
  derOid,
  derPrintableString,
  derSequence,
  derSet,
  derTime,
  derTlv,
  derUtf8String,
} from './der-writer.js';
import { PkiError } from './errors.js';
import { signingKeyObject } from './keys.js';
import { Oid, SIGNATURE_PROFILES, type SignatureProfile } from './oids.js';
import { classifySpki } from './spki.js';
import {
  resolveSvidFields,
  SERIAL_NUMBER_BYTES,
  svidSubject,
  type SigningCaProfile,
  type SubjectAttribute,
} from './svid-profile.js';

/** One X.509-SVID to sign from an already verified public key. */
export interface FastSvidParams {
  /**
   * The leaf's SubjectPublicKeyInfo DER, copied into the leaf as is. It must come from a verified source
   * (`parseCsrFast`, `inspectSpki`): `sign` checks only that it is the canonical encoding of a supported key type,
   * because re-decoding the key with OpenSSL would cost several signatures per leaf.
   */
  readonly spkiDer: Uint8Array;
  /** The SPIFFE ID, with a non-root path, in the CA's trust domain. */
  readonly spiffeId: SpiffeId;
  /** DNS names for the SAN (the first also becomes the subject CN): host names, optionally with a `*.` label. */
  readonly dnsNames?: readonly string[];
  /** Requested lifetime; the leaf never outlives the CA. */
  readonly ttlSeconds: number;
  /** The signing time; not-before is 10 s earlier (SPIRE's backdate). */
  readonly now: Date;
  /** Serial number INTEGER content (1–20 bytes, first byte 0x01–0x7f); 16 random bytes when absent. */
  readonly serial?: Uint8Array;
}

const VERSION_V3 = Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02]);
const URI_TAG = 0x86;
const DNS_NAME_TAG = 0x82;

function extension(oid: string, critical: boolean, value: Uint8Array): Buffer {
  return critical
    ? derSequence(derOid(oid), DER_TRUE, derOctetString(value))
    : derSequence(derOid(oid), derOctetString(value));
}

/** basicConstraints cA=false (the DEFAULT, so an empty SEQUENCE), critical; keyUsage, critical; extKeyUsage. */
const CONSTANT_EXTENSIONS_HEAD = Buffer.concat([
  extension(Oid.basicConstraints, true, derSequence()),
  // digitalSignature | keyEncipherment | keyAgreement: bits 0, 2 and 4, so 0xa8 with 3 unused bits (X.690 §11.2.2).
  extension(Oid.keyUsage, true, derBitString(Buffer.from([0xa8]), 3)),
  extension(Oid.extKeyUsage, false, derSequence(derOid(Oid.serverAuth), derOid(Oid.clientAuth))),
]);
/** The subjectKeyIdentifier extension up to its 20-byte SHA-1 value, which each leaf appends. */
const SKI_EXTENSION_PREFIX = extension(Oid.subjectKeyIdentifier, false, derOctetString(Buffer.alloc(20))).subarray(
  0,
  -20,
);
const SAN_OID = derOid(Oid.subjectAltName);
const ATTRIBUTE_OIDS = new Map<string, Buffer>([
  [Oid.organizationName, derOid(Oid.organizationName)],
  [Oid.commonName, derOid(Oid.commonName)],
]);

/** One RDN holding one attribute, in the string type the shared profile chose. */
function relativeDistinguishedName(attribute: SubjectAttribute): Buffer {
  const oid = ATTRIBUTE_OIDS.get(attribute.oid) ?? derOid(attribute.oid);
  const value =
    attribute.encoding === 'printableString' ? derPrintableString(attribute.value) : derUtf8String(attribute.value);
  return derSet(derSequence(oid, value));
}

/**
 * Random serials are drawn from a pool that `crypto.getRandomValues` refills 256 serials at a time: one call per leaf
 * cost about a tenth of a leaf (measured). Each serial follows `generateSerialNumber`: 16 bytes, top bit cleared,
 * first byte never zero, so it is a positive 16-byte INTEGER with no padding.
 */
const SERIAL_POOL_BYTES = SERIAL_NUMBER_BYTES * 256;
let serialPool = new Uint8Array(0);
let serialPoolOffset = 0;

function randomSerial(): Uint8Array {
  if (serialPoolOffset + SERIAL_NUMBER_BYTES > serialPool.length) {
    serialPool = getRandomValues(new Uint8Array(SERIAL_POOL_BYTES));
    serialPoolOffset = 0;
  }
  const serial = serialPool.subarray(serialPoolOffset, serialPoolOffset + SERIAL_NUMBER_BYTES);
  serialPoolOffset += SERIAL_NUMBER_BYTES;
  serial[0] = (serial[0] as number) & 0x7f || 0x01;
  return serial;
}

/**
 * Signs X.509-SVIDs for one CA. Create it once per CA key with {@link X509SvidSigner.create}: the issuer name,
 * signature AlgorithmIdentifier, constant extensions and authority key identifier are encoded then, and the key is
 * kept as a Node KeyObject for `crypto.sign`.
 */
export class SvidLeafSigner {
  readonly #key: KeyObject;
  readonly #hash: 'sha256' | 'sha384';
  readonly #algorithmIdentifier: Buffer;
  readonly #ca: SigningCaProfile;
  readonly #issuer: Buffer;
  readonly #authorityKeyIdentifier: Buffer;
  readonly #organizationOnlySubject: Buffer;

  protected constructor(key: KeyObject, signature: SignatureProfile, ca: SigningCaProfile) {
    this.#key = key;
    this.#hash = signature.hash;
    this.#algorithmIdentifier = signature.algorithmIdentifier;
    this.#ca = ca;
    this.#issuer = Buffer.from(ca.subjectDer);
    this.#organizationOnlySubject = derSequence(...svidSubject([]).map(relativeDistinguishedName));
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } (RFC 5280 §4.2.1.1).
    this.#authorityKeyIdentifier = extension(
      Oid.authorityKeyIdentifier,
      false,
      derSequence(derTlv(0x80, ca.keyIdentifier)),
    );
  }

  /**
   * A signer for a CA whose certificate `ca` was already read and checked by `signingCaProfile` (cA=true,
   * keyCertSign, subject, key identifier, validity, trust domain): the signing workers get it from the pool. Checks
   * that the private key is the certificate's.
   *
   * @throws PkiError `ERR_KEY_INVALID` naming the failed rule
   */
  static fromCaProfile(ca: SigningCaProfile, privateKey: webcrypto.CryptoKey | KeyObject): SvidLeafSigner {
    const { key, signature } = SvidLeafSigner.checkedKey(ca, privateKey);
    return new SvidLeafSigner(key, signature, ca);
  }

  /**
   * The CA's private key as a KeyObject and its signature profile, once checked to be the key of the CA certificate.
   *
   * @throws PkiError `ERR_KEY_INVALID` naming the failed rule
   */
  protected static checkedKey(
    ca: SigningCaProfile,
    privateKey: webcrypto.CryptoKey | KeyObject,
  ): { key: KeyObject; signature: SignatureProfile } {
    const { key, keyType } = signingKeyObject(privateKey, 'ca.privateKey');
    const signature = SIGNATURE_PROFILES[keyType];
    const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
    if (!spki.equals(ca.spkiDer)) {
      throw new PkiError('ERR_KEY_INVALID', 'ca.privateKey: does not match the public key of ca.certificate');
    }
    return { key, signature };
  }

  /** The CA certificate's not-after: no leaf signed here outlives it. */
  get caNotAfter(): Date {
    return this.#ca.notAfter;
  }

  /**
   * Builds and signs one X.509-SVID leaf (DER) for an already verified public key.
   *
   * @throws PkiError `ERR_PKI_INVALID_INPUT` naming the bad field, `ERR_CA_INVALID` once the CA has expired
   */
  sign(params: FastSvidParams): Buffer {
    // The key first, then the rest, in the order the reference builder checks them. A shape check only: the key itself was verified
    // when its CSR was parsed (see FastSvidParams.spkiDer).
    const spkiDer = params.spkiDer;
    if (!(spkiDer instanceof Uint8Array)) throw new PkiError('ERR_KEY_INVALID', 'spkiDer: must be der bytes');
    const key = classifySpki(spkiDer, 'spkiDer', 'ERR_KEY_INVALID');
    const fields = resolveSvidFields(
      params.serial === undefined ? { ...params, serial: randomSerial() } : params,
      this.#ca,
    );
    // RFC 5280 §4.2.1.2 method 1, as svid-profile's subjectKeyIdentifier: SHA-1 of the subjectPublicKey bits, which
    // classifySpki has already located (one-shot hash: no DER re-parse, no Hash object per leaf).
    const keyIdentifier = hash('sha1', key.keyType === 'rsa-2048' ? key.rsaPublicKey : key.point, 'buffer');

    const generalNames: Buffer[] = [derTlv(URI_TAG, Buffer.from(fields.uri, 'latin1'))];
    for (const name of fields.dnsNames) generalNames.push(derTlv(DNS_NAME_TAG, Buffer.from(name, 'latin1')));

    const tbs = derSequence(
      VERSION_V3,
      derTlv(0x02, fields.serial),
      this.#algorithmIdentifier,
      this.#issuer,
      derSequence(derTime(fields.notBefore.getTime() / 1000), derTime(fields.notAfter.getTime() / 1000)),
      this.#subject(fields.subject),
      spkiDer,
      derTlv(
        0xa3,
        derSequence(
          CONSTANT_EXTENSIONS_HEAD,
          SKI_EXTENSION_PREFIX,
          keyIdentifier,
          this.#authorityKeyIdentifier,
          derSequence(SAN_OID, derOctetString(derSequence(...generalNames))),
        ),
      ),
    );
    const signature = sign(this.#hash, tbs, this.#key);
    return derSequence(tbs, this.#algorithmIdentifier, derBitString(signature));
  }

  /**
   * The complete per-SVID path: parses and verifies the CSR with {@link parseCsrFast}, then signs a leaf for its
   * public key. The names the CSR asks for are not used: the SPIFFE ID and DNS names come from `params` (the entry).
   *
   * @throws PkiError `ERR_CSR_INVALID` for a bad CSR, else as {@link X509SvidSigner.sign}
   */
  signCsr(csrPemOrDer: string | Uint8Array, params: Omit<FastSvidParams, 'spkiDer'>): Buffer {
    const { spkiDer } = parseCsrFast(csrPemOrDer);
    return this.sign({ ...params, spkiDer });
  }

  /** The subject Name: `O=Sigil` alone is encoded once per CA; with a CN it is encoded per call. */
  #subject(attributes: readonly SubjectAttribute[]): Buffer {
    return attributes.length === 1
      ? this.#organizationOnlySubject
      : derSequence(...attributes.map(relativeDistinguishedName));
  }
}
