/**
 * A minimal DER writer for the fast X.509-SVID path and a minimal, defensive DER reader for untrusted input (CSRs).
 *
 * The writer only encodes; it never signs. The reader accepts strict DER only (ITU-T X.690 §10): definite lengths in
 * their shortest form, single-byte tags, every element inside its container, and a bounded nesting depth. Every
 * failure is a {@link PkiError} whose message names the rule, so malformed input can never surface as a TypeError or
 * RangeError, and every loop advances by at least one byte, so no input can make it spin.
 */
import { PkiError, type PkiErrorCode } from '../errors.js';

/** Universal tags used by Sigil (ITU-T X.680 §8.6), already combined with the constructed bit where DER requires it. */
export const DerTag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OBJECT_IDENTIFIER: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** The default nesting limit of the reader; a PKCS#10 request nests about eight levels deep. */
export const DER_MAX_DEPTH = 20;

// ---------------------------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------------------------

/** Number of bytes the DER length field of a `length`-byte content takes. */
function derLengthSize(length: number): number {
  if (length < 0x80) return 1;
  if (length <= 0xff) return 2;
  if (length <= 0xffff) return 3;
  if (length <= 0xffffff) return 4;
  return 5;
}

/** Writes a DER length at `offset` in `target` and returns the offset after it (shortest form, X.690 §10.1). */
function writeDerLength(target: Uint8Array, offset: number, length: number): number {
  if (!Number.isSafeInteger(length) || length < 0 || length > 0xffffffff) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `der length must be an integer from 0 to 2^32-1, got ${length}`);
  }
  if (length < 0x80) {
    target[offset] = length;
    return offset + 1;
  }
  const size = derLengthSize(length) - 1;
  target[offset] = 0x80 | size;
  for (let i = size; i >= 1; i--) {
    target[offset + i] = length & 0xff;
    length = Math.floor(length / 256);
  }
  return offset + size + 1;
}

/** The DER encoding of a length (shortest form). */
export function encodeDerLength(length: number): Buffer {
  const out = Buffer.allocUnsafe(derLengthSize(length));
  writeDerLength(out, 0, length);
  return out;
}

/** A TLV: `tag`, the DER length of the concatenated `parts`, then the parts. */
export function derTlv(tag: number, ...parts: readonly Uint8Array[]): Buffer {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = Buffer.allocUnsafe(1 + derLengthSize(length) + length);
  out[0] = tag;
  let offset = writeDerLength(out, 1, length);
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A SEQUENCE of already encoded elements. */
export function derSequence(...elements: readonly Uint8Array[]): Buffer {
  return derTlv(DerTag.SEQUENCE, ...elements);
}

/** A SET of already encoded elements, in the order given (callers sort SET OF values where DER requires it). */
export function derSet(...elements: readonly Uint8Array[]): Buffer {
  return derTlv(DerTag.SET, ...elements);
}

/**
 * A context-specific tag `[number]`: constructed (explicit tagging, or implicit tagging of a constructed type) when
 * `constructed` is true, else primitive (implicit tagging of a primitive type).
 */
export function derContext(number: number, constructed: boolean, ...parts: readonly Uint8Array[]): Buffer {
  if (!Number.isInteger(number) || number < 0 || number > 30) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `der context tag number must be from 0 to 30, got ${number}`);
  }
  return derTlv(0x80 | (constructed ? 0x20 : 0) | number, ...parts);
}

/** A small non-negative INTEGER, minimally encoded (X.690 §8.3.2). */
export function derSmallInteger(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `der small integer must be a non-negative safe integer, got ${value}`);
  }
  const bytes: number[] = [];
  do {
    bytes.unshift(value & 0xff);
    value = Math.floor(value / 256);
  } while (value > 0);
  if ((bytes[0] as number) & 0x80) bytes.unshift(0);
  return derTlv(DerTag.INTEGER, Uint8Array.from(bytes));
}

