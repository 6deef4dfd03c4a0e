import { describe, expect, it } from 'vitest';
import { decodePemBlocks, encodePem, encodePemBlock, isPemLabel } from './pem.js';

const der = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x07]);
const block = (label: string, body = 'MAMCAQc=') => `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;

describe('PEM codec', () => {
  it('encodes 64-character lines ending in a newline, and decodes what it encodes', () => {
    const long = new Uint8Array(200).map((_, i) => i);
    const pem = encodePemBlock('CERTIFICATE', long);
    const lines = pem.split('\n');
    expect(lines[0]).toBe('-----BEGIN CERTIFICATE-----');
    expect(lines.slice(1, -2).map((line) => line.length)).toEqual([64, 64, 64, 64, 12]);
    expect(lines.at(-2)).toBe('-----END CERTIFICATE-----');
    expect(lines.at(-1)).toBe('');
    expect(decodePemBlocks(pem)).toEqual([{ label: 'CERTIFICATE', der: long }]);
    expect(encodePem('CERTIFICATE', [der, long])).toBe(encodePemBlock('CERTIFICATE', der) + pem);
    expect(encodePem('CERTIFICATE', [])).toBe('');
  });

  it('accepts CRLF line ends, whitespace around lines, and text before, between and after blocks', () => {
    const text =
      `subject=O=Sigil\r\n${block('CERTIFICATE').replace(/\n/g, '\r\n')}` +
      `issuer: between\n  ${block('PRIVATE KEY').replace('MAMCAQc=', 'MAMCAQc=  ')}trailing text, no newline`;
    expect(decodePemBlocks(text)).toEqual([
      { label: 'CERTIFICATE', der },
      { label: 'PRIVATE KEY', der },
    ]);
  });

  it('accepts an END line run together with the next BEGIN line (files concatenated without a final newline)', () => {
    const text = block('CERTIFICATE').trimEnd() + block('CERTIFICATE');
    expect(text).toContain('-----END CERTIFICATE----------BEGIN CERTIFICATE-----\n');
    expect(decodePemBlocks(text)).toEqual([
      { label: 'CERTIFICATE', der },
      { label: 'CERTIFICATE', der },
    ]);
    expect(decodePemBlocks(block('CERTIFICATE').trimEnd() + block('PRIVATE KEY').slice(0, -1) + 'x')).toBe(
      'pem line 5: malformed boundary line',
    );
    expect(decodePemBlocks(`${block('CERTIFICATE').trimEnd()}trailing\n`)).toBe('pem line 3: malformed boundary line');
  });

  it('accepts base64 lines of any length', () => {
    const body = Buffer.from(new Uint8Array(300).fill(7)).toString('base64');
    const wrapped = body.match(/.{1,10}/g)!.join('\n');
    expect(decodePemBlocks(block('CERTIFICATE', body))).toEqual(decodePemBlocks(block('CERTIFICATE', wrapped)));
  });

  it('returns no block for a text without one, so each caller names what it expected', () => {
    expect(decodePemBlocks('')).toEqual([]);
    expect(decodePemBlocks('just text\r\nmore text')).toEqual([]);
  });

  it.each([
    [
      'a missing END line',
      '-----BEGIN CERTIFICATE-----\nMAMCAQc=\n',
      'pem: "CERTIFICATE" block opened on line 1 has no END line',
    ],
    [
      'a missing END line after a complete block',
      `${block('CERTIFICATE')}-----BEGIN CERTIFICATE-----\nMAMCAQc=\n`,
      'pem: "CERTIFICATE" block opened on line 4 has no END line',
    ],
    [
      'mismatched labels',
      block('CERTIFICATE').replace('END CERTIFICATE', 'END PRIVATE KEY'),
      'pem line 3: END label "PRIVATE KEY" does not match BEGIN label "CERTIFICATE"',
    ],
    ['a lowercase label', block('certificate'), 'pem line 1: invalid label "certificate"'],
    ['a label with two spaces', block('CERTIFICATE  REQUEST'), 'pem line 1: invalid label "CERTIFICATE  REQUEST"'],
    ['an END without BEGIN', '-----END CERTIFICATE-----\n', 'pem line 1: END without a matching BEGIN'],
    [
      'a nested BEGIN',
      `-----BEGIN CERTIFICATE-----\n${block('CERTIFICATE')}`,
      'pem line 2: BEGIN inside the "CERTIFICATE" block opened on line 1',
    ],
    ['a malformed boundary', '-----BEGIN CERTIFICATE----\nMAMCAQc=\n', 'pem line 1: malformed boundary line'],
    [
      'a malformed boundary inside a block',
      block('CERTIFICATE', 'MAMCAQc=\n-----'),
      'pem line 3: malformed boundary line',
    ],
    ['base64 garbage', block('CERTIFICATE', 'MAMC*Qc='), 'pem "CERTIFICATE" block on line 1: body is not valid base64'],
    ['unpadded base64', block('CERTIFICATE', 'MAMCAQc'), 'pem "CERTIFICATE" block on line 1: body is not valid base64'],
    [
      'url-safe base64',
      block('CERTIFICATE', 'MA-_AQc='),
      'pem "CERTIFICATE" block on line 1: body is not valid base64',
    ],
    [
      'whitespace inside a base64 line',
      block('CERTIFICATE', 'MAMC AQc='),
      'pem "CERTIFICATE" block on line 1: body is not valid base64',
    ],
    [
      'non-zero padding bits',
      block('CERTIFICATE', 'MAMCAQd='),
      'pem "CERTIFICATE" block on line 1: body is not canonical base64',
    ],
    ['an empty body', block('CERTIFICATE', ''), 'pem "CERTIFICATE" block on line 1: body is empty'],
    [
      'RFC 1421 headers',
      block('CERTIFICATE', 'Proc-Type: 4,ENCRYPTED\nMAMCAQc='),
      'pem "CERTIFICATE" block on line 1: headers are not allowed',
    ],
  ])('refuses %s', (_name, text, reason) => {
    expect(decodePemBlocks(text)).toBe(reason);
  });

  it('decodes a large bundle in one linear pass', () => {
    // 2,000 blocks of 1 KiB each (about 2.7 MB of text): far above any bundle, and still one split and one join.
    const one = encodePemBlock('CERTIFICATE', new Uint8Array(1024).fill(0x30));
    const blocks = decodePemBlocks(`header\n${one.repeat(2000)}`);
    expect(Array.isArray(blocks) && blocks.length).toBe(2000);
  });

  it('checks labels', () => {
    expect(['CERTIFICATE', 'CERTIFICATE REQUEST', 'X509 CRL'].every(isPemLabel)).toBe(true);
    expect(['', ' CERTIFICATE', 'CERTIFICATE ', 'Certificate', 'A-B', 42].some(isPemLabel)).toBe(false);
  });
});
