/**
 * A minimal, strict DER element reader: just enough to copy exact byte ranges (a certificate's subject, a CSR's
 * SubjectPublicKeyInfo) out of structures that @peculiar/x509 has already parsed, and to refuse trailing data.
 * Internal to @sigil/pki; no decoding of values beyond lengths.
 */

/** A DER element located inside a buffer: `[start, end)` is the whole TLV, `[contentStart, end)` its value. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
}

/** Thrown by the reader; callers wrap it into a PkiError with their own code and field name. */
export class DerError extends Error {
  override name = 'DerError';
}

export const DER_TAG = {
  integer: 0x02,
  bitString: 0x03,
  sequence: 0x30,
  contextConstructed0: 0xa0,
} as const;

const CONSTRUCTED = 0x20;
const MAX_LENGTH_OCTETS = 4;

/** Reads the element at `offset`, which must end at or before `limit`. */
export function readElement(bytes: Uint8Array, offset: number, limit: number = bytes.length): DerElement {
  if (offset + 2 > limit) throw new DerError(`truncated element at offset ${offset}`);
  const tag = bytes[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`high-tag-number form at offset ${offset} is not supported`);
  const first = bytes[offset + 1]!;
  let length: number;
  let contentStart: number;
  if (first < 0x80) {
    length = first;
    contentStart = offset + 2;
  } else {
    const octets = first & 0x7f;
    if (octets === 0) throw new DerError(`indefinite length at offset ${offset} is not der`);
    if (octets > MAX_LENGTH_OCTETS) throw new DerError(`length of ${octets} octets at offset ${offset} is too large`);
    if (offset + 2 + octets > limit) throw new DerError(`truncated length at offset ${offset}`);
    length = 0;
    for (let i = 0; i < octets; i += 1) length = length * 256 + bytes[offset + 2 + i]!;
    if (bytes[offset + 2]! === 0 || length < 0x80) {
      throw new DerError(`non-minimal length encoding at offset ${offset} is not der`);
    }
    contentStart = offset + 2 + octets;
  }
  const end = contentStart + length;
  if (end > limit) throw new DerError(`element at offset ${offset} runs past the end of its container`);
  return { tag, start: offset, contentStart, end };
}

/** Reads the one element that makes up the whole of `bytes`, refusing trailing data. */
export function readSingleElement(bytes: Uint8Array, expectedTag: number): DerElement {
  const element = readElement(bytes, 0);
  if (element.tag !== expectedTag) {
    throw new DerError(`expected tag 0x${hex(expectedTag)}, found 0x${hex(element.tag)}`);
  }
  if (element.end !== bytes.length) throw new DerError(`${bytes.length - element.end} bytes of trailing data`);
  return element;
}

/** The elements that exactly fill a constructed element's value. */
export function childrenOf(bytes: Uint8Array, parent: DerElement): DerElement[] {
  if ((parent.tag & CONSTRUCTED) === 0) throw new DerError(`element at offset ${parent.start} is not constructed`);
  const children: DerElement[] = [];
  let offset = parent.contentStart;
  while (offset < parent.end) {
    const child = readElement(bytes, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

/** A copy of the element's full encoding (tag, length and value). */
export function encodingOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.slice(element.start, element.end);
}

function expectTag(element: DerElement | undefined, tag: number, what: string): DerElement {
  if (element === undefined) throw new DerError(`${what} is missing`);
  if (element.tag !== tag) throw new DerError(`${what} has tag 0x${hex(element.tag)}, expected 0x${hex(tag)}`);
  return element;
}

/** Exact encodings of the parts of an X.509 certificate that must be copied byte for byte (RFC 5280 §4.1). */
export function certificateParts(der: Uint8Array): { issuer: Uint8Array; subject: Uint8Array; spki: Uint8Array } {
  const certificate = readSingleElement(der, DER_TAG.sequence);
  const tbs = expectTag(childrenOf(der, certificate)[0], DER_TAG.sequence, 'tbsCertificate');
  const fields = childrenOf(der, tbs);
  const skip = fields[0]?.tag === DER_TAG.contextConstructed0 ? 1 : 0;
  expectTag(fields[skip], DER_TAG.integer, 'serialNumber');
  expectTag(fields[skip + 1], DER_TAG.sequence, 'signature');
  const issuer = expectTag(fields[skip + 2], DER_TAG.sequence, 'issuer');
  expectTag(fields[skip + 3], DER_TAG.sequence, 'validity');
  const subject = expectTag(fields[skip + 4], DER_TAG.sequence, 'subject');
  const spki = expectTag(fields[skip + 5], DER_TAG.sequence, 'subjectPublicKeyInfo');
  return { issuer: encodingOf(der, issuer), subject: encodingOf(der, subject), spki: encodingOf(der, spki) };
}

/** The exact SubjectPublicKeyInfo encoding inside a PKCS#10 request (RFC 2986 §4). */
export function csrSubjectPublicKeyInfo(der: Uint8Array): Uint8Array {
  const request = readSingleElement(der, DER_TAG.sequence);
  const info = expectTag(childrenOf(der, request)[0], DER_TAG.sequence, 'certificationRequestInfo');
  const fields = childrenOf(der, info);
  expectTag(fields[0], DER_TAG.integer, 'version');
  expectTag(fields[1], DER_TAG.sequence, 'subject');
  return encodingOf(der, expectTag(fields[2], DER_TAG.sequence, 'subjectPKInfo'));
}

/** The subjectPublicKey BIT STRING value (without the unused-bits octet) of a SubjectPublicKeyInfo. */
export function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const info = readSingleElement(spki, DER_TAG.sequence);
  const fields = childrenOf(spki, info);
  expectTag(fields[0], DER_TAG.sequence, 'algorithm');
  const bits = expectTag(fields[1], DER_TAG.bitString, 'subjectPublicKey');
  if (fields.length !== 2) throw new DerError('subjectPublicKeyInfo has extra fields');
  if (bits.end === bits.contentStart || spki[bits.contentStart] !== 0) {
    throw new DerError('subjectPublicKey must be a bit string with no unused bits');
  }
  return spki.slice(bits.contentStart + 1, bits.end);
}

function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}
