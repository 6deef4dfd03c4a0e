import type { webcrypto } from 'node:crypto';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { opensslText, opensslVerify } from '../../support/openssl.js';
import { createIntermediateCa, createRootCa, type CaCredential } from '../../../libs/pki/src/ca.js';
import { DerCursor, certificateParts, derBytes, type DerContext } from '../../../libs/pki/src/der-reader.js';
import { DerTag } from '../../../libs/pki/src/der-tags.js';
import { exportPublicKeySpki, generateKeyPair, type KeyType } from '../../../libs/pki/src/keys.js';
import { subjectKeyIdentifier } from '../../../libs/pki/src/svid-profile.js';
import { buildX509SvidReference, type X509SvidParams } from '../../support/pki-reference/x509-svid.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

const trustDomain = TrustDomain.parse('example.org');
const spiffeId = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');
const now = new Date('2031-05-06T07:08:09.750Z');
const hex = (bytes: Uint8Array | ArrayBuffer): string => Buffer.from(new Uint8Array(bytes)).toString('hex');

const READ: DerContext = { name: 'test certificate', code: 'ERR_DER_INVALID' };

/** The TBSCertificate of a DER certificate, as its exact encoding and a cursor over its fields. */
function readTbs(der: Uint8Array): { tbs: Uint8Array; fields: DerCursor } {
  const top = DerCursor.over(der, READ);
  const certificate = top.expect(DerTag.SEQUENCE, 'certificate');
  top.finish('certificate');
  const certificateFields = top.enter(certificate, 'certificate');
  const tbs = certificateFields.expect(DerTag.SEQUENCE, 'tbsCertificate');
  return { tbs: derBytes(der, tbs).slice(), fields: certificateFields.enter(tbs, 'tbsCertificate') };
}

/** The TBSCertificate fields of a DER certificate, as exact encodings. */
function tbsFields(der: Uint8Array): Uint8Array[] {
  const { fields } = readTbs(der);
  const out: Uint8Array[] = [];
  while (!fields.isDone) out.push(derBytes(der, fields.next('field')).slice());
  return out;
}

function tbsOf(der: Uint8Array): Uint8Array {
  return readTbs(der).tbs;
}

let root: CaCredential;
let leafKeys: webcrypto.CryptoKeyPair;

beforeAll(async () => {
  root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now, ttlSeconds: 7200 });
  leafKeys = await generateKeyPair();
});

function params(overrides: Partial<X509SvidParams> = {}): X509SvidParams {
  return { ca: root, publicKey: leafKeys.publicKey, spiffeId, ttlSeconds: 3600, now, ...overrides } as X509SvidParams;
}