/** An OBJECT IDENTIFIER from its dotted form, e.g. `1.2.840.10045.4.3.2` (X.690 §8.19). */
export function derOid(dotted: string): Buffer {
  const arcs = dotted.split('.').map((arc) => (/^(0|[1-9][0-9]*)$/.test(arc) ? Number(arc) : NaN));
  const [first, second] = arcs;
  if (
    arcs.length < 2 ||
    arcs.some((arc) => !Number.isSafeInteger(arc)) ||
    first === undefined ||
    second === undefined ||
    first > 2 ||
    (first < 2 && second > 39)
  ) {
    throw new PkiError(
      'ERR_PKI_INVALID_INPUT',
      `object identifier must be dotted decimal arcs, got ${JSON.stringify(dotted)}`,
    );
  }
  const out: number[] = [];
  const pushArc = (arc: number): void => {
    const groups: number[] = [arc % 128];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) groups.unshift((rest % 128) | 0x80);
    out.push(...groups);
  };
  pushArc(first * 40 + second);
  for (const arc of arcs.slice(2)) pushArc(arc);
  return derTlv(DerTag.OBJECT_IDENTIFIER, Uint8Array.from(out));
}

/** BOOLEAN TRUE as DER requires it (0xFF, X.690 §11.1). */
export const DER_TRUE: Buffer = Buffer.from([DerTag.BOOLEAN, 1, 0xff]);

/** NULL. */
export const DER_NULL: Buffer = Buffer.from([DerTag.NULL, 0]);

/** A BIT STRING whose content is `bytes` with `unusedBits` (0–7) padding bits in the last byte. */
export function derBitString(bytes: Uint8Array, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw new PkiError(
      'ERR_PKI_INVALID_INPUT',
      `bit string unused bits must be 0 to 7 (0 when empty), got ${unusedBits}`,
    );
  }
  return derTlv(DerTag.BIT_STRING, Buffer.from([unusedBits]), bytes);
}

/** An OCTET STRING. */
export function derOctetString(bytes: Uint8Array): Buffer {
  return derTlv(DerTag.OCTET_STRING, bytes);
}

/** A UTF8String. */
export function derUtf8String(text: string): Buffer {
  return derTlv(DerTag.UTF8_STRING, Buffer.from(text, 'utf8'));
}

/** A PrintableString; `text` must use only the PrintableString alphabet (X.680 §41.4). */
export function derPrintableString(text: string): Buffer {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(text)) {
    throw new PkiError(
      'ERR_PKI_INVALID_INPUT',
      `printable string has a character outside its alphabet: ${JSON.stringify(text)}`,
    );
  }
  return derTlv(DerTag.PRINTABLE_STRING, Buffer.from(text, 'latin1'));
}

const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));

/**
 * A certificate Time (RFC 5280 §4.1.2.5) for a whole number of seconds since the epoch: UTCTime `YYMMDDHHMMSSZ` for
 * years 1950–2049, GeneralizedTime `YYYYMMDDHHMMSSZ` otherwise (years 0–9999).
 */
export function derTime(epochSeconds: number): Buffer {
  if (!Number.isSafeInteger(epochSeconds)) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `time must be a whole number of seconds, got ${epochSeconds}`);
  }
  const date = new Date(epochSeconds * 1000);
  const year = date.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `time year must be from 0000 to 9999, got ${year}`);
  }
  const rest =
    TWO_DIGITS[date.getUTCMonth() + 1]! +
    TWO_DIGITS[date.getUTCDate()]! +
    TWO_DIGITS[date.getUTCHours()]! +
    TWO_DIGITS[date.getUTCMinutes()]! +
    TWO_DIGITS[date.getUTCSeconds()]! +
    'Z';
  if (year >= 1950 && year < 2050) {
    return derTlv(DerTag.UTC_TIME, Buffer.from(TWO_DIGITS[year % 100]! + rest, 'latin1'));
  }
  return derTlv(DerTag.GENERALIZED_TIME, Buffer.from(String(year).padStart(4, '0') + rest, 'latin1'));
}

// ---------------------------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------------------------

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

/** Decodes an OBJECT IDENTIFIER element to its dotted form, enforcing minimal base-128 arcs. */
export function decodeDerOid(buf: Uint8Array, element: DerElement, context: DerContext): string {
  if (element.tag !== DerTag.OBJECT_IDENTIFIER) fail(context, element.start, 'expected an object identifier');
  if (element.end === element.contentStart) fail(context, element.start, 'object identifier is empty');
  const arcs: number[] = [];
  let value = 0;
  let fresh = true;
  for (let i = element.contentStart; i < element.end; i++) {
    const byte = buf[i] as number;
    if (fresh && byte === 0x80) fail(context, i, 'object identifier arc has a leading 0x80 byte (not minimal)');
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) fail(context, i, 'object identifier arc is too large');
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
  if (!fresh) fail(context, element.end - 1, 'object identifier ends inside an arc');
  return arcs.join('.');
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
