/**
 * A minimal, defensive DER reader for untrusted input (CSRs, certificates, SubjectPublicKeyInfo). It accepts strict
 * DER only (ITU-T X.690 §10): definite lengths in their shortest form, single-byte tags, every element inside its
 * container, and a bounded nesting depth. Every failure is a {@link PkiError} whose message names the rule, so
 * malformed input can never surface as a TypeError or RangeError, and every loop advances by at least one byte, so no
 * input can make it spin.
 */
import { decodeOidContent } from '@sigil/spiffe';
import { DerTag } from './der-tags.js';
import { PkiError, type PkiErrorCode } from './errors.js';

/** The default nesting limit of the reader; a PKCS#10 request nests about eight levels deep. */
export const DER_MAX_DEPTH = 20;

/** One element found by the reader: offsets into the buffer it was read from. */
export interface DerElement {
  /** The identifier octet (class, constructed bit and tag number below 31). */
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly start: number;
  /** Offset of the first content byte. */
  readonly contentStart: number;
  /** Offset just after the last content byte. */
  readonly end: number;
}

/** What the reader is reading, for its errors: e.g. `{ name: 'csr', code: 'ERR_CSR_INVALID' }`. */
export interface DerContext {
  /** Prefix of every message, naming the input. */
  readonly name: string;
  /** The PkiError code thrown for malformed input. */
  readonly code: PkiErrorCode;
}

function fail(context: DerContext, offset: number, rule: string): never {
  throw new PkiError(context.code, `${context.name}: ${rule} at offset ${offset}`);
}

/**
 * Reads the element starting at `offset`, which must end at or before `limit`. Rejects high tag numbers, indefinite
 * lengths, non-minimal length encodings, lengths over 2^32-1 and elements overrunning `limit`.
 */
export function readDerElement(buf: Uint8Array, offset: number, limit: number, context: DerContext): DerElement {
  if (offset >= limit) fail(context, offset, 'unexpected end of data, expected an element');
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) fail(context, offset, 'high tag numbers are not supported');
  if (offset + 1 >= limit) fail(context, offset, 'unexpected end of data, expected a length');
  const first = buf[offset + 1] as number;
  let length: number;
  let contentStart: number;
  if (first < 0x80) {
    length = first;
    contentStart = offset + 2;
  } else if (first === 0x80) {
    fail(context, offset, 'indefinite length is not allowed in der');
  } else {
    const size = first & 0x7f;
    if (size > 4) fail(context, offset, `length of ${size} bytes is too long`);
    if (offset + 2 + size > limit) fail(context, offset, 'unexpected end of data inside a length');
    if (buf[offset + 2] === 0) fail(context, offset, 'length has a leading zero byte (not minimal)');
    length = 0;
    for (let i = 0; i < size; i++) length = length * 256 + (buf[offset + 2 + i] as number);
    if (length < 0x80) fail(context, offset, 'length below 128 must use the short form (not minimal)');
    contentStart = offset + 2 + size;
  }
  if (length > limit - contentStart) fail(context, offset, `length ${length} overruns its container`);
  return { tag, start: offset, contentStart, end: contentStart + length };
}

/** Describes a tag for error messages, e.g. `0x30`. */
function hexTag(tag: number): string {
  return `0x${tag.toString(16).padStart(2, '0')}`;
}

/**
 * Walks the children of one constructed element (or of a whole buffer) in order. Each cursor knows its nesting depth
 * and refuses to descend past `maxDepth`.
 */
export class DerCursor {
  private offset: number;

  private constructor(
    /** The buffer read from. */
    readonly buf: Uint8Array,
    start: number,
    /** Offset just after the last byte this cursor may read. */
    readonly end: number,
    /** Nesting depth of the elements this cursor yields (1 for top-level elements). */
    readonly depth: number,
    private readonly maxDepth: number,
    private readonly context: DerContext,
  ) {
    this.offset = start;
  }

