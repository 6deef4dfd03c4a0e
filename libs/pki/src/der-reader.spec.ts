import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  certificateParts,
  checkDerStructure,
  decodeDerIa5String,
  decodeDerOid,
  DerCursor,
  readDerElement,
  subjectPublicKeyBits,
  type DerContext,
} from './der-reader.js';
import { DerTag } from './der-tags.js';
import { derOid, derSequence, derTlv, encodeDerLength } from './der-writer.js';
import { PkiError } from './errors.js';

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

describe('certificate and subjectPublicKeyInfo parts', () => {
  it('refuses trailing data and names the missing or mistagged field of a certificate', () => {
    expect(errorOf(() => certificateParts(bytes('30 00 00'))).message).toBe(
      'der: unexpected data after the last element of the input (one certificate) at offset 2',
    );
    expect(errorOf(() => certificateParts(bytes('31 00'))).message).toBe(
      'der: certificate must have tag 0x30, got 0x31 at offset 0',
    );
    expect(errorOf(() => certificateParts(bytes('30 02 30 00'))).message).toBe('der: missing serialNumber at offset 4');
    expect(errorOf(() => certificateParts(bytes('30 05 30 03 02 01 01'))).message).toBe(
      'der: missing signature at offset 7',
    );
    expect(errorOf(() => certificateParts(bytes('30 03 02 01 01'))).code).toBe('ERR_DER_INVALID');
  });

  it('reports in the caller context', () => {
    const error = errorOf(() => certificateParts(bytes('30 00'), { name: 'ca.certificate', code: 'ERR_CA_INVALID' }));
    expect(error.code).toBe('ERR_CA_INVALID');
    expect(error.message).toBe('ca.certificate: missing tbsCertificate at offset 2');
  });

  it('reads the subjectPublicKey bits of an spki and refuses unused bits or a wrong tag', () => {
    expect(hex(subjectPublicKeyBits(bytes('30 06 30 00 03 02 00 ab')))).toBe('ab');
    expect(errorOf(() => subjectPublicKeyBits(bytes('30 04 30 00 04 00'))).message).toBe(
      'der: subjectPublicKey must have tag 0x03, got 0x04 at offset 4',
    );
    expect(errorOf(() => subjectPublicKeyBits(bytes('30 05 30 00 03 01 01'))).message).toBe(
      'der: subjectPublicKey must be a bit string with no unused bits',
    );
    expect(errorOf(() => subjectPublicKeyBits(bytes('30 07 30 00 03 01 00 05 00'))).message).toBe(
      'der: unexpected data after the last element of subjectPublicKeyInfo at offset 7',
    );
  });
});