describe('buildX509SvidReference: the leaf profile', () => {
  it('has every field and extension of the profile, in order', async () => {
    const serial = new Uint8Array([0x01, 0x02, 0x03, 0x04, 0x05]);
    const leaf = await buildX509SvidReference(params({ serial, dnsNames: ['web.example.org', '*.web.example.org'] }));
    const der = new Uint8Array(leaf.rawData);
    const fields = tbsFields(der);

    expect(hex(fields[0]!)).toBe('a003020102'); // version v3
    expect(hex(fields[1]!)).toBe('02050102030405'); // serial, no padding
    expect(hex(fields[2]!)).toBe('300a06082a8648ce3d040302'); // ecdsa-with-SHA256, no parameters
    expect(fields[3]).toEqual(certificateParts(root.der).subject); // issuer bytes copied
    expect(fields[6]).toEqual(exportPublicKeySpki(leafKeys.publicKey));

    expect(leaf.notBefore.toISOString()).toBe('2031-05-06T07:07:59.000Z');
    expect(leaf.notAfter.toISOString()).toBe('2031-05-06T08:08:09.000Z');
    expect(leaf.subject).toBe('O=Sigil, CN=web.example.org');
    expect(leaf.issuer).toBe(root.certificate.subject);

    expect(leaf.extensions.map((e) => [e.type, e.critical])).toEqual([
      ['2.5.29.19', true],
      ['2.5.29.15', true],
      ['2.5.29.37', false],
      ['2.5.29.14', false],
      ['2.5.29.35', false],
      ['2.5.29.17', false],
    ]);
    const [basicConstraints, keyUsage, extKeyUsage, ski, aki, san] = leaf.extensions;
    expect(hex(basicConstraints!.value)).toBe('3000'); // cA=false is the DEFAULT, so an empty SEQUENCE
    expect(hex(keyUsage!.value)).toBe('030203a8'); // digitalSignature | keyEncipherment | keyAgreement
    expect(hex(extKeyUsage!.value)).toBe('301406082b0601050507030106082b06010505070302'); // serverAuth, clientAuth
    expect(new x509.SubjectKeyIdentifierExtension(ski!.rawData).keyId).toBe(
      hex(subjectKeyIdentifier(exportPublicKeySpki(leafKeys.publicKey))),
    );
    expect(new x509.AuthorityKeyIdentifierExtension(aki!.rawData).keyId).toBe(
      root.certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
    );
    expect(new x509.SubjectAlternativeNameExtension(san!.rawData).names.toJSON()).toEqual([
      { type: 'url', value: 'spiffe://example.org/ns/prod/sa/web' },
      { type: 'dns', value: 'web.example.org' },
      { type: 'dns', value: '*.web.example.org' },
    ]);
    expect(await leaf.verify({ publicKey: root.certificate, signatureOnly: true })).toBe(true);
  });

  it('uses a random positive 16-byte serial by default', async () => {
    const a = await buildX509SvidReference(params());
    const b = await buildX509SvidReference(params());
    for (const leaf of [a, b]) {
      const serialField = tbsFields(new Uint8Array(leaf.rawData))[1]!;
      expect(serialField[1]).toBe(16);
      expect(serialField[2]).toBeGreaterThanOrEqual(1);
      expect(serialField[2]).toBeLessThanOrEqual(0x7f);
    }
    expect(a.serialNumber).not.toBe(b.serialNumber);
  });

  it('has subject O=Sigil alone without DNS names, and CN as UTF8String for a wildcard', async () => {
    const plain = await buildX509SvidReference(params());
    expect(plain.subject).toBe('O=Sigil');
    expect(hex(tbsFields(new Uint8Array(plain.rawData))[5]!)).toBe('3010310e300c060355040a1305536967696c');
    const wildcard = await buildX509SvidReference(params({ dnsNames: ['*.example.org'] }));
    const subject = tbsFields(new Uint8Array(wildcard.rawData))[5]!;
    expect(hex(subject)).toContain('0603550403' + '0c0d' + hex(Buffer.from('*.example.org')));
  });

  it('caps not-after at the CA not-after', async () => {
    const leaf = await buildX509SvidReference(params({ ttlSeconds: 30 * 86_400 }));
    expect(leaf.notAfter).toEqual(root.certificate.notAfter);
  });

  it('encodes validity as UTCTime before 2050 and GeneralizedTime from 2050 (RFC 5280 §4.1.2.5)', async () => {
    const late = new Date('2049-12-31T23:30:00Z');
    const ca = await createRootCa({ trustDomain, keys: await generateKeyPair(), now: late, ttlSeconds: 2 * 86_400 });
    const leaf = await buildX509SvidReference(params({ ca, now: late, ttlSeconds: 3600 }));
    const validity = tbsFields(new Uint8Array(leaf.rawData))[4]!;
    expect(hex(validity)).toBe(
      '3020' + '170d' + hex(Buffer.from('491231232950Z')) + '180f' + hex(Buffer.from('20500101003000Z')),
    );
  });

  it.each<KeyType>(['ec-p384', 'rsa-2048'])('signs with the %s CA key algorithm', async (keyType) => {
    const ca = await createRootCa({ trustDomain, keys: await generateKeyPair(keyType), now });
    const leaf = await buildX509SvidReference(params({ ca }));
    const expected = keyType === 'ec-p384' ? '300a06082a8648ce3d040303' : '300d06092a864886f70d01010b0500';
    expect(hex(tbsFields(new Uint8Array(leaf.rawData))[2]!)).toBe(expected);
    expect(await leaf.verify({ publicKey: ca.certificate, signatureOnly: true })).toBe(true);
  });

  it('gives the same TBSCertificate for a CryptoKey and for its SPKI bytes (deterministic for fixed input)', async () => {
    const serial = new Uint8Array([0x42]);
    const input = { serial, dnsNames: ['web.example.org'] };
    const fromKey = await buildX509SvidReference(params(input));
    const fromSpki = await buildX509SvidReference({
      ...params(input),
      publicKey: undefined,
      spkiDer: exportPublicKeySpki(leafKeys.publicKey),
    });
    expect(tbsOf(new Uint8Array(fromSpki.rawData))).toEqual(tbsOf(new Uint8Array(fromKey.rawData)));
  });
});

