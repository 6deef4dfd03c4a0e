import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, verify, webcrypto } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SpiffeId, TrustDomain, verifyX509Svid } from '@sigil/spiffe';
import { buildX509SvidReference } from '../../support/pki-reference/x509-svid.js';
import { generateTestKeys, TestCa, TEST_NOW, type TestKeyAlgorithm } from '../../support/test-ca.js';
import { parseCsrFast } from '../../../libs/pki/src/csr-parser.js';
import { DerCursor, derBytes, derContent, type DerContext } from '../../../libs/pki/src/der-reader.js';
import { DerTag } from '../../../libs/pki/src/der-tags.js';
import { PkiError } from '../../../libs/pki/src/errors.js';
import { toPem } from '../../../libs/pki/src/pem.js';
import { X509SvidSigner } from '../../../libs/pki/src/svid-signer.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

const ALGORITHMS: readonly TestKeyAlgorithm[] = ['P-256', 'P-384', 'RSA-2048'];
const TRUST_DOMAIN = TrustDomain.parse('example.org');
const HOUR = 3600;

interface CaUnderTest {
  readonly ca: TestCa;
  readonly signer: X509SvidSigner;
}
const cas = new Map<TestKeyAlgorithm, CaUnderTest>();
const leafSpkis: Uint8Array[] = [];

/** tbsCertificate, signatureAlgorithm and signature value of a certificate, read with the strict DER reader. */
function certificateParts(der: Uint8Array): { tbs: Uint8Array; algorithm: Uint8Array; signature: Uint8Array } {
  const context: DerContext = { name: 'certificate', code: 'ERR_CERTIFICATE_INVALID' };
  const top = DerCursor.over(der, context);
  const fields = top.enter(top.expect(DerTag.SEQUENCE, 'certificate'), 'certificate');
  top.finish('certificate');
  const tbs = fields.expect(DerTag.SEQUENCE, 'tbsCertificate');
  const algorithm = fields.expect(DerTag.SEQUENCE, 'signatureAlgorithm');
  const signature = fields.expect(DerTag.BIT_STRING, 'signatureValue');
  fields.finish('certificate');
  return {
    tbs: derBytes(der, tbs),
    algorithm: derBytes(der, algorithm),
    signature: derContent(der, signature).subarray(1),
  };
}

function caPublicKey(ca: TestCa): { key: Buffer; format: 'der'; type: 'spki' } {
  return { key: Buffer.from(ca.certificate.publicKey.rawData), format: 'der', type: 'spki' };
}

function hashOf(algorithm: TestKeyAlgorithm): string {
  return algorithm === 'P-384' ? 'sha384' : 'sha256';
}

function errorOf(run: () => unknown): { code: string; message: string } {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PkiError);
    return { code: (error as PkiError).code, message: (error as PkiError).message };
  }
  throw new Error('expected a PkiError, nothing was thrown');
}

async function asyncErrorOf(run: () => Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await run();
  } catch (error) {
    expect(error).toBeInstanceOf(PkiError);
    return { code: (error as PkiError).code, message: (error as PkiError).message };
  }
  throw new Error('expected a PkiError, nothing was thrown');
}

beforeAll(async () => {
  for (const algorithm of ALGORITHMS) {
    const ca = await TestCa.create(TRUST_DOMAIN, { keyAlgorithm: algorithm, now: TEST_NOW });
    cas.set(algorithm, {
      ca,
      signer: X509SvidSigner.create({ certificate: ca.certificate, privateKey: ca.keys.privateKey }),
    });
    for (let i = 0; i < 2; i++) {
      const keys = await generateTestKeys(algorithm);
      leafSpkis.push(new Uint8Array(await webcrypto.subtle.exportKey('spki', keys.publicKey)));
    }
  }
});

const pathSegment = fc
  .stringMatching(/^[A-Za-z0-9._-]{1,16}$/)
  .filter((segment) => segment !== '.' && segment !== '..');
const spiffeId = fc
  .array(pathSegment, { minLength: 1, maxLength: 5 })
  .map((segments) => SpiffeId.fromSegments(TRUST_DOMAIN, ...segments));
