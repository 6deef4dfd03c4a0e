import 'reflect-metadata';
import { KeyObject, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { createTlsServer } from '../../../libs/workload-api/src/tls.js';
import { der, forgeEmbeddingPem, leafWithRawSubject } from '../../support/forged-certificate.js';
import { TEST_NOW, TestCa } from '../../support/test-ca.js';
import {
  certificateSummary,
  CertificateFormatError,
  nodeCertificateFromDer,
  parseX509Svid,
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

describe('a CA-signed SVID that carries a PEM block in an extension (review R16 LOW-1)', () => {
  it('is presented in TLS as its own DER bytes, never as the embedded certificate', async () => {
    const pem = ca.certificate.toString('pem');
    const extension = new x509.Extension('1.3.6.1.4.1.99999.1', false, new TextEncoder().encode(`\n${pem}\n`));
    const issued = await ca.createX509Svid('spiffe://example.org/workload', { extraExtensions: [extension] });
    const leafDer = new Uint8Array(issued.certificate.rawData);
    // Signed by the trusted CA: the verifier accepts it, and Node alone would read the CA certificate out of it.
    expect(verifyX509SvidSync([leafDer], ca.bundle(), { now: TEST_NOW }).spiffeId.toString()).toBe(
      'spiffe://example.org/workload',
    );
    expect(new X509Certificate(leafDer).raw.equals(leafDer)).toBe(false);
    const pkcs8 = KeyObject.from(issued.keys.privateKey).export({ format: 'der', type: 'pkcs8' });
    const svid = await parseX509Svid([leafDer], new Uint8Array(pkcs8));

    const server = createTlsServer({ getX509Svid: () => svid }, (_req, res) => res.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const socket = connect({
        port: (server.address() as AddressInfo).port,
        host: '127.0.0.1',
        rejectUnauthorized: false,
      });
      await once(socket, 'secureConnect');
      const presented = socket.getPeerCertificate().raw;
      socket.destroy();
      expect(Buffer.from(presented).equals(Buffer.from(leafDer))).toBe(true);
    } finally {
      server.close();
    }
  });
});

describe('a CA-signed certificate that the strict reader accepts and OpenSSL cannot read (review R16 LOW-2)', () => {
  it('verifies by its signature, and reading its verified chain is an invalid SVID, not a crash', async () => {
    const leaf = leafWithRawSubject({
      issuer: new Uint8Array(ca.certificate.subjectName.toArrayBuffer()),
      subject: der.seq(der.integer(5)),
      spiffeId: 'spiffe://example.org/odd',
      notBefore: new Date(TEST_NOW.getTime() - 60_000),
      notAfter: new Date(TEST_NOW.getTime() + 3_600_000),
      signingKey: KeyObject.from(ca.keys.privateKey),
    });
    expect(() => nodeCertificateFromDer(leaf)).toThrow();
    const verified = verifyX509SvidSync([new Uint8Array(leaf)], ca.bundle(), { now: TEST_NOW });
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/odd');
    expect(() => verified.verifiedChain).toThrow(SpiffeError);
    expect(() => verified.verifiedChain).toThrow(/a certificate of the verified chain cannot be read/);
  });
});

describe('a CA-signed SVID with an empty subject (review R18 LOW-1)', () => {
  it('is summarised with an empty subject, as the agent reads its stored SVID at start, not a crash', async () => {
    const leaf = leafWithRawSubject({
      issuer: new Uint8Array(ca.certificate.subjectName.toArrayBuffer()),
      subject: der.seq(),
      spiffeId: 'spiffe://example.org/empty-subject',
      notBefore: new Date(TEST_NOW.getTime() - 60_000),
      notAfter: new Date(TEST_NOW.getTime() + 3_600_000),
      signingKey: KeyObject.from(ca.keys.privateKey),
    });
    const verified = verifyX509SvidSync([new Uint8Array(leaf)], ca.bundle(), { now: TEST_NOW });
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/empty-subject');
    expect(certificateSummary(leaf)).toEqual({
      subject: '',
      notBefore: new Date(Math.floor(TEST_NOW.getTime() / 1000) * 1000 - 60_000),
      notAfter: new Date(Math.floor(TEST_NOW.getTime() / 1000) * 1000 + 3_600_000),
    });
  });
});
