/**
 * The DER certificate reader SVID verification runs on (libs/spiffe/src/certificate.ts): what it reads must be what
 * @peculiar/x509 (the library it replaces on that path, and the oracle here) reads from the same certificates, and
 * malformed input must fail with the reader's own error or OpenSSL's, never a TypeError or RangeError. The public
 * API still hands out @peculiar/x509 objects, built on first access.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { KeyUsage, TEST_NOW, TestCa } from '../../support/test-ca.js';
import {
  CertificateFormatError,
  KEY_USAGE,
  OID_AUTHORITY_KEY_IDENTIFIER,
  authorityKeyId,
  basicConstraints,
  keyUsage,
  parseCertificate,
  subjectAltNameUris,
} from '../../../libs/spiffe/src/certificate.js';
import {
  SpiffeError,
  TrustBundle,
  certificateChainDer,
  certificateSummary,
  chainIssuerIds,
  parseX509Svid,
  verifyX509SvidSync,
} from '../../../libs/spiffe/src/index.js';
import { x509 as X509Objects } from '../../../libs/spiffe/src/x509-provider.js';

const ID = 'spiffe://example.org/workload';
const der = (certificate: x509.X509Certificate): Uint8Array => new Uint8Array(certificate.rawData);

/** Everything the reader reads, from @peculiar/x509's parse of the same certificate. */
function oracle(certificate: x509.X509Certificate) {
  const constraints = certificate.getExtension(x509.BasicConstraintsExtension);
  const usage = certificate.getExtension(x509.KeyUsagesExtension);
  const san = certificate.getExtension(x509.SubjectAlternativeNameExtension);
  return {
    issuer: new Uint8Array(certificate.issuerName.toArrayBuffer()),
    subject: new Uint8Array(certificate.subjectName.toArrayBuffer()),
    subjectText: certificate.subject,
    notBefore: certificate.notBefore.getTime(),
    notAfter: certificate.notAfter.getTime(),
    spki: new Uint8Array(certificate.publicKey.rawData),
    extensions: certificate.extensions.map((each) => ({
      oid: each.type,
      critical: each.critical,
      value: new Uint8Array(each.value),
    })),
    basicConstraints:
      constraints === null
        ? null
        : {
            ca: constraints.ca,
            ...(constraints.pathLength === undefined ? {} : { pathLength: constraints.pathLength }),
          },
    keyUsage: usage === null ? null : usage.usages,
    uris: (san?.names.items ?? []).filter((name) => name.type === 'url').map((name) => name.value),
  };
}

function read(certificate: x509.X509Certificate) {
  const view = parseCertificate(der(certificate));
  return {
    issuer: new Uint8Array(view.issuer),
    subject: new Uint8Array(view.subject),
    subjectText: certificateSummary(view.der).subject,
    notBefore: view.notBefore.getTime(),
    notAfter: view.notAfter.getTime(),
    spki: new Uint8Array(view.spki),
    extensions: view.extensions.map((each) => ({ ...each, value: new Uint8Array(each.value) })),
    basicConstraints: basicConstraints(view),
    keyUsage: keyUsage(view),
    uris: subjectAltNameUris(view),
  };
}

/** A small deterministic generator (mulberry32), so a failing case can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Parses, and returns the error unless it is the reader's own or OpenSSL's refusal. */
function unexpectedError(input: Uint8Array): unknown {
  try {
    parseCertificate(input);
    return undefined;
  } catch (error) {
    if (error instanceof CertificateFormatError) return undefined;
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_OSSL')) return undefined;
    return error;
  }
}

let root: TestCa;
let intermediate: TestCa;
let certificates: Array<[string, x509.X509Certificate]>;

beforeAll(async () => {
  root = await TestCa.create('example.org', { now: TEST_NOW, subject: 'C=US, O=example.org, OU=Test, CN=Root' });
  intermediate = await root.createIntermediate({ pathLength: 3 });
  const rsa = await TestCa.create('rsa.example.org', { now: TEST_NOW, keyAlgorithm: 'RSA-2048', pathLength: 0 });
  const leaf = async (options: Parameters<TestCa['createX509Svid']>[1]) =>
    (await intermediate.createX509Svid(ID, options)).certificate;
  certificates = [
    ['root', root.certificate],
    ['intermediate, pathLength 3', intermediate.certificate],
    ['RSA root, pathLength 0', rsa.certificate],
    ['leaf', await leaf({})],
    ['leaf with DNS names and two URIs', await leaf({ dnsNames: ['a.example.org'], uris: [ID, `${ID}/2`] })],
    ['leaf without SAN, key usage or basic constraints', await leaf({ uris: [], keyUsage: null, isCa: null })],
    [
      'leaf with every key usage',
      await leaf({
        keyUsage:
          KeyUsage.digitalSignature |
          KeyUsage.nonRepudiation |
          KeyUsage.keyEncipherment |
          KeyUsage.dataEncipherment |
          KeyUsage.keyAgreement |
          KeyUsage.keyCertSign |
          KeyUsage.cRLSign |
          KeyUsage.encipherOnly |
          KeyUsage.decipherOnly,
      }),
    ],
    ['leaf with decipherOnly (second key usage byte)', await leaf({ keyUsage: KeyUsage.decipherOnly })],
    [
      'leaf with an unknown critical extension',
      await leaf({ extraExtensions: [new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]))] }),
    ],
    ['leaf valid until 2049 (UTCTime)', await leaf({ notAfter: new Date('2049-12-31T23:59:59Z') })],
    ['leaf valid until 2050 (GeneralizedTime)', await leaf({ notAfter: new Date('2050-01-01T00:00:00Z') })],
    ['leaf valid from 1950 (UTCTime)', await leaf({ notBefore: new Date('1950-01-01T00:00:00Z') })],
  ];
});

