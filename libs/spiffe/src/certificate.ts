import { type KeyObject, X509Certificate as NodeX509Certificate, createPublicKey, verify } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { loadX509 } from './lazy-modules.js';
import { bytesEqual } from './pem.js';

/**
 * The parts of an X.509 certificate (RFC 5280 §4.1) that SVID verification reads, taken from its DER without
 * @peculiar/x509 (which costs ~0.4 s to load): issuer and subject (exact encodings, compared byte for byte), validity,
 * SubjectPublicKeyInfo, the extensions, and the signed bytes with their signature ({@link signedBy} checks it). Strict
 * DER only (definite, minimal lengths, every element inside its container); anything else is refused with the rule.
 */
export interface CertificateView {
  /** The certificate's DER (a copy owned by the view). */
  readonly der: Uint8Array;
  /**
   * Node's (OpenSSL's) parse of the same DER (subject text, the signature check of algorithms {@link signedBy} does
   * not do itself), built on first access through {@link nodeCertificateFromDer}: it throws as that does.
   */
  readonly node: NodeX509Certificate;
  /** The subject's public key as Node reads the SPKI, made on first access; undefined when Node cannot read it. */
  readonly publicKey: KeyObject | undefined;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array;
  readonly extensions: readonly CertificateExtension[];
  /** The tbsCertificate element (its DER, exactly the bytes signed). */
  readonly tbs: Uint8Array;
  /** The tbsCertificate's `signature` AlgorithmIdentifier (its DER). */
  readonly tbsSignatureAlgorithm: Uint8Array;
  /** The certificate's `signatureAlgorithm` AlgorithmIdentifier (its DER). */
  readonly signatureAlgorithm: Uint8Array;
  /** The content of the signatureValue BIT STRING: the unused-bits count, then the signature. */
  readonly signatureValue: Uint8Array;
}

/** What the DER reader reads: a view without the parts Node builds on first use. */
type CertificateFields = Omit<CertificateView, 'node' | 'publicKey'>;

/** A certificate as verification reads it, and its @peculiar/x509 object (the caller's, or built on first call). */
export interface ChainItem {
  readonly view: CertificateView;
  readonly certificate: () => X509.X509Certificate;
}

/** A chain item for DER bytes: the @peculiar/x509 object is built (and @peculiar/x509 loaded) on first use. */
export function derChainItem(view: CertificateView): ChainItem {
  let built: X509.X509Certificate | undefined;
  return { view, certificate: () => (built ??= new (loadX509().X509Certificate)(view.der)) };
}

export interface CertificateExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** The extnValue OCTET STRING's content: the extension's own DER. */
  readonly value: Uint8Array;
}

export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';
export const OID_SUBJECT_ALT_NAME = '2.5.29.17';

/** Key usage bits as flags (bit n of the KeyUsage BIT STRING is 1 << n), the values of @peculiar/x509's KeyUsageFlags. */
export const KEY_USAGE = { digitalSignature: 1, keyCertSign: 32, cRLSign: 64 } as const;

const SEQUENCE = 0x30;
const INTEGER = 0x02;
const BOOLEAN = 0x01;
const BIT_STRING = 0x03;
const OCTET_STRING = 0x04;
const OBJECT_IDENTIFIER = 0x06;
const UTC_TIME = 0x17;
const GENERALIZED_TIME = 0x18;
const VERSION = 0xa0;
const ISSUER_UID = 0x81;
const SUBJECT_UID = 0x82;
const EXTENSIONS = 0xa3;
const SAN_URI = 0x86;

interface Element {
  readonly tag: number;
  readonly start: number;
  readonly content: number;
  readonly end: number;
}

/** Thrown by the reader with the rule the input breaks; callers wrap it in their own error. */
export class CertificateFormatError extends Error {
  override readonly name = 'CertificateFormatError';
}

/**
 * The one wording of "these bytes are not a certificate" (`what` names which one), with the reader's rule when the
 * reader refused it; each caller wraps it in its own error code.
 */
