import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PkiError } from '../errors.js';
import {
  checkDerStructure,
  decodeDerIa5String,
  decodeDerOid,
  derBitString,
  DerCursor,
  derOid,
  derPrintableString,
  derSequence,
  derSmallInteger,
  DerTag,
  derTime,
  derTlv,
  encodeDerLength,
  readDerElement,
  type DerContext,
} from './der.js';

const CONTEXT: DerContext = { name: 'test input', code: 'ERR_CSR_INVALID' };
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const bytes = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

function errorOf(run: () => unknown): PkiError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PkiError);
    return error as PkiError;
  }
  throw new Error('expected a PkiError, nothing was thrown');
}

describe('der writer', () => {
  it.each([
    [0, '00'],
    [127, '7f'],
    [128, '8180'],
    [255, '81ff'],
    [256, '820100'],
    [65535, '82ffff'],
    [65536, '83010000'],
    [0x1000000, '8401000000'],
  ])('encodes length %i in its shortest form as %s', (length, expected) => {
    expect(hex(encodeDerLength(length))).toBe(expected);
  });

  it('refuses lengths that are negative, fractional or above 2^32-1', () => {
    for (const length of [-1, 1.5, 2 ** 32]) {
      expect(errorOf(() => encodeDerLength(length)).message).toBe(
        `der length must be an integer from 0 to 2^32-1, got ${length}`,
      );
    }
  });

  it.each([
    ['1.2.840.10045.4.3.2', '06082a8648ce3d040302'],
    ['1.2.840.113549.1.9.14', '06092a864886f70d01090e'],
    ['2.5.29.17', '0603551d11'],
    ['2.999.3', '0603883703'],
  ])('encodes object identifier %s', (oid, expected) => {
    expect(hex(derOid(oid))).toBe(expected);
  });

  it.each(['1', '3.1', '1.40', '1.2.03', '1..2', 'a.b'])('refuses object identifier %j', (oid) => {
    expect(errorOf(() => derOid(oid)).message).toBe(
      `object identifier must be dotted decimal arcs, got ${JSON.stringify(oid)}`,
    );
  });

  it('encodes small integers', () => {
    expect(hex(derSmallInteger(0))).toBe('020100');
    expect(hex(derSmallInteger(2))).toBe('020102');
    expect(hex(derSmallInteger(128))).toBe('02020080');
    expect(hex(derSmallInteger(65535))).toBe('020300ffff');
  });

  it.each([
    ['2049-12-31T23:59:59Z', '170d3439313233313233353935395a'],
    ['2050-01-01T00:00:00Z', '180f32303530303130313030303030305a'],
    ['1950-01-01T00:00:00Z', '170d3530303130313030303030305a'],
    ['1949-12-31T23:59:59Z', '180f31393439313233313233353935395a'],
  ])('encodes %s as UTCTime before 2050 and GeneralizedTime from 2050 (RFC 5280)', (iso, expected) => {
    expect(hex(derTime(Date.parse(iso) / 1000))).toBe(expected);
  });

  it('refuses fractional seconds', () => {
    expect(errorOf(() => derTime(1.5)).message).toBe('time must be a whole number of seconds, got 1.5');
  });

  it('encodes bit strings with their unused bits and refuses more than 7', () => {
    expect(hex(derBitString(bytes('a8'), 3))).toBe('030203a8');
    expect(errorOf(() => derBitString(bytes('a8'), 8)).message).toBe(
      'bit string unused bits must be 0 to 7 (0 when empty), got 8',
    );
  });

  it('refuses characters outside the PrintableString alphabet', () => {
    expect(hex(derPrintableString('Sigil'))).toBe('1305536967696c');
    expect(errorOf(() => derPrintableString('*.example.org')).message).toBe(
      'printable string has a character outside its alphabet: "*.example.org"',
    );
  });

  it('uses long-form lengths for contents of 128 bytes and more', () => {
    const encoded = derSequence(Buffer.alloc(300, 0x05));
    expect(hex(encoded.subarray(0, 4))).toBe('3082012c');
    expect(encoded.length).toBe(304);
  });
});

