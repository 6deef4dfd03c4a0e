import { describe, expect, it } from 'vitest';
import {
  derBitString,
  derOid,
  derPrintableString,
  derSequence,
  derSmallInteger,
  derTime,
  encodeDerLength,
  isPrintableString,
} from './der-writer.js';
import { PkiError } from './errors.js';

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
    expect(isPrintableString("web-1.example.org A'(+,/:=?)")).toBe(true);
    expect(isPrintableString('*.example.org')).toBe(false);
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