export function notACertificateMessage(what: string, error: unknown): string {
  const reason = error instanceof CertificateFormatError ? `: ${error.message}` : '';
  return `${what} is not a der x.509 certificate${reason}`;
}

function fail(rule: string): never {
  throw new CertificateFormatError(rule);
}

/** Reads one element at `offset` that must end by `limit`: low tag numbers, definite minimal lengths. */
function read(buf: Uint8Array, offset: number, limit: number, what: string): Element {
  if (offset + 2 > limit) fail(`${what} is truncated`);
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) fail(`${what} has a high tag number`);
  let length = buf[offset + 1] as number;
  let content = offset + 2;
  if (length & 0x80) {
    const size = length & 0x7f;
    if (size === 0 || size > 4) fail(`${what} has an unsupported length encoding`);
    if (content + size > limit) fail(`${what} is truncated`);
    if (buf[content] === 0) fail(`${what} has a non-minimal length`);
    length = 0;
    for (let i = 0; i < size; i++) length = length * 256 + (buf[content + i] as number);
    if (length < 0x80) fail(`${what} has a non-minimal length`);
    content += size;
  }
  if (length > limit - content) fail(`${what} overruns its container`);
  return { tag, start: offset, content, end: content + length };
}

/** The children of a constructed element, in order. */
class Reader {
  #offset: number;
  constructor(
    private readonly buf: Uint8Array,
    start: number,
    private readonly end: number,
  ) {
    this.#offset = start;
  }
  static of(buf: Uint8Array, element: Element, what: string): Reader {
    if ((element.tag & 0x20) === 0) fail(`${what} must be constructed`);
    return new Reader(buf, element.content, element.end);
  }
  get done(): boolean {
    return this.#offset >= this.end;
  }
  next(what: string): Element {
    if (this.done) fail(`${what} is missing`);
    const element = read(this.buf, this.#offset, this.end, what);
    this.#offset = element.end;
    return element;
  }
  expect(tag: number, what: string): Element {
    const element = this.next(what);
    if (element.tag !== tag) fail(`${what} has tag 0x${element.tag.toString(16)}, expected 0x${tag.toString(16)}`);
    return element;
  }
  optional(tag: number, what: string): Element | undefined {
    return !this.done && this.buf[this.#offset] === tag ? this.next(what) : undefined;
  }
  finish(what: string): void {
    if (!this.done) fail(`${what} has data after its last element`);
  }
}

/** Why the content of an OBJECT IDENTIFIER is refused, and at which offset of the buffer. */
export interface OidProblem {
  readonly rule: string;
  readonly offset: number;
}

/**
 * Decodes the content `buf[start, end)` of an OBJECT IDENTIFIER to its dotted form, enforcing minimal base-128 arcs
 * (X.690 §8.19). The one OID decoder: @sigil/pki's DER reader uses it too. Returns the problem instead of throwing,
 * so each reader raises its own error.
 */
export function decodeOidContent(buf: Uint8Array, start: number, end: number): string | OidProblem {
  if (end <= start) return { rule: 'object identifier is empty', offset: start };
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (let i = start; i < end; i++) {
    const byte = buf[i] as number;
    if (fresh && byte === 0x80)
      return { rule: 'object identifier arc has a leading 0x80 byte (not minimal)', offset: i };
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) return { rule: 'object identifier arc is too large', offset: i };
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      if (arcs.length === 0) {
        const first = value < 40 ? 0 : value < 80 ? 1 : 2;
        arcs.push(first, value - first * 40);
      } else {
        arcs.push(value);
      }
      value = 0;
    }
  }
  if (!fresh) return { rule: 'object identifier ends inside an arc', offset: end - 1 };
  return arcs.join('.');
}

function oid(buf: Uint8Array, element: Element): string {
  const decoded = decodeOidContent(buf, element.content, element.end);
  if (typeof decoded !== 'string') fail(`extension id: ${decoded.rule}`);
  return decoded;
}

