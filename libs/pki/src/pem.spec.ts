import { describe, expect, it } from 'vitest';
import { generateKeyPair, keyTypeOf } from './keys.js';
import { certificatesFromPem } from './pem-certificates.js';
import { certificatesToPem, pemBlocks, privateKeyFromPem, privateKeyToPem, toPem } from './pem.js';

const der = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x07]);
const block = (label: string, body = 'MAMCAQc=') => `-----BEGIN ${label}-----\n${body}\n-----END ${label}-----\n`;

describe('toPem / pemBlocks', () => {
  it('round-trips, wrapping base64 at 64 characters', () => {
    const long = new Uint8Array(200).map((_, i) => i);
    const pem = toPem('CERTIFICATE', long);
    const lines = pem.trimEnd().split('\n');
    expect(lines[0]).toBe('-----BEGIN CERTIFICATE-----');
    expect(lines.at(-1)).toBe('-----END CERTIFICATE-----');
    expect(lines.slice(1, -1).every((line) => line.length <= 64)).toBe(true);
    expect(lines[1]).toHaveLength(64);
    expect(pemBlocks(pem)).toEqual([{ label: 'CERTIFICATE', der: long }]);
  });

  it('reads several blocks, CRLF line ends, and ignores explanatory text between blocks', () => {
    const text = `subject=O=Sigil\r\n${block('CERTIFICATE').replace(/\n/g, '\r\n')}between\n${block('PRIVATE KEY')}`;
    expect(pemBlocks(text)).toEqual([
      { label: 'CERTIFICATE', der },
      { label: 'PRIVATE KEY', der },
    ]);
  });

  it.each([
    ['', 'pem: no pem block found'],
    ['just text', 'pem: no pem block found'],
    [
      block('CERTIFICATE').replace('END CERTIFICATE', 'END PRIVATE KEY'),
      'pem line 3: END label "PRIVATE KEY" does not match BEGIN label "CERTIFICATE"',
    ],
    ['-----BEGIN CERTIFICATE-----\nMAMCAQc=\n', 'pem: "CERTIFICATE" block opened on line 1 has no END line'],
    ['-----END CERTIFICATE-----\n', 'pem line 1: END without a matching BEGIN'],
    [
      `-----BEGIN CERTIFICATE-----\n${block('CERTIFICATE')}`,
      'pem line 2: BEGIN inside the "CERTIFICATE" block opened on line 1',
    ],
    [block('CERTIFICATE', 'MAMCAQc'), 'pem "CERTIFICATE" block on line 1: body is not valid base64'],
    [block('CERTIFICATE', 'MAMC*Qc='), 'pem "CERTIFICATE" block on line 1: body is not valid base64'],
    [block('CERTIFICATE', 'MAMCAQd='), 'pem "CERTIFICATE" block on line 1: body is not canonical base64'],
    [block('CERTIFICATE', ''), 'pem "CERTIFICATE" block on line 1: body is empty'],
    [
      block('CERTIFICATE', 'Proc-Type: 4,ENCRYPTED\nMAMCAQc='),
      'pem "CERTIFICATE" block on line 1: headers are not allowed',
    ],
    [block('certificate'), 'pem line 1: invalid label "certificate"'],
    ['-----BEGIN CERTIFICATE----\nMAMCAQc=\n', 'pem line 1: malformed boundary line'],
  ])('refuses %j', (text, message) => {
    expect(() => pemBlocks(text)).toThrow(expect.objectContaining({ code: 'ERR_PEM_INVALID', message }));
  });

  it('refuses bad labels and empty DER when encoding', () => {
    expect(() => toPem('certificate', der)).toThrow(expect.objectContaining({ code: 'ERR_PEM_INVALID' }));
    expect(() => toPem('CERTIFICATE', new Uint8Array())).toThrow('der: must be a non-empty Uint8Array');
  });
});

describe('private keys and certificates in PEM', () => {
  it('round-trips a PKCS#8 private key', async () => {
    const { privateKey } = await generateKeyPair('ec-p384');
    const pem = privateKeyToPem(privateKey);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(keyTypeOf(await privateKeyFromPem(pem))).toBe('ec-p384');
  });

  it('refuses a private key PEM with the wrong label or several blocks', async () => {
    const { privateKey } = await generateKeyPair();
    const pem = privateKeyToPem(privateKey);
    await expect(privateKeyFromPem(pem.replace(/PRIVATE KEY/g, 'EC PRIVATE KEY'))).rejects.toMatchObject({
      code: 'ERR_PEM_INVALID',
      message: 'privateKey: expected label "PRIVATE KEY", found "EC PRIVATE KEY"',
    });
    await expect(privateKeyFromPem(pem + pem)).rejects.toThrow(
      'privateKey: expected one "PRIVATE KEY" block, found 2 blocks',
    );
  });

  it('refuses non-certificate blocks and DER that is not a certificate', () => {
    expect(() => certificatesFromPem(block('PRIVATE KEY'))).toThrow(
      expect.objectContaining({
        code: 'ERR_PEM_INVALID',
        message: 'pem block 0: expected label "CERTIFICATE", found "PRIVATE KEY"',
      }),
    );
    expect(() => certificatesFromPem(block('CERTIFICATE'))).toThrow(
      expect.objectContaining({
        code: 'ERR_CERTIFICATE_INVALID',
        message: expect.stringMatching(/^certificates\[0\]: not a valid der certificate: /),
      }),
    );
    expect(() => certificatesFromPem(certificatesToPem([der]))).toThrow(
      expect.objectContaining({ code: 'ERR_CERTIFICATE_INVALID' }),
    );
  });
});
