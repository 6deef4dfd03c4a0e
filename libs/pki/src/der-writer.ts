/**
 * A minimal DER writer for certificates and certification requests. It only encodes; it never signs. Values are
 * written in their one DER form (ITU-T X.690 §10): shortest lengths, minimal integers, BOOLEAN TRUE as 0xFF.
 */
import { DerTag } from './der-tags.js';
import { PkiError } from './errors.js';

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

const PRINTABLE_STRING = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

/** True when `text` fits the ASN.1 PrintableString alphabet (X.680 §41.4). */
export function isPrintableString(text: string): boolean {
  return PRINTABLE_STRING.test(text);
}

/** A PrintableString; `text` must use only the PrintableString alphabet (X.680 §41.4). */
export function derPrintableString(text: string): Buffer {
  if (!isPrintableString(text)) {
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