const dnsLabel = fc.stringMatching(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,14}[A-Za-z0-9])?$/);
// The last label is never all digits (the profile refuses names that look like IP addresses), and a wildcard covers
// at least two labels.
const topLabel = fc.stringMatching(/^[A-Za-z][A-Za-z0-9]{0,5}$/);
const dnsName = fc
  .tuple(fc.boolean(), fc.array(dnsLabel, { maxLength: 3 }), topLabel)
  .map(([wildcard, labels, top]) => `${wildcard && labels.length > 0 ? '*.' : ''}${[...labels, top].join('.')}`);
const dnsNames = fc.uniqueArray(dnsName, { maxLength: 4, selector: (name) => name.toLowerCase() });
// Up to twice the CA's 24 h life, so about half the TTLs are capped at the CA's notAfter.
const ttlSeconds = fc.oneof(fc.integer({ min: 1, max: 48 * HOUR }), fc.constant(24 * HOUR));
const serial = fc
  .uint8Array({ minLength: 1, maxLength: 20 })
  .map((bytes) => Uint8Array.from(bytes, (byte, i) => (i === 0 ? byte & 0x7f || 1 : byte)));
// Any signing time inside the CA's validity (it starts one hour before TEST_NOW), with milliseconds to truncate.
const now = fc.integer({ min: -HOUR * 1000 + 1, max: 20 * HOUR * 1000 }).map((ms) => new Date(TEST_NOW.getTime() + ms));

describe('X509SvidSigner equals the reference builder', () => {
  it.each(ALGORITHMS)(
    'produces the same TBSCertificate as buildX509SvidReference under a %s CA, both verifying (property)',
    async (algorithm) => {
      const { ca, signer } = cas.get(algorithm)!;
      await fc.assert(
        fc.asyncProperty(
          spiffeId,
          dnsNames,
          ttlSeconds,
          serial,
          now,
          fc.nat(leafSpkis.length - 1),
          async (id, names, ttl, serialNumber, at, keyIndex) => {
            const spkiDer = leafSpkis[keyIndex]!;
            const params = { spiffeId: id, dnsNames: names, ttlSeconds: ttl, now: at, serial: serialNumber, spkiDer };
            const fast = signer.sign(params);
            const reference = new Uint8Array(
              (
                await buildX509SvidReference({
                  ...params,
                  ca: { certificate: ca.certificate, privateKey: ca.keys.privateKey },
                })
              ).rawData,
            );
            const fastParts = certificateParts(fast);
            const referenceParts = certificateParts(reference);
            expect(Buffer.from(fastParts.tbs).toString('hex')).toBe(Buffer.from(referenceParts.tbs).toString('hex'));
            expect(Buffer.from(fastParts.algorithm).equals(referenceParts.algorithm)).toBe(true);
            expect(verify(hashOf(algorithm), fastParts.tbs, caPublicKey(ca), fastParts.signature)).toBe(true);
            for (const leaf of [fast, reference]) {
              const verified = await verifyX509Svid([leaf], ca.bundle(), { now: at });
              expect(verified.spiffeId.toString()).toBe(id.toString());
            }
          },
        ),
        { numRuns: 200 },
      );
    },
  );
});