describe('der reader', () => {
  it('reads short and long form lengths', () => {
    expect(readDerElement(bytes('0403 010203'), 0, 5, CONTEXT)).toEqual({ tag: 4, start: 0, contentStart: 2, end: 5 });
    const long = derTlv(DerTag.OCTET_STRING, Buffer.alloc(200));
    expect(readDerElement(long, 0, long.length, CONTEXT)).toEqual({ tag: 4, start: 0, contentStart: 3, end: 203 });
  });

  it.each([
    ['', 'unexpected end of data, expected an element at offset 0'],
    ['04', 'unexpected end of data, expected a length at offset 0'],
    ['0480', 'indefinite length is not allowed in der at offset 0'],
    ['30800000', 'indefinite length is not allowed in der at offset 0'],
    ['048105 0102030405', 'length below 128 must use the short form (not minimal) at offset 0'],
    ['04820080' + '00'.repeat(128), 'length has a leading zero byte (not minimal) at offset 0'],
    ['04850100000000', 'length of 5 bytes is too long at offset 0'],
    ['0482ff', 'unexpected end of data inside a length at offset 0'],
    ['0405 0102', 'length 5 overruns its container at offset 0'],
    ['1f0100', 'high tag numbers are not supported at offset 0'],
  ])('refuses %j: %s', (input, rule) => {
    const buf = bytes(input);
    const error = errorOf(() => readDerElement(buf, 0, buf.length, CONTEXT));
    expect(error.code).toBe('ERR_CSR_INVALID');
    expect(error.message).toBe(`test input: ${rule}`);
  });

  it('checks every constructed element is exactly filled by its children', () => {
    expect(() => checkDerStructure(bytes('3006 0201 05 0401 00'), CONTEXT)).not.toThrow();
    expect(errorOf(() => checkDerStructure(bytes('3005 0201 05 0402 00'), CONTEXT)).message).toBe(
      'test input: length 2 overruns its container at offset 5',
    );
  });

  it('refuses nesting past the depth limit, iteratively, even 100 000 levels deep', () => {
    let nested: Buffer = Buffer.from([DerTag.NULL, 0]);
    for (let depth = 1; depth <= 6; depth++) nested = derSequence(nested);
    expect(() => checkDerStructure(nested, CONTEXT, { maxDepth: 7 })).not.toThrow();
    expect(errorOf(() => checkDerStructure(nested, CONTEXT, { maxDepth: 6 })).message).toBe(
      'test input: nesting deeper than 6 levels at offset 10',
    );

    // 100 000 nested SEQUENCEs around a NULL, every length minimal: about 500 kB of hostile input.
    const headers: Buffer[] = [];
    let size = 2;
    for (let level = 0; level < 100_000; level++) {
      const header = Buffer.concat([Buffer.from([DerTag.SEQUENCE]), encodeDerLength(size)]);
      headers.push(header);
      size += header.length;
    }
    const deep = Buffer.concat([...headers.reverse(), Buffer.from([DerTag.NULL, 0])]);
    const depthLimitOffset = headers.slice(0, 19).reduce((sum, header) => sum + header.length, 0);
    expect(errorOf(() => checkDerStructure(deep, CONTEXT)).message).toBe(
      `test input: nesting deeper than 20 levels at offset ${depthLimitOffset}`,
    );
  });

  it('limits the depth a cursor can enter', () => {
    let nested: Buffer = Buffer.from([DerTag.NULL, 0]);
    for (let depth = 1; depth <= 4; depth++) nested = derSequence(nested);
    let cursor = DerCursor.over(nested, CONTEXT, { maxDepth: 3 });
    cursor = cursor.enter(cursor.expect(DerTag.SEQUENCE, 'level 1'), 'level 1');
    cursor = cursor.enter(cursor.expect(DerTag.SEQUENCE, 'level 2'), 'level 2');
    const third = cursor.expect(DerTag.SEQUENCE, 'level 3');
    expect(errorOf(() => cursor.enter(third, 'level 3')).message).toBe(
      'test input: nesting deeper than 3 levels at offset 4',
    );
  });

  it('names the missing, mistagged or extra element', () => {
    const cursor = DerCursor.over(bytes('0201 05 0500'), CONTEXT);
    expect(errorOf(() => cursor.expect(DerTag.SEQUENCE, 'subject')).message).toBe(
      'test input: subject must have tag 0x30, got 0x02 at offset 0',
    );
    expect(errorOf(() => cursor.finish('the request')).message).toBe(
      'test input: unexpected data after the last element of the request at offset 3',
    );
    cursor.expect(DerTag.NULL, 'null');
    expect(errorOf(() => cursor.next('signature')).message).toBe('test input: missing signature at offset 5');
  });

  it('decodes object identifiers and refuses non-minimal or unterminated arcs', () => {
    const oid = derOid('1.2.840.113549.1.9.14');
    expect(decodeDerOid(oid, readDerElement(oid, 0, oid.length, CONTEXT), CONTEXT)).toBe('1.2.840.113549.1.9.14');
    const padded = bytes('0604 2a 80 86 48');
    expect(errorOf(() => decodeDerOid(padded, readDerElement(padded, 0, 6, CONTEXT), CONTEXT)).message).toBe(
      'test input: object identifier arc has a leading 0x80 byte (not minimal) at offset 3',
    );
    const open = bytes('0602 2a 86');
    expect(errorOf(() => decodeDerOid(open, readDerElement(open, 0, 4, CONTEXT), CONTEXT)).message).toBe(
      'test input: object identifier ends inside an arc at offset 3',
    );
  });

  it('refuses ia5 strings with bytes above 0x7f', () => {
    const text = bytes('1603 61 e9 62');
    expect(errorOf(() => decodeDerIa5String(text, readDerElement(text, 0, 5, CONTEXT), CONTEXT)).message).toBe(
      'test input: ia5 string has a byte outside 7-bit ascii at offset 3',
    );
  });

  it('reads back whatever the writer writes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), fc.integer({ min: 0, max: 0x1e }), (content, tagNumber) => {
        const encoded = derTlv(0x80 | tagNumber, content);
        const element = readDerElement(encoded, 0, encoded.length, CONTEXT);
        expect(element.end).toBe(encoded.length);
        expect(hex(encoded.subarray(element.contentStart))).toBe(hex(content));
      }),
      { numRuns: 100 },
    );
  });

  it('throws only PkiError on arbitrary bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (input) => {
        try {
          checkDerStructure(input, CONTEXT);
        } catch (error) {
          expect(error).toBeInstanceOf(PkiError);
          expect((error as PkiError).code).toBe('ERR_CSR_INVALID');
        }
      }),
      { numRuns: 2000 },
    );
  });
});