describe('parseCertificate reads what @peculiar/x509 reads', () => {
  it('for every kind of certificate the tests make', () => {
    for (const [name, certificate] of certificates) {
      expect(read(certificate), name).toEqual(oracle(certificate));
    }
  });

  it('numbers key usages as @peculiar/x509 does', () => {
    expect(KEY_USAGE).toEqual({
      digitalSignature: x509.KeyUsageFlags.digitalSignature,
      keyCertSign: x509.KeyUsageFlags.keyCertSign,
      cRLSign: x509.KeyUsageFlags.cRLSign,
    });
  });

  it('certificateSummary gives subject and validity, and refuses what is not a certificate', () => {
    const summary = certificateSummary(der(root.certificate));
    expect(summary).toEqual({
      subject: root.certificate.subject,
      notBefore: root.certificate.notBefore,
      notAfter: root.certificate.notAfter,
    });
    expect(() => certificateSummary(new Uint8Array([0x30, 0x00]))).toThrow(SpiffeError);
  });
});

const peculiarKeyId = (certificate: x509.X509Certificate): string | undefined =>
  certificate.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase();

describe('chainIssuerIds (the lean reader) reads the authority key IDs @peculiar/x509 reads', () => {
  it('for every kind of certificate the tests make, alone and as a chain', () => {
    let withKeyId = 0;
    for (const [name, certificate] of certificates) {
      const expected = peculiarKeyId(certificate);
      if (expected !== undefined) withKeyId++;
      expect(chainIssuerIds([der(certificate)]), name).toEqual(expected === undefined ? [] : [expected]);
    }
    expect(withKeyId).toBeGreaterThan(certificates.length / 2);
    const chain = certificates.slice(3, 6).map(([, certificate]) => certificate);
    expect(chainIssuerIds(chain.map(der))).toEqual(chain.map(peculiarKeyId).filter((id) => id !== undefined));
  });

  it('has none for an extension without keyIdentifier, and refuses one that is not DER', () => {
    const aki = (value: number[]) => ({
      extensions: [{ oid: OID_AUTHORITY_KEY_IDENTIFIER, critical: false, value: new Uint8Array(value) }],
    });
    expect(authorityKeyId(aki([0x30, 0x00]))).toBeUndefined();
    expect(authorityKeyId(aki([0x30, 0x03, 0x80, 0x01, 0xab]))).toBe('ab');
    expect(authorityKeyId({ extensions: [] })).toBeUndefined();
    expect(() => authorityKeyId(aki([0x30, 0x03, 0x80, 0x05, 0xab]))).toThrow(CertificateFormatError);
    expect(() => authorityKeyId(aki([0x04, 0x00]))).toThrow(CertificateFormatError);
  });
});

describe('verifyX509SvidSync: the leaf it reports is what @peculiar/x509 reads', () => {
  it('validity and SubjectPublicKeyInfo, without building verifiedChain', async () => {
    const svid = await intermediate.createX509Svid(ID);
    const verified = verifyX509SvidSync(svid.chainDer(), root.bundle(), { now: TEST_NOW });
    const leaf = svid.chain[0]!;
    expect(verified.leaf.notBefore).toEqual(leaf.notBefore);
    expect(verified.leaf.notAfter).toEqual(leaf.notAfter);
    expect(new Uint8Array(verified.leaf.spki)).toEqual(new Uint8Array(leaf.publicKey.rawData));
  });

  it('chainIssuerIds: those of the chain as given, from the certificates it read', async () => {
    const svid = await intermediate.createX509Svid(ID);
    const chain = svid.chainDer();
    const verified = verifyX509SvidSync(chain, root.bundle(), { now: TEST_NOW });
    expect(verified.chainIssuerIds).toEqual(chainIssuerIds(chain));
    expect(verified.chainIssuerIds).toEqual(svid.chain.map(peculiarKeyId));
    expect(verified.chainIssuerIds).toHaveLength(2);
    // A certificate the chain holds but verification does not use (the root, taken from the bundle) counts too.
    const withRoot = [...chain, der(root.certificate)];
    const again = verifyX509SvidSync(withRoot, root.bundle(), { now: TEST_NOW });
    const expected = [...svid.chain, root.certificate].map(peculiarKeyId).filter((id) => id !== undefined);
    expect(again.chainIssuerIds).toEqual(expected);
    expect(again.chainIssuerIds).toEqual(chainIssuerIds(withRoot));
  });
});

