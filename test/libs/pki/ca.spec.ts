import { TrustDomain } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { opensslText, opensslVerify, runOpenssl } from '../../support/openssl.js';
import { DEFAULT_CA_TTL_SECONDS, createIntermediateCa, createRootCa, loadCaFromPem } from '../../../libs/pki/src/ca.js';
import { certificateParts } from '../../../libs/pki/src/der-reader.js';
import { exportPublicKeySpki, generateKeyPair, type KeyType } from '../../../libs/pki/src/keys.js';
import { certificatesToPem, privateKeyToPem } from '../../../libs/pki/src/pem.js';
import { subjectKeyIdentifier } from '../../../libs/pki/src/svid-profile.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

const trustDomain = TrustDomain.parse('example.org');
const now = new Date('2031-05-06T07:08:09.750Z');
const hex = (bytes: Uint8Array | ArrayBuffer): string => Buffer.from(new Uint8Array(bytes)).toString('hex');

function describeExtensions(certificate: x509.X509Certificate) {
  return certificate.extensions.map((extension) => ({ type: extension.type, critical: extension.critical }));
}

const SIGNATURE_OIDS: Record<KeyType, string> = {
  'ec-p256': 'ecdsa-with-SHA256',
  'ec-p384': 'ecdsa-with-SHA384',
  'rsa-2048': 'sha256WithRSAEncryption',
};

describe('createRootCa', () => {
  it.each<KeyType>(['ec-p256', 'ec-p384', 'rsa-2048'])('%s: has exactly the CA profile extensions', async (keyType) => {
    const keys = await generateKeyPair(keyType);
    const { certificate, der, privateKey } = await createRootCa({ trustDomain, keys, now, ttlSeconds: 3600 });
    expect(privateKey).toBe(keys.privateKey);
    expect(new Uint8Array(certificate.rawData)).toEqual(der);
    expect(await certificate.isSelfSigned()).toBe(true);

    expect(describeExtensions(certificate)).toEqual([
      { type: '2.5.29.19', critical: true },
      { type: '2.5.29.15', critical: true },
      { type: '2.5.29.14', critical: false },
      { type: '2.5.29.17', critical: false },
    ]);
    const basicConstraints = certificate.getExtension(x509.BasicConstraintsExtension)!;
    expect(basicConstraints.ca).toBe(true);
    expect(basicConstraints.pathLength).toBeUndefined();
    expect(certificate.getExtension(x509.KeyUsagesExtension)!.usages).toBe(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
    );
    expect(certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId).toBe(
      hex(subjectKeyIdentifier(exportPublicKeySpki(keys.publicKey))),
    );
    expect(certificate.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()).toEqual([
      { type: 'url', value: 'spiffe://example.org' },
    ]);
    expect(certificate.notBefore.toISOString()).toBe('2031-05-06T07:07:59.000Z');
    expect(certificate.notAfter.toISOString()).toBe('2031-05-06T08:08:09.000Z');
    expect(certificate.serialNumber).toMatch(/^[0-7][0-9a-f]{31}$/);

    const text = await opensslText(certificate);
    expect(text).toContain(`Signature Algorithm: ${SIGNATURE_OIDS[keyType]}`);
  });

  it('gives every CA key a unique subject: C=US, O=Sigil, OU=<td>, serialNumber=<random>', async () => {
    const a = await createRootCa({ trustDomain, keys: await generateKeyPair(), now });
    const b = await createRootCa({ trustDomain, keys: await generateKeyPair(), now });
    expect(a.certificate.subject).toMatch(/^C=US, O=Sigil, OU=example\.org, 2\.5\.4\.5=[0-9a-f]{32}$/);
    expect(a.certificate.subject).not.toBe(b.certificate.subject);
  });

  it('defaults to a 24 h lifetime and accepts a custom subject', async () => {
    const { certificate } = await createRootCa({
      trustDomain,
      keys: await generateKeyPair(),
      now,
      subject: 'CN=Acme Root',
    });
    expect(DEFAULT_CA_TTL_SECONDS).toBe(86_400);
    expect(certificate.notAfter.getTime() - certificate.notBefore.getTime()).toBe(86_410_000);
    expect(certificate.subject).toBe('CN=Acme Root');
  });

  it('is accepted by openssl verify -x509_strict, with the CA extensions openssl reports', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now: new Date() });
    const verify = await opensslVerify({ root: root.der, leaf: root.der });
    expect(verify.ok, verify.output).toBe(true);
    const text = await opensslText(root.der);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign\n/);
    expect(text).toMatch(/X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/example.org\n/);
    expect(text).toContain('X509v3 Subject Key Identifier');
  });

  it.each([
    [{ ttlSeconds: 0 }, 'ttlSeconds: must be a positive integer number of seconds, got 0'],
    [{ ttlSeconds: 1.5 }, 'ttlSeconds: must be a positive integer number of seconds, got 1.5'],
    [{ now: new Date(Number.NaN) }, 'now: must be a valid Date'],
    [{ trustDomain: 'example.org' }, 'trustDomain: must be a parsed TrustDomain'],
    [{ subject: '' }, 'subject: must be a non-empty dn string'],
  ])('refuses %j', async (override, message) => {
    const params = { trustDomain, keys: await generateKeyPair(), now, ...override } as Parameters<
      typeof createRootCa
    >[0];
    await expect(createRootCa(params)).rejects.toMatchObject({ code: 'ERR_PKI_INVALID_INPUT', message });
  });

  it('refuses a key pair whose halves do not match', async () => {
    const keys = { publicKey: (await generateKeyPair()).publicKey, privateKey: (await generateKeyPair()).privateKey };
    await expect(createRootCa({ trustDomain, keys, now })).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: 'keys: privateKey is not the private half of publicKey',
    });
  });
});