describe('X509SvidSigner leaves pass openssl verify -x509_strict', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sigil-fast-svid-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs `openssl verify -x509_strict` at `now`; returns its output, or throws with it. */
  function opensslVerify(root: x509.X509Certificate, chain: Uint8Array[], at: Date): string {
    const write = (name: string, pem: string): string => {
      const path = join(dir, name);
      writeFileSync(path, pem);
      return path;
    };
    const rootFile = write('root.pem', root.toString('pem'));
    const [leaf, ...intermediates] = chain;
    const leafFile = write('leaf.pem', toPem('CERTIFICATE', leaf!));
    const untrusted = intermediates.length
      ? ['-untrusted', write('untrusted.pem', intermediates.map((der) => toPem('CERTIFICATE', der)).join(''))]
      : [];
    const args = [
      'verify',
      '-x509_strict',
      '-purpose',
      'sslclient',
      '-attime',
      String(Math.floor(at.getTime() / 1000)),
    ];
    return execFileSync('openssl', [...args, '-CAfile', rootFile, ...untrusted, leafFile], { encoding: 'utf8' });
  }

  it('verifies 10 random leaves of both builders, one of them issued by an intermediate CA', async () => {
    const intermediate = await cas.get('P-256')!.ca.createIntermediate({ keyAlgorithm: 'P-384' });
    const samples = fc.sample(fc.tuple(spiffeId, dnsNames, ttlSeconds, now, fc.nat(leafSpkis.length - 1)), {
      numRuns: 10,
      seed: 20300101,
    });
    for (const [index, [id, names, ttl, at, keyIndex]] of samples.entries()) {
      const algorithm = ALGORITHMS[index % ALGORITHMS.length]!;
      const issuer = index === 0 ? intermediate : cas.get(algorithm)!.ca;
      const signer =
        index === 0
          ? X509SvidSigner.create({
              certificate: new Uint8Array(issuer.certificate.rawData),
              privateKey: issuer.keys.privateKey,
            })
          : cas.get(algorithm)!.signer;
      const params = { spiffeId: id, dnsNames: names, ttlSeconds: ttl, now: at, spkiDer: leafSpkis[keyIndex]! };
      const reference = await buildX509SvidReference({
        ...params,
        ca: { certificate: issuer.certificate, privateKey: issuer.keys.privateKey },
      });
      const intermediates = issuer.intermediates().map((cert) => new Uint8Array(cert.rawData));
      for (const leaf of [signer.sign(params), new Uint8Array(reference.rawData)]) {
        expect(opensslVerify(issuer.root().certificate, [leaf, ...intermediates], at)).toMatch(/: OK\n$/);
      }
    }
  });
});

