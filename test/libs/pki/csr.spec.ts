import { webcrypto } from 'node:crypto';
import { SpiffeId } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { opensslRequest, runOpenssl } from '../../support/openssl.js';
import { parseCsrReference as parseCsr } from '../../support/pki-reference/csr.js';
import { createCsr } from '../../../libs/pki/src/csr-builder.js';
import { exportPublicKeySpki, generateKeyPair, type KeyType } from '../../../libs/pki/src/keys.js';
import { toPem } from '../../../libs/pki/src/pem.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

const spiffeId = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');

function csrError(message: string | RegExp) {
  return expect.objectContaining({
    code: 'ERR_CSR_INVALID',
    message: typeof message === 'string' ? message : expect.stringMatching(message),
  });
}

describe('createCsr / parseCsr', () => {
  it.each<KeyType>(['ec-p256', 'ec-p384', 'rsa-2048'])(
    '%s: round-trips the key and requested SANs',
    async (keyType) => {
      const keys = await generateKeyPair(keyType);
      const { pem, der } = await createCsr({ keys, spiffeId, dnsNames: ['web.example.org', '*.web.example.org'] });
      for (const input of [pem, der]) {
        const parsed = await parseCsr(input);
        expect(parsed.keyType).toBe(keyType);
        expect(parsed.spkiDer).toEqual(exportPublicKeySpki(keys.publicKey));
        expect(exportPublicKeySpki(parsed.publicKey)).toEqual(parsed.spkiDer);
        expect(parsed.uris).toEqual(['spiffe://example.org/ns/prod/sa/web']);
        expect(parsed.dnsNames).toEqual(['web.example.org', '*.web.example.org']);
        expect(parsed.csr.subject).toBe('');
      }
    },
  );

  it('creates a CSR with no SANs when none are requested', async () => {
    const parsed = await parseCsr((await createCsr({ keys: await generateKeyPair() })).der);
    expect(parsed.uris).toEqual([]);
    expect(parsed.dnsNames).toEqual([]);
    expect(parsed.csr.extensions).toEqual([]);
  });

  it('creates a CSR that openssl verifies and reads', async () => {
    const { pem } = await createCsr({ keys: await generateKeyPair(), spiffeId, dnsNames: ['web.example.org'] });
    const { verified, text } = await opensslRequest(pem);
    expect(verified).toBe(true);
    expect(text).toContain('URI:spiffe://example.org/ns/prod/sa/web, DNS:web.example.org');
  });

  it('parses a CSR made by openssl', async () => {
    const result = await runOpenssl(
      [
        'req',
        '-new',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        '{key.pem}',
        '-subj',
        '/O=Other',
        '-addext',
        'subjectAltName=URI:spiffe://example.org/x,DNS:x.example.org',
        '-out',
        '{csr.pem}',
      ],
      {},
      ['csr.pem'],
    );
    expect(result.code, result.stderr).toBe(0);
    const parsed = await parseCsr(result.files['csr.pem']!);
    expect(parsed.uris).toEqual(['spiffe://example.org/x']);
    expect(parsed.dnsNames).toEqual(['x.example.org']);
    expect(parsed.keyType).toBe('ec-p256');
  });

  it('refuses invalid DNS names when creating', async () => {
    await expect(
      createCsr({ keys: await generateKeyPair(), dnsNames: ['bad_name.example.org'] }),
    ).rejects.toMatchObject({
      code: 'ERR_PKI_INVALID_INPUT',
      message: expect.stringMatching(/^dnsNames\[0\]: label "bad_name"/),
    });
  });
});

describe('parseCsr rejections', () => {
  async function validDer(): Promise<Uint8Array> {
    return (await createCsr({ keys: await generateKeyPair(), spiffeId })).der;
  }

  it('refuses a CSR whose signature byte was flipped', async () => {
    const der = await validDer();
    der[der.length - 1]! ^= 0x01;
    await expect(parseCsr(der)).rejects.toThrow(
      csrError('csr: signature does not verify with the requested public key'),
    );
  });

  it('refuses a CSR whose public key was swapped after signing', async () => {
    const der = await validDer();
    const other = exportPublicKeySpki((await generateKeyPair()).publicKey);
    const spkiAt = Buffer.from(der).indexOf(Buffer.from(exportPublicKeySpki((await parseCsr(der)).publicKey)));
    der.set(other, spkiAt);
    await expect(parseCsr(der)).rejects.toThrow(
      csrError('csr: signature does not verify with the requested public key'),
    );
  });

  it.each([
    [
      'empty bytes',
      new Uint8Array(),
      /^csr: not a valid der certification request: der: missing CertificationRequest at offset 0$/,
    ],
    ['garbage bytes', new Uint8Array([1, 2, 3, 4]), /^csr: not a valid der certification request: /],
    ['a bare SEQUENCE', new Uint8Array([0x30, 0x00]), /^csr: not a valid der certification request: /],
  ])('refuses %s', async (_, input, message) => {
    await expect(parseCsr(input)).rejects.toThrow(csrError(message));
  });

  it('refuses trailing data and truncation', async () => {
    const der = await validDer();
    const trailing = new Uint8Array([...der, 0, 0, 0]);
    await expect(parseCsr(trailing)).rejects.toThrow(
      csrError(
        `csr: not a valid der certification request: der: unexpected data after the last element of the input (one CertificationRequest) at offset ${der.length}`,
      ),
    );
    await expect(parseCsr(der.subarray(0, der.length - 1))).rejects.toThrow(
      csrError(/^csr: not a valid der certification request: der: length \d+ overruns its container at offset 0$/),
    );
  });

  it('refuses PEM with the wrong label, several blocks, or no block', async () => {
    const der = await validDer();
    await expect(parseCsr(toPem('CERTIFICATE', der))).rejects.toThrow(
      csrError('csr: expected label "CERTIFICATE REQUEST", found "CERTIFICATE"'),
    );
    const pem = toPem('CERTIFICATE REQUEST', der);
    await expect(parseCsr(pem + pem)).rejects.toThrow(
      csrError('csr: expected one "CERTIFICATE REQUEST" block, found 2 blocks'),
    );
    await expect(parseCsr('MIIB')).rejects.toThrow(csrError('pem: no pem block found'));
    await expect(parseCsr(42 as unknown as string)).rejects.toThrow(csrError('csr: must be a pem string or der bytes'));
  });

  it('refuses an unsupported key type (P-521)', async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-521' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-512' },
    });
    await expect(parseCsr(new Uint8Array(csr.rawData))).rejects.toThrow(
      csrError('csr public key: unsupported ec curve secp521r1, expected P-256 or P-384'),
    );
  });
});