const TIME = /^(\d{2}|\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/;

/** RFC 5280 §4.1.2.5: UTCTime YYMMDDHHMMSSZ (50–99 → 19xx) or GeneralizedTime YYYYMMDDHHMMSSZ, in UTC. */
function time(buf: Uint8Array, element: Element, what: string): Date {
  const text = Buffer.from(buf.subarray(element.content, element.end)).toString('latin1');
  const match = TIME.exec(text);
  const utc = element.tag === UTC_TIME;
  if (!(utc || element.tag === GENERALIZED_TIME) || match === null || (match[1] as string).length !== (utc ? 2 : 4)) {
    fail(`${what} is not a utc or generalized time`);
  }
  const [, y, mo, d, h, mi, s] = match.map(Number) as [number, number, number, number, number, number, number];
  const year = utc ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  const date = new Date(Date.UTC(year, mo - 1, d, h, mi, s));
  if (
    date.getUTCFullYear() !== year ||
    date.getUTCMonth() !== mo - 1 ||
    date.getUTCDate() !== d ||
    h > 23 ||
    mi > 59 ||
    s > 59
  ) {
    fail(`${what} is not a valid date`);
  }
  return date;
}

/**
 * Node's certificate for exactly the DER bytes `der`. Node's `X509Certificate` reads its input as PEM first: DER bytes
 * that hold a `-----BEGIN CERTIFICATE-----` block anywhere (in an extension, say) make it parse that embedded
 * certificate instead, so its fields and signature check would be another certificate's than the one presented. The
 * only way to build one from bytes that came from outside; refused unless Node's certificate is those bytes.
 *
 * @throws CertificateFormatError when Node read anything else than `der` as the certificate.
 */
export function nodeCertificateFromDer(der: Uint8Array): NodeX509Certificate {
  const node = new NodeX509Certificate(der);
  if (!node.raw.equals(der)) fail('the certificate is not the DER bytes given (an embedded PEM block?)');
  return node;
}

/** A view of the reader's fields, with Node's certificate and public key made on first use and kept. */
class ParsedCertificate implements CertificateView {
  readonly der: Uint8Array;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array;
  readonly extensions: readonly CertificateExtension[];
  readonly tbs: Uint8Array;
  readonly tbsSignatureAlgorithm: Uint8Array;
  readonly signatureAlgorithm: Uint8Array;
  readonly signatureValue: Uint8Array;
  #node: NodeX509Certificate | undefined;
  #publicKey: KeyObject | null | undefined;

  constructor(fields: CertificateFields) {
    this.der = fields.der;
    this.issuer = fields.issuer;
    this.subject = fields.subject;
    this.notBefore = fields.notBefore;
    this.notAfter = fields.notAfter;
    this.spki = fields.spki;
    this.extensions = fields.extensions;
    this.tbs = fields.tbs;
    this.tbsSignatureAlgorithm = fields.tbsSignatureAlgorithm;
    this.signatureAlgorithm = fields.signatureAlgorithm;
    this.signatureValue = fields.signatureValue;
  }

  get node(): NodeX509Certificate {
    return (this.#node ??= nodeCertificateFromDer(this.der));
  }

  get publicKey(): KeyObject | undefined {
    if (this.#publicKey === undefined) {
      try {
        this.#publicKey = createPublicKey({ key: Buffer.from(this.spki), format: 'der', type: 'spki' });
      } catch {
        this.#publicKey = null;
      }
    }
    return this.#publicKey ?? undefined;
  }
}

/**
 * Parses a DER certificate with the lean reader. Node's parse (OpenSSL's) is not run here: {@link CertificateView.node}
 * builds it on first access. @throws CertificateFormatError naming the rule.
 */
export function parseCertificate(input: Uint8Array): CertificateView {
  return new ParsedCertificate(readCertificate(input.slice()));
}

/** A signature algorithm {@link signedBy} checks itself: the digest and the key type it needs. */
interface SignatureAlgorithm {
  readonly digest: 'sha256' | 'sha384' | 'sha512';
  readonly keyType: 'ec' | 'rsa';
}

/**
 * The signature algorithms {@link signedBy} checks with `crypto.verify`, by the exact DER of their AlgorithmIdentifier
 * (hex): ecdsa-with-SHA256/384/512 without parameters (RFC 5758 §3.2) and sha256/384/512WithRSAEncryption with NULL
 * parameters (RFC 4055 §5), as CAs (Sigil's included) write them. Any other encoding (RSASSA-PSS, Ed25519, parameters
 * where these have none or none where they have NULL) is left to OpenSSL's check, which accepts some of them.
 */
const SIGNATURE_ALGORITHMS: ReadonlyMap<string, SignatureAlgorithm> = new Map([
  ['300a06082a8648ce3d040302', { digest: 'sha256', keyType: 'ec' }],
  ['300a06082a8648ce3d040303', { digest: 'sha384', keyType: 'ec' }],
  ['300a06082a8648ce3d040304', { digest: 'sha512', keyType: 'ec' }],
  ['300d06092a864886f70d01010b0500', { digest: 'sha256', keyType: 'rsa' }],
  ['300d06092a864886f70d01010c0500', { digest: 'sha384', keyType: 'rsa' }],
  ['300d06092a864886f70d01010d0500', { digest: 'sha512', keyType: 'rsa' }],
]);

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Whether `issuer`'s public key verifies `cert`'s signature, with the answer of OpenSSL's `X509_verify` (Node's
 * `X509Certificate.verify`), without building Node's certificates for the common algorithms: the signatureAlgorithm
 * must be one of {@link SIGNATURE_ALGORITHMS} and equal to the tbsCertificate's `signature` field byte for byte
 * (RFC 5280 §4.1.1.2), the signature BIT STRING must have no unused bits, the issuer's key must be of the algorithm's
 * type (EC for ECDSA, RSA for PKCS #1 v1.5), and `crypto.verify` must accept the signature over the exact
 * tbsCertificate bytes. Anything else goes to Node's `X509Certificate.verify`, unchanged.
 *
 * @throws what Node's parse throws, on that path only (a certificate OpenSSL refuses); callers treat it as "not signed by".
 */
export function signedBy(cert: CertificateView, issuer: CertificateView): boolean {
  const algorithm = SIGNATURE_ALGORITHMS.get(hex(cert.signatureAlgorithm));
  if (algorithm === undefined || !bytesEqual(cert.signatureAlgorithm, cert.tbsSignatureAlgorithm)) {
    return cert.node.verify(issuer.node.publicKey);
  }
  const value = cert.signatureValue;
  if (value.length < 2 || value[0] !== 0) return false;
  const key = issuer.publicKey;
  if (key?.asymmetricKeyType !== algorithm.keyType) return false;
  try {
    return verify(algorithm.digest, cert.tbs, key, value.subarray(1));
  } catch {
    return false;
  }
}

/**
 * The fields of a DER certificate as {@link parseCertificate} reads them, without the view around them: for what
 * only reads an extension, such as {@link chainIssuerIds}.
 */
function readCertificate(der: Uint8Array): CertificateFields {
  const top = new Reader(der, 0, der.length);
  const certificate = top.expect(SEQUENCE, 'certificate');
  top.finish('the certificate');
  const parts = Reader.of(der, certificate, 'certificate');
  const tbsElement = parts.expect(SEQUENCE, 'tbsCertificate');
  const tbs = Reader.of(der, tbsElement, 'tbsCertificate');
  const signatureAlgorithm = parts.expect(SEQUENCE, 'signatureAlgorithm');
  const signatureValue = parts.expect(BIT_STRING, 'signatureValue');
  parts.finish('certificate');

  tbs.optional(VERSION, 'version');
  tbs.expect(INTEGER, 'serialNumber');
  const tbsSignatureAlgorithm = tbs.expect(SEQUENCE, 'signature');
  const issuer = tbs.expect(SEQUENCE, 'issuer');
  const validity = Reader.of(der, tbs.expect(SEQUENCE, 'validity'), 'validity');
  const notBefore = time(der, validity.next('notBefore'), 'notBefore');
  const notAfter = time(der, validity.next('notAfter'), 'notAfter');
  validity.finish('validity');
  const subject = tbs.expect(SEQUENCE, 'subject');
  const spki = tbs.expect(SEQUENCE, 'subjectPublicKeyInfo');
  tbs.optional(ISSUER_UID, 'issuerUniqueID');
  tbs.optional(SUBJECT_UID, 'subjectUniqueID');
  const extensions: CertificateExtension[] = [];
  const wrapper = tbs.optional(EXTENSIONS, 'extensions');
  tbs.finish('tbsCertificate');
  if (wrapper !== undefined) {
    const outer = Reader.of(der, wrapper, 'extensions');
    const list = Reader.of(der, outer.expect(SEQUENCE, 'extensions'), 'extensions');
    outer.finish('extensions');
    while (!list.done) {
      const fields = Reader.of(der, list.expect(SEQUENCE, 'extension'), 'extension');
      const id = oid(der, fields.expect(OBJECT_IDENTIFIER, 'extension id'));
      const flag = fields.optional(BOOLEAN, 'extension critical flag');
      if (flag !== undefined && (flag.end - flag.content !== 1 || der[flag.content] !== 0xff)) {
        // DER: a BOOLEAN is one byte, TRUE is 0xff, and a DEFAULT FALSE value is omitted.
        fail(`extension ${id} critical flag is not der true`);
      }
      const value = fields.expect(OCTET_STRING, `extension ${id} value`);
      fields.finish(`extension ${id}`);
      extensions.push({ oid: id, critical: flag !== undefined, value: der.subarray(value.content, value.end) });
    }
  }
  return {
    der,
    issuer: der.subarray(issuer.start, issuer.end),
    subject: der.subarray(subject.start, subject.end),
    notBefore,
    notAfter,
    spki: der.subarray(spki.start, spki.end),
    extensions,
    tbs: der.subarray(tbsElement.start, tbsElement.end),
    tbsSignatureAlgorithm: der.subarray(tbsSignatureAlgorithm.start, tbsSignatureAlgorithm.end),
    signatureAlgorithm: der.subarray(signatureAlgorithm.start, signatureAlgorithm.end),
    signatureValue: der.subarray(signatureValue.content, signatureValue.end),
  };
}

function extension(view: Pick<CertificateView, 'extensions'>, id: string): CertificateExtension | undefined {
  return view.extensions.find((each) => each.oid === id);
}

/** basicConstraints (RFC 5280 §4.2.1.9): `cA` and `pathLenConstraint`; null when the extension is absent. */
export function basicConstraints(view: CertificateView): { ca: boolean; pathLength?: number } | null {
  const found = extension(view, OID_BASIC_CONSTRAINTS);
  if (found === undefined) return null;
  const top = new Reader(found.value, 0, found.value.length);
  const fields = Reader.of(found.value, top.expect(SEQUENCE, 'basicConstraints'), 'basicConstraints');
  top.finish('basicConstraints');
  const ca = fields.optional(BOOLEAN, 'basicConstraints cA');
  if (ca !== undefined && (ca.end - ca.content !== 1 || found.value[ca.content] !== 0xff)) {
    fail('basicConstraints cA is not der true');
  }
  const length = fields.optional(INTEGER, 'basicConstraints pathLenConstraint');
  fields.finish('basicConstraints');
  if (length === undefined) return { ca: ca !== undefined };
  const bytes = found.value.subarray(length.content, length.end);
  if (bytes.length === 0 || bytes.length > 4 || ((bytes[0] as number) & 0x80) !== 0) {
    fail('basicConstraints pathLenConstraint is not a small non-negative integer');
  }
  let pathLength = 0;
  for (const byte of bytes) pathLength = pathLength * 256 + byte;
  return { ca: ca !== undefined, pathLength };
}

/** keyUsage (RFC 5280 §4.2.1.3) as flags (see {@link KEY_USAGE}); null when the extension is absent. */
export function keyUsage(view: CertificateView): number | null {
  const found = extension(view, OID_KEY_USAGE);
  if (found === undefined) return null;
  const top = new Reader(found.value, 0, found.value.length);
  const bits = top.expect(BIT_STRING, 'keyUsage');
  top.finish('keyUsage');
  const bytes = found.value.subarray(bits.content, bits.end);
  if (bytes.length < 1 || (bytes[0] as number) > 7 || (bytes.length === 1 && bytes[0] !== 0)) {
    fail('keyUsage is not a valid bit string');
  }
  let flags = 0;
  for (let i = 1; i < bytes.length && i <= 2; i++) {
    const byte = bytes[i] as number;
    // Bit n is the n-th bit from the most significant bit of the first content byte.
    for (let bit = 0; bit < 8; bit++) if (byte & (0x80 >> bit)) flags |= 1 << ((i - 1) * 8 + bit);
  }
  return flags;
}

/** The URIs of the subjectAltName extension (RFC 5280 §4.2.1.6), in order; empty when it is absent. */
export function subjectAltNameUris(view: CertificateView): string[] {
  const all = view.extensions.filter((each) => each.oid === OID_SUBJECT_ALT_NAME);
  if (all.length > 1) fail('certificate must not have more than one subject alternative name extension');
  const found = all[0];
  if (found === undefined) return [];
  const top = new Reader(found.value, 0, found.value.length);
  const names = Reader.of(found.value, top.expect(SEQUENCE, 'subjectAltName'), 'subjectAltName');
  top.finish('subjectAltName');
  const uris: string[] = [];
  while (!names.done) {
    const name = names.next('subjectAltName name');
    if (name.tag !== SAN_URI) continue;
    const bytes = found.value.subarray(name.content, name.end);
    // IA5String: 7-bit ASCII only.
    if (bytes.some((byte) => byte > 0x7f)) fail('subjectAltName uri has a byte outside 7-bit ascii');
    uris.push(Buffer.from(bytes).toString('latin1'));
  }
  return uris;
}

export const OID_AUTHORITY_KEY_IDENTIFIER = '2.5.29.35';
/** authorityKeyIdentifier's keyIdentifier: [0] IMPLICIT OCTET STRING. */
const AKI_KEY_IDENTIFIER = 0x80;

/**
 * The keyIdentifier of the authorityKeyIdentifier extension (RFC 5280 §4.2.1.1) in lowercase hex; undefined when the
 * extension or the field is absent.
 */
export function authorityKeyId(view: Pick<CertificateView, 'extensions'>): string | undefined {
  const found = extension(view, OID_AUTHORITY_KEY_IDENTIFIER);
  if (found === undefined) return undefined;
  const top = new Reader(found.value, 0, found.value.length);
  const fields = Reader.of(found.value, top.expect(SEQUENCE, 'authorityKeyIdentifier'), 'authorityKeyIdentifier');
  top.finish('authorityKeyIdentifier');
  const keyId = fields.optional(AKI_KEY_IDENTIFIER, 'authorityKeyIdentifier keyIdentifier');
  return keyId === undefined ? undefined : Buffer.from(found.value.subarray(keyId.content, keyId.end)).toString('hex');
}

/**
 * The authority IDs that issued a certificate chain (leaf first): the key identifier of each certificate's
 * Authority Key Identifier, in lowercase hex. A Sigil CA sets it to the subject key identifier of the issuing CA
 * certificate, which is the X.509 authority ID of `localauthority x509 show` and of a server's tainted list; the
 * one rule by which an agent (its SVIDs) and a nested server (its CA) find what a tainted key issued. Read with the
 * lean DER reader: @peculiar/x509's parse of every chain was 40 % of the agent's CPU time to sign a thousand SVIDs.
 *
 * @throws CertificateFormatError when a certificate or its extension is not DER.
 */
export function chainIssuerIds(chain: readonly Uint8Array[]): string[] {
  return issuerIdsOf(chain.map(readCertificate));
}

/** {@link chainIssuerIds} of certificates already read (leaf first). @throws CertificateFormatError as it does. */
export function issuerIdsOf(chain: readonly Pick<CertificateView, 'extensions'>[]): string[] {
  const ids: string[] = [];
  for (const certificate of chain) {
    const keyId = authorityKeyId(certificate);
    if (keyId !== undefined) ids.push(keyId);
  }
  return ids;
}