describe('createIntermediateCa', () => {
  it('is signed by the root, with AKI = root SKI, issuer bytes = root subject, notAfter capped', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now, ttlSeconds: 3600 });
    const keys = await generateKeyPair('ec-p384');
    const later = new Date(now.getTime() + 1800_000);
    const { certificate, der } = await createIntermediateCa({
      trustDomain,
      publicKey: keys.publicKey,
      issuer: root,
      ttlSeconds: 86_400,
      now: later,
    });
    expect(await certificate.verify({ publicKey: root.certificate, signatureOnly: true })).toBe(true);
    expect(describeExtensions(certificate)).toEqual([
      { type: '2.5.29.19', critical: true },
      { type: '2.5.29.15', critical: true },
      { type: '2.5.29.14', critical: false },
      { type: '2.5.29.35', critical: false },
      { type: '2.5.29.17', critical: false },
    ]);
    expect(certificate.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(
      root.certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
    );
    expect(certificateParts(der).issuer).toEqual(certificateParts(root.der).subject);
    expect(certificate.notBefore.toISOString()).toBe('2031-05-06T07:37:59.000Z');
    expect(certificate.notAfter).toEqual(root.certificate.notAfter);
    expect(certificate.subject).not.toBe(root.certificate.subject);
  });

  it('chains under openssl verify -x509_strict', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair('rsa-2048'), now: new Date() });
    const intermediate = await createIntermediateCa({
      trustDomain,
      publicKey: (await generateKeyPair()).publicKey,
      issuer: root,
      now: new Date(),
    });
    const verify = await opensslVerify({ root: root.der, leaf: intermediate.der });
    expect(verify.ok, verify.output).toBe(true);
    const text = await opensslText(intermediate.certificate);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE\n/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign\n/);
    expect(text).toContain('X509v3 Authority Key Identifier');
    expect(text).toContain('URI:spiffe://example.org');
  });

  it('refuses an issuer of another trust domain, an expired issuer and a mismatched issuer key', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now, ttlSeconds: 60 });
    const publicKey = (await generateKeyPair()).publicKey;
    await expect(
      createIntermediateCa({ trustDomain: TrustDomain.parse('other.org'), publicKey, issuer: root, now }),
    ).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'issuer: belongs to trust domain "example.org", not "other.org"',
    });
    await expect(
      createIntermediateCa({ trustDomain, publicKey, issuer: root, now: new Date(now.getTime() + 60_000) }),
    ).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'issuer: expired at 2031-05-06T07:09:09.000Z, cannot sign',
    });
    const wrongKey = { certificate: root.certificate, privateKey: (await generateKeyPair()).privateKey };
    await expect(createIntermediateCa({ trustDomain, publicKey, issuer: wrongKey, now })).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'issuer.privateKey: does not match the issuer certificate',
    });
  });
});

describe('loadCaFromPem', () => {
  it('loads our own CA with its chain', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now });
    const keys = await generateKeyPair();
    const intermediate = await createIntermediateCa({ trustDomain, publicKey: keys.publicKey, issuer: root, now });
    const loaded = await loadCaFromPem(
      certificatesToPem([intermediate.certificate, root.certificate]),
      privateKeyToPem(keys.privateKey),
    );
    expect(loaded.der).toEqual(intermediate.der);
    expect(loaded.chain.map((c) => new Uint8Array(c.rawData))).toEqual([root.der]);
  });

  it('refuses a key that does not match and a certificate that is not a CA', async () => {
    const root = await createRootCa({ trustDomain, keys: await generateKeyPair(), now });
    const otherKey = privateKeyToPem((await generateKeyPair()).privateKey);
    await expect(loadCaFromPem(certificatesToPem([root.certificate]), otherKey)).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'privateKey: does not match the ca certificate public key',
    });
    const result = await runOpenssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        '/CN=leaf',
        '-addext',
        'basicConstraints=critical,CA:FALSE',
        '-keyout',
        '{key.pem}',
        '-out',
        '{cert.pem}',
      ],
      {},
      ['key.pem', 'cert.pem'],
    );
    expect(result.code, result.stderr).toBe(0);
    await expect(loadCaFromPem(result.files['cert.pem']!, result.files['key.pem']!)).rejects.toMatchObject({
      code: 'ERR_CA_INVALID',
      message: 'ca.certificate: basicConstraints must have cA=true',
    });
  });

  it('loads an openssl-made upstream CA (UTF8String subject) and signs an intermediate openssl accepts', async () => {
    const config = [
      '[req]',
      'distinguished_name = dn',
      'x509_extensions = v3',
      'prompt = no',
      '[dn]',
      'C = DE',
      'O = Upstream Größe GmbH',
      'CN = Upstream Root',
      '[v3]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier = hash',
    ].join('\n');
    const result = await runOpenssl(
      [
        'req',
        '-x509',
        '-utf8',
        '-config',
        '{ca.cnf}',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-384',
        '-nodes',
        '-days',
        '2',
        '-keyout',
        '{key.pem}',
        '-out',
        '{cert.pem}',
      ],
      { 'ca.cnf': config },
      ['key.pem', 'cert.pem'],
    );
    expect(result.code, result.stderr).toBe(0);
    const upstream = await loadCaFromPem(result.files['cert.pem']!, result.files['key.pem']!);
    const intermediate = await createIntermediateCa({
      trustDomain,
      publicKey: (await generateKeyPair()).publicKey,
      issuer: upstream,
      now: new Date(),
    });
    expect(certificateParts(intermediate.der).issuer).toEqual(certificateParts(upstream.der).subject);
    const verify = await opensslVerify({ root: upstream.der, leaf: intermediate.der });
    expect(verify.ok, verify.output).toBe(true);
  });
});