  /** A cursor over the top-level elements of `buf` (or of `buf[start, end)`). */
  static over(
    buf: Uint8Array,
    context: DerContext,
    options: { start?: number; end?: number; maxDepth?: number } = {},
  ): DerCursor {
    const start = options.start ?? 0;
    const end = options.end ?? buf.length;
    if (!(Number.isInteger(start) && Number.isInteger(end) && start >= 0 && start <= end && end <= buf.length)) {
      throw new PkiError(context.code, `${context.name}: reader bounds ${start}..${end} are outside the buffer`);
    }
    return new DerCursor(buf, start, end, 1, options.maxDepth ?? DER_MAX_DEPTH, context);
  }

  /** Whether every byte of this cursor's range has been consumed. */
  get isDone(): boolean {
    return this.offset >= this.end;
  }

  /** Returns the next element; `what` names it in the error when there is none or it is malformed. */
  next(what: string): DerElement {
    if (this.offset >= this.end) fail(this.context, this.offset, `missing ${what}`);
    const element = readDerElement(this.buf, this.offset, this.end, this.context);
    this.offset = element.end;
    return element;
  }

  /** Returns the next element and checks that its identifier octet is `tag`. */
  expect(tag: number, what: string): DerElement {
    const start = this.offset;
    const element = this.next(what);
    if (element.tag !== tag)
      fail(this.context, start, `${what} must have tag ${hexTag(tag)}, got ${hexTag(element.tag)}`);
    return element;
  }

  /** Returns the next element only when its identifier octet is `tag`, else consumes nothing and returns undefined. */
  optional(tag: number, what: string): DerElement | undefined {
    if (this.offset >= this.end || this.buf[this.offset] !== tag) return undefined;
    return this.next(what);
  }

  /** A cursor over the children of `element`, which must be constructed and may not nest past the depth limit. */
  enter(element: DerElement, what: string): DerCursor {
    if ((element.tag & 0x20) === 0) fail(this.context, element.start, `${what} must be constructed`);
    if (this.depth + 1 > this.maxDepth)
      fail(this.context, element.start, `nesting deeper than ${this.maxDepth} levels`);
    return new DerCursor(this.buf, element.contentStart, element.end, this.depth + 1, this.maxDepth, this.context);
  }

  /** Throws unless every byte has been consumed; `what` names the container for the message. */
  finish(what: string): void {
    if (this.offset < this.end) fail(this.context, this.offset, `unexpected data after the last element of ${what}`);
  }
}

/**
 * Checks that `buf[start, end)` is a sequence of well-formed DER elements, descending into every constructed element
 * (each must be exactly filled by its children) down to `maxDepth` levels. The walk is iterative, so a hostile nesting
 * depth costs neither stack nor more than one pass.
 */
export function checkDerStructure(
  buf: Uint8Array,
  context: DerContext,
  options: { start?: number; end?: number; maxDepth?: number } = {},
): void {
  const maxDepth = options.maxDepth ?? DER_MAX_DEPTH;
  // Each frame is [next offset, end] of a constructed element still being walked.
  const stack: Array<[number, number]> = [[options.start ?? 0, options.end ?? buf.length]];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    if (frame[0] >= frame[1]) {
      stack.pop();
      continue;
    }
    const element = readDerElement(buf, frame[0], frame[1], context);
    frame[0] = element.end;
    if ((element.tag & 0x20) !== 0 && element.contentStart < element.end) {
      if (stack.length + 1 > maxDepth) fail(context, element.start, `nesting deeper than ${maxDepth} levels`);
      stack.push([element.contentStart, element.end]);
    }
  }
}

/** The content bytes of `element` (a view, not a copy). */
export function derContent(buf: Uint8Array, element: DerElement): Uint8Array {
  return buf.subarray(element.contentStart, element.end);
}

/** The whole TLV of `element` (a view, not a copy). */
export function derBytes(buf: Uint8Array, element: DerElement): Uint8Array {
  return buf.subarray(element.start, element.end);
}

