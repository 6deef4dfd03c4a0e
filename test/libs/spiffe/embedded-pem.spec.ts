import 'reflect-metadata';
import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { forgeEmbeddingPem } from '../../support/forged-certificate.js';
import { TEST_NOW, TestCa } from '../../support/test-ca.js';
import {
  CertificateFormatError,
  nodeCertificateFromDer,
  SpiffeError,
  verifyX509Svid,
  verifyX509SvidSync,
} from '@sigil/spiffe';

// A certificate forged the way review R6 found (HIGH): Node's X509Certificate reads its input as PEM first, so DER
// bytes carrying a PEM block in a private extension were read as the embedded certificate. The forged leaf names the
// CA as issuer and claims an admin SPIFFE ID; the embedded certificate is a real SVID the CA signed (anyone who ever
// got a TLS handshake from its holder has it). Signature checks then ran on the embedded one and passed.

let ca: TestCa;
let forged: Uint8Array;

beforeAll(async () => {
  ca = await TestCa.create('example.org', { now: TEST_NOW });
  const real = await ca.createX509Svid('spiffe://example.org/workload');
  forged = forgeEmbeddingPem({
    issuer: new Uint8Array(ca.certificate.subjectName.toArrayBuffer()),
    spiffeId: 'spiffe://example.org/admin',
    embeddedPem: real.certificate.toString('pem'),
    notBefore: new Date(TEST_NOW.getTime() - 60_000),
    notAfter: new Date(TEST_NOW.getTime() + 3_600_000),
  }).der;
});

describe('a DER certificate that embeds a PEM certificate', () => {
  it('is what Node reads as the embedded certificate (the trap)', () => {
    expect(new X509Certificate(forged).subject).not.toContain('forged');
  });

  it('is refused by nodeCertificateFromDer', () => {
    expect(() => nodeCertificateFromDer(forged)).toThrow(CertificateFormatError);
    expect(() => nodeCertificateFromDer(forged)).toThrow(/not the DER bytes given/);
  });

  it('is refused as an X509-SVID, sync and async, and never verifies against the CA', async () => {
    const bundle = ca.bundle();
    expect(() => verifyX509SvidSync([forged], bundle, { now: TEST_NOW })).toThrow(SpiffeError);
    await expect(verifyX509Svid([forged], bundle, { now: TEST_NOW })).rejects.toThrow(SpiffeError);
  });

  it('leaves genuine certificates alone', async () => {
    const real = await ca.createX509Svid('spiffe://example.org/workload');
    const der = new Uint8Array(real.certificate.rawData);
    expect(nodeCertificateFromDer(der).raw.equals(der)).toBe(true);
    expect(verifyX509SvidSync([der], ca.bundle(), { now: TEST_NOW }).spiffeId.toString()).toBe(
      'spiffe://example.org/workload',
    );
  });
});
