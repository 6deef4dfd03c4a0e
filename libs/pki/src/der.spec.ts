import { describe, expect, it } from 'vitest';
import { DER_TAG, certificateParts, childrenOf, readElement, readSingleElement, subjectPublicKeyBits } from './der.js';

const bytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex.replace(/\s/g, ''), 'hex'));

describe('der reader', () => {
  it('reads short and long lengths and the children of a SEQUENCE', () => {
    const long = bytes('30 81 80' + '04 7e' + '00'.repeat(126));
    expect(readElement(long, 0)).toEqual({ tag: 0x30, start: 0, contentStart: 3, end: 131 });
    const sequence = bytes('30 06 02 01 01 02 01 02');
    const children = childrenOf(sequence, readSingleElement(sequence, DER_TAG.sequence));
    expect(children.map((c) => [c.tag, c.contentStart, c.end])).toEqual([
      [0x02, 4, 5],
      [0x02, 7, 8],
    ]);
  });

  it.each([
    ['', 'truncated element at offset 0'],
    ['30', 'truncated element at offset 0'],
    ['30 80 00 00', 'indefinite length at offset 0 is not der'],
    ['30 81 05 00 00 00 00 00', 'non-minimal length encoding at offset 0 is not der'],
    ['30 82 00 80' + '00'.repeat(128), 'non-minimal length encoding at offset 0 is not der'],
    ['30 85 00 00 00 00 01 00', 'length of 5 octets at offset 0 is too large'],
    ['30 82 01', 'truncated length at offset 0'],
    ['30 05 02 01', 'element at offset 0 runs past the end of its container'],
    ['1f 01 00', 'high-tag-number form at offset 0 is not supported'],
    ['31 00', 'expected tag 0x30, found 0x31'],
    ['30 00 00', '1 bytes of trailing data'],
  ])('refuses %j', (hex, message) => {
    expect(() => readSingleElement(bytes(hex), DER_TAG.sequence)).toThrow(message);
  });

  it('refuses a child that runs past its parent and children of a primitive element', () => {
    const overrun = bytes('30 03 02 02 01 00');
    expect(() => childrenOf(overrun, readElement(overrun, 0))).toThrow(
      'element at offset 2 runs past the end of its container',
    );
    const integer = bytes('02 01 01');
    expect(() => childrenOf(integer, readElement(integer, 0))).toThrow('element at offset 0 is not constructed');
  });

  it('names the missing or mistagged field of a certificate and an SPKI', () => {
    expect(() => certificateParts(bytes('30 02 30 00'))).toThrow('serialNumber is missing');
    expect(() => certificateParts(bytes('30 05 30 03 02 01 01'))).toThrow('signature is missing');
    expect(() => subjectPublicKeyBits(bytes('30 04 30 00 04 00'))).toThrow(
      'subjectPublicKey has tag 0x04, expected 0x03',
    );
    expect(() => subjectPublicKeyBits(bytes('30 05 30 00 03 01 01'))).toThrow(
      'subjectPublicKey must be a bit string with no unused bits',
    );
    expect(subjectPublicKeyBits(bytes('30 06 30 00 03 02 00 ab'))).toEqual(bytes('ab'));
  });
});