describe('buildX509SvidReference: openssl accepts the leaf', () => {
  const leafId = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');

  it('via the root: openssl verify -x509_strict OK for TLS server and client, and the profile in -text', async () => {
    const ca = await createRootCa({ trustDomain, keys: await generateKeyPair(), now: new Date() });
    const leaf = await buildX509SvidReference(
      params({ ca, now: new Date(), spiffeId: leafId, dnsNames: ['web.example.org'] }),
    );
    for (const purpose of ['sslserver', 'sslclient']) {
      const verify = await opensslVerify({ root: ca.der, leaf, purpose });
      expect(verify.ok, verify.output).toBe(true);
    }
    const text = await opensslText(leaf);
    expect(text).toContain('Version: 3 (0x2)');
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE\n/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment, Key Agreement\n/);
    expect(text).toMatch(
      /X509v3 Extended Key Usage: \s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
    );
    expect(text).toMatch(
      /X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/example.org\/ns\/prod\/sa\/web, DNS:web.example.org\n/,
    );
    expect(text).toContain('X509v3 Subject Key Identifier');
    expect(text).toContain('X509v3 Authority Key Identifier');
    expect(text).toContain('Subject: O = Sigil, CN = web.example.org');
    expect(text).not.toMatch(/Subject Alternative Name: critical/);
  });

  it('via an intermediate (P-384 root, P-256 intermediate): openssl verify -x509_strict -untrusted OK', async () => {
    const ca = await createRootCa({ trustDomain, keys: await generateKeyPair('ec-p384'), now: new Date() });
    const intermediateKeys = await generateKeyPair();
    const intermediate = await createIntermediateCa({
      trustDomain,
      publicKey: intermediateKeys.publicKey,
      issuer: ca,
      now: new Date(),
    });
    const leaf = await buildX509SvidReference(
      params({
        ca: { certificate: intermediate.certificate, privateKey: intermediateKeys.privateKey },
        now: new Date(),
        spiffeId: leafId,
      }),
    );
    const verify = await opensslVerify({ root: ca.der, intermediates: [intermediate.der], leaf });
    expect(verify.ok, verify.output).toBe(true);
    const withoutIntermediate = await opensslVerify({ root: ca.der, leaf });
    expect(withoutIntermediate.ok).toBe(false);
    expect(await opensslText(leaf)).toContain('URI:spiffe://example.org/ns/prod/sa/web');
  });
});

describe('buildX509SvidReference: refusals', () => {
  it.each([
    [
      { spiffeId: trustDomain.id() },
      'spiffeId: "spiffe://example.org" must have a path (an X.509-SVID never names a trust domain)',
    ],
    [
      { spiffeId: SpiffeId.parse('spiffe://other.org/web') },
      `spiffeId: "spiffe://other.org/web" is not in the ca's trust domain "example.org"`,
    ],
    [{ spiffeId: 'spiffe://example.org/web' }, 'spiffeId: must be a parsed SpiffeId'],
    [
      { dnsNames: ['ok.example.org', 'bad_name.example.org'] },
      'dnsNames[1]: label "bad_name" must be letters, digits and hyphens, not starting or ending with "-"',
    ],
    [{ dnsNames: ['web.example.org.'] }, 'dnsNames[0]: "web.example.org." has an empty label'],
    [{ ttlSeconds: 0 }, 'ttlSeconds: must be a positive integer number of seconds, got 0'],
    [{ ttlSeconds: -60 }, 'ttlSeconds: must be a positive integer number of seconds, got -60'],
    [{ ttlSeconds: 0.5 }, 'ttlSeconds: must be a positive integer number of seconds, got 0.5'],
    [{ now: new Date('nope') }, 'now: must be a valid Date'],
    [
      { serial: new Uint8Array([0x80]) },
      'serial: first byte must be 0x01 to 0x7f (a positive integer without padding)',
    ],
  ])('refuses %j', async (override, message) => {
    await expect(buildX509SvidReference(params(override as Partial<X509SvidParams>))).rejects.toMatchObject({
      code: 'ERR_PKI_INVALID_INPUT',
      message,
    });
  });

  it('refuses both or neither of publicKey and spkiDer, and malformed SPKI', async () => {
    const spkiDer = exportPublicKeySpki(leafKeys.publicKey);
    await expect(buildX509SvidReference({ ...params(), spkiDer } as unknown as X509SvidParams)).rejects.toThrow(
      'publicKey, spkiDer: give exactly one of them, not both',
    );
    await expect(
      buildX509SvidReference({ ...params(), publicKey: undefined } as unknown as X509SvidParams),
    ).rejects.toThrow('publicKey, spkiDer: one of them is required');
    await expect(
      buildX509SvidReference({ ...params(), publicKey: undefined, spkiDer: new Uint8Array([0x30, 0x00]) }),
    ).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: expect.stringMatching(/^spkiDer: not a valid public key/),
    });
  });

  it('refuses a CA that is not a CA, an expired CA and a CA key that does not match', async () => {
    const leaf = await buildX509SvidReference(params());
    await expect(
      buildX509SvidReference(params({ ca: { certificate: leaf, privateKey: leafKeys.privateKey } })),
    ).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'ca.certificate: basicConstraints must have cA=true',
    });
    await expect(buildX509SvidReference(params({ now: root.certificate.notAfter }))).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: `ca.certificate: expired at ${root.certificate.notAfter.toISOString()}, cannot sign`,
    });
    const wrongKey = { certificate: root.certificate, privateKey: (await generateKeyPair()).privateKey };
    await expect(buildX509SvidReference(params({ ca: wrongKey }))).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'ca.privateKey: does not match the ca certificate (signature does not verify)',
    });
  });
});