/** Decodes an OBJECT IDENTIFIER element to its dotted form, enforcing minimal base-128 arcs (@sigil/spiffe's decoder). */
export function decodeDerOid(buf: Uint8Array, element: DerElement, context: DerContext): string {
  if (element.tag !== DerTag.OBJECT_IDENTIFIER) fail(context, element.start, 'expected an object identifier');
  if (element.end === element.contentStart) fail(context, element.start, 'object identifier is empty');
  const decoded = decodeOidContent(buf, element.contentStart, element.end);
  if (typeof decoded !== 'string') fail(context, decoded.offset, decoded.rule);
  return decoded;
}

/** Decodes an IA5String element (7-bit ASCII only). */
export function decodeDerIa5String(buf: Uint8Array, element: DerElement, context: DerContext): string {
  for (let i = element.contentStart; i < element.end; i++) {
    if ((buf[i] as number) > 0x7f) fail(context, i, 'ia5 string has a byte outside 7-bit ascii');
  }
  return Buffer.from(buf.buffer, buf.byteOffset + element.contentStart, element.end - element.contentStart).toString(
    'latin1',
  );
}

/** The context of {@link certificateParts} and {@link subjectPublicKeyBits} when the caller names none. */
const DER_INVALID: DerContext = { name: 'der', code: 'ERR_DER_INVALID' };

/**
 * Exact encodings (copies) of the parts of an X.509 certificate that are copied byte for byte into the certificates
 * it issues or checks against (RFC 5280 §4.1): issuer, subject and SubjectPublicKeyInfo. Refuses trailing data.
 */
export function certificateParts(
  der: Uint8Array,
  context: DerContext = DER_INVALID,
): { issuer: Uint8Array; subject: Uint8Array; spki: Uint8Array } {
  const top = DerCursor.over(der, context);
  const certificate = top.expect(DerTag.SEQUENCE, 'certificate');
  top.finish('the input (one certificate)');
  const certificateFields = top.enter(certificate, 'certificate');
  const tbs = certificateFields.expect(DerTag.SEQUENCE, 'tbsCertificate');
  const fields = certificateFields.enter(tbs, 'tbsCertificate');
  fields.optional(DerTag.CONTEXT_0_CONSTRUCTED, 'version');
  fields.expect(DerTag.INTEGER, 'serialNumber');
  fields.expect(DerTag.SEQUENCE, 'signature');
  const issuer = fields.expect(DerTag.SEQUENCE, 'issuer');
  fields.expect(DerTag.SEQUENCE, 'validity');
  const subject = fields.expect(DerTag.SEQUENCE, 'subject');
  const spki = fields.expect(DerTag.SEQUENCE, 'subjectPublicKeyInfo');
  return {
    issuer: derBytes(der, issuer).slice(),
    subject: derBytes(der, subject).slice(),
    spki: derBytes(der, spki).slice(),
  };
}

/** The subjectPublicKey BIT STRING value (a copy, without the unused-bits octet) of a SubjectPublicKeyInfo. */
export function subjectPublicKeyBits(spki: Uint8Array, context: DerContext = DER_INVALID): Uint8Array {
  const top = DerCursor.over(spki, context);
  const info = top.expect(DerTag.SEQUENCE, 'subjectPublicKeyInfo');
  top.finish('the input (one subjectPublicKeyInfo)');
  const fields = top.enter(info, 'subjectPublicKeyInfo');
  fields.expect(DerTag.SEQUENCE, 'algorithm');
  const bits = fields.expect(DerTag.BIT_STRING, 'subjectPublicKey');
  fields.finish('subjectPublicKeyInfo');
  const value = derContent(spki, bits);
  if (value.length === 0 || value[0] !== 0) {
    throw new PkiError(context.code, `${context.name}: subjectPublicKey must be a bit string with no unused bits`);
  }
  return value.slice(1);
}