describe('X509SvidSigner inputs', () => {
  it('validates exactly as the reference builder: same code, same message', async () => {
    const { ca, signer } = cas.get('P-256')!;
    const spkiDer = leafSpkis[0]!;
    const good = { spiffeId: SpiffeId.parse('spiffe://example.org/w'), ttlSeconds: 60, now: TEST_NOW, spkiDer };
    const bad: Array<Record<string, unknown>> = [
      { spiffeId: SpiffeId.parse('spiffe://example.org') },
      { spiffeId: SpiffeId.parse('spiffe://other.org/w') },
      { spiffeId: 'spiffe://example.org/w' },
      { dnsNames: ['a..example.org'] },
      { dnsNames: ['a.example.org', 'A.example.org'] },
      { dnsNames: ['a.*.example.org'] },
      { dnsNames: ['-a.example.org'] },
      { dnsNames: [`${'a'.repeat(64)}.org`] },
      { ttlSeconds: 0 },
      { ttlSeconds: 1.5 },
      { now: new Date(Number.NaN) },
      { now: new Date(TEST_NOW.getTime() + 30 * HOUR * 1000) },
      { serial: new Uint8Array([0x80, 1]) },
      { serial: new Uint8Array(21).fill(1) },
    ];
    for (const change of bad) {
      const params = { ...good, ...change } as Parameters<X509SvidSigner['sign']>[0];
      const expected = await asyncErrorOf(() =>
        buildX509SvidReference({ ...params, ca: { certificate: ca.certificate, privateKey: ca.keys.privateKey } }),
      );
      expect(
        errorOf(() => signer.sign(params)),
        JSON.stringify(change),
      ).toEqual(expected);
    }
  });

  it('refuses a public key that is not the canonical der of a supported key type, as the reference does', async () => {
    const { ca, signer } = cas.get('P-256')!;
    const p256 = Buffer.from(leafSpkis[0]!);
    const compressed = Buffer.concat([
      Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'),
      Buffer.from([0x02 | ((p256[p256.length - 1] as number) & 1)]),
      p256.subarray(27, 59),
    ]);
    const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey.export({ format: 'der', type: 'spki' });
    const cases: Array<[Uint8Array, string]> = [
      [Buffer.from('3000', 'hex'), 'spkiDer: not a valid SubjectPublicKeyInfo'],
      [p256.subarray(0, 90), 'spkiDer: not a valid SubjectPublicKeyInfo'],
      [
        compressed,
        'spkiDer: must be the canonical der of an ec P-256 (uncompressed point), ec P-384 or rsa 2048 public key',
      ],
      [p521, 'spkiDer: unsupported ec curve secp521r1, expected P-256 or P-384'],
    ];
    for (const [spkiDer, message] of cases) {
      const params = { spiffeId: SpiffeId.parse('spiffe://example.org/w'), ttlSeconds: 60, now: TEST_NOW, spkiDer };
      expect(errorOf(() => signer.sign(params))).toEqual({ code: 'ERR_KEY_INVALID', message });
      const reference = await asyncErrorOf(() =>
        buildX509SvidReference({ ...params, ca: { certificate: ca.certificate, privateKey: ca.keys.privateKey } }),
      );
      expect(reference.code).toBe('ERR_KEY_INVALID');
    }
  });

  it('draws a positive 16-byte serial per leaf when none is given', () => {
    const { signer } = cas.get('P-256')!;
    const params = {
      spiffeId: SpiffeId.parse('spiffe://example.org/w'),
      ttlSeconds: 60,
      now: TEST_NOW,
      spkiDer: leafSpkis[0]!,
    };
    const serials = [signer.sign(params), signer.sign(params)].map(
      (leaf) => new x509.X509Certificate(leaf).serialNumber,
    );
    expect(serials[0]).not.toBe(serials[1]);
    for (const hex of serials) expect(hex).toMatch(/^(?:[1-7][0-9a-f]|0[1-9a-f])[0-9a-f]{30}$/);
  });

  it('signs a CSR end to end with the key of the CSR and the names of the entry', async () => {
    const { ca, signer } = cas.get('P-384')!;
    const keys = await generateTestKeys('P-256');
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://evil.org/ignored' }])],
    });
    const leaf = signer.signCsr(csr.toString('pem'), {
      spiffeId: SpiffeId.parse('spiffe://example.org/db'),
      dnsNames: ['db.example.org'],
      ttlSeconds: 600,
      now: TEST_NOW,
    });
    const verified = await verifyX509Svid([leaf], ca.bundle(), { now: TEST_NOW });
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/db');
    const certificate = new x509.X509Certificate(leaf);
    expect(Buffer.from(certificate.publicKey.rawData).equals(parseCsrFast(new Uint8Array(csr.rawData)).spkiDer)).toBe(
      true,
    );
    expect(certificate.subject).toBe('O=Sigil, CN=db.example.org');
    expect(certificate.notAfter.getTime() - certificate.notBefore.getTime()).toBe(610_000);
    const garbage = errorOf(() =>
      signer.signCsr('garbage', { spiffeId: verified.spiffeId, ttlSeconds: 1, now: TEST_NOW }),
    );
    expect(garbage).toEqual({ code: 'ERR_CSR_INVALID', message: 'pem: no pem block found' });
  });

  it('refuses a CA key that does not match the certificate, and a certificate that is not a CA', async () => {
    const { ca } = cas.get('P-256')!;
    const other = await generateTestKeys('P-256');
    expect(errorOf(() => X509SvidSigner.create({ certificate: ca.certificate, privateKey: other.privateKey }))).toEqual(
      {
        code: 'ERR_KEY_INVALID',
        message: 'ca.privateKey: does not match the public key of ca.certificate',
      },
    );
    expect(
      errorOf(() => X509SvidSigner.create({ certificate: ca.certificate, privateKey: ca.keys.publicKey })),
    ).toEqual({
      code: 'ERR_KEY_INVALID',
      message: 'ca.privateKey: must be a private key, got public',
    });
    const leaf = await ca.createX509Svid('spiffe://example.org/leaf');
    expect(
      errorOf(() => X509SvidSigner.create({ certificate: leaf.certificate, privateKey: leaf.keys.privateKey })),
    ).toEqual({
      code: 'ERR_CA_INVALID',
      message: 'ca.certificate: basicConstraints must have cA=true',
    });
    expect(
      errorOf(() =>
        X509SvidSigner.create({ certificate: new Uint8Array([0x30, 0x00]), privateKey: ca.keys.privateKey }),
      ).code,
    ).toBe('ERR_CERTIFICATE_INVALID');
    expect(cas.get('P-256')!.signer.caNotAfter).toEqual(ca.certificate.notAfter);
  });
});