describe('parseCertificate refuses malformed input with the rule', () => {
  it('every truncation of a certificate', () => {
    const bytes = der(intermediate.certificate);
    for (let length = 0; length < bytes.length; length++) {
      expect(() => parseCertificate(bytes.subarray(0, length)), `first ${length} bytes`).toThrow(
        CertificateFormatError,
      );
    }
  });

  it('trailing data after the certificate', () => {
    expect(() => parseCertificate(new Uint8Array([...der(root.certificate), 0]))).toThrow(
      /the certificate has data after its last element/,
    );
  });

  it('a critical flag that is not DER TRUE (0xff)', () => {
    const bytes = der(root.certificate);
    // BOOLEAN TRUE, the critical flag of the first critical extension.
    const at = bytes.findIndex((_, i) => bytes[i] === 0x01 && bytes[i + 1] === 0x01 && bytes[i + 2] === 0xff);
    expect(at).toBeGreaterThan(0);
    const patched = bytes.slice();
    patched[at + 2] = 0x01;
    expect(() => parseCertificate(patched)).toThrow(/critical flag is not der true/);
  });

  it('a long-form length below 128 (not minimal)', () => {
    // A SEQUENCE of 3 bytes with its length in the long form.
    expect(() => parseCertificate(new Uint8Array([0x30, 0x81, 0x03, 0x02, 0x01, 0x00]))).toThrow(
      /certificate has a non-minimal length/,
    );
  });

  it('a second subjectAltName extension', async () => {
    const twice = await intermediate.createX509Svid(ID, {
      extraExtensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `${ID}/2` }])],
    });
    expect(() => subjectAltNameUris(parseCertificate(der(twice.certificate)))).toThrow(
      'certificate must not have more than one subject alternative name extension',
    );
  });

  it('only its own error or OpenSSL refusal for 3,000 mutations of real certificates', () => {
    const next = random(15);
    const sources = certificates.map(([, certificate]) => der(certificate));
    for (let i = 0; i < 3000; i++) {
      const input = (sources[Math.floor(next() * sources.length)] as Uint8Array).slice();
      const flips = 1 + Math.floor(next() * 4);
      for (let f = 0; f < flips; f++) input[Math.floor(next() * input.length)] = Math.floor(next() * 256);
      const error = unexpectedError(input);
      expect(error, `mutation ${i}`).toBeUndefined();
    }
  });
});

describe('the @peculiar/x509 objects of the public API, built on first access', () => {
  it('parseX509Svid: certificates are X509Certificate objects, the same on every access, and their DER', async () => {
    const svid = await intermediate.createX509Svid(ID);
    const parsed = await parseX509Svid(svid.chainDer(), await svid.privateKeyPkcs8());
    expect(Object.keys(parsed)).toContain('certificates');
    expect(certificateChainDer(parsed)).toEqual(svid.chainDer());
    const certificates = parsed.certificates;
    expect(certificates.every((each) => each instanceof X509Objects.X509Certificate)).toBe(true);
    expect(parsed.certificates).toBe(certificates);
    expect(certificates.map((each) => each.subject)).toEqual(svid.chain.map((each) => each.subject));
    // Without the registry of parseX509Svid (a copy of the object), the DER comes from the objects.
    expect(certificateChainDer({ certificates })).toEqual(svid.chainDer());
  });

  it('TrustBundle.x509Authorities and verifiedChain: X509Certificate objects, the caller-given ones kept', async () => {
    const fromDer = TrustBundle.fromX509Der(root.trustDomain, der(root.certificate));
    const [authority] = fromDer.x509Authorities;
    expect(authority).toBeInstanceOf(X509Objects.X509Certificate);
    expect(authority?.subject).toBe(root.certificate.subject);
    const svid = await intermediate.createX509Svid(ID);
    const verified = verifyX509SvidSync(svid.chain, root.bundle(), { now: TEST_NOW });
    expect(verified.verifiedChain.slice(0, 2)).toEqual(svid.chain);
    expect(verified.verifiedChain[0]).toBe(svid.chain[0]);
    expect(verified.verifiedChain[2]).toBeInstanceOf(X509Objects.X509Certificate);
    const fromBytes = verifyX509SvidSync(svid.chainDer(), fromDer, { now: TEST_NOW });
    expect(fromBytes.verifiedChain[2]).toBe(fromDer.x509Authorities[0]);
  });
});
