import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { KeyUsage, TEST_NOW, TestCa, generateTestKeys, type CertificateOptions } from '../../support/test-ca.js';
import {
  SpiffeError,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  idFromCertificate,
  parseX509Svid,
  verifyX509Svid,
  verifyX509SvidSync,
  type VerifiedX509Svid,
} from '../../../libs/spiffe/src/index.js';

const ID = 'spiffe://example.org/workload';
const HOUR = 3_600_000;

async function rejection(promise: Promise<unknown>): Promise<SpiffeError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeError);
    return error as SpiffeError;
  }
  throw new Error('expected a SpiffeError');
}

let root: TestCa;
let intermediate: TestCa;
let otherRoot: TestCa;
let bundles: TrustBundleSet;

beforeAll(async () => {
  root = await TestCa.create('example.org', { now: TEST_NOW });
  intermediate = await root.createIntermediate();
  otherRoot = await TestCa.create('other.org', { now: TEST_NOW });
  bundles = new TrustBundleSet([root.bundle(), otherRoot.bundle()]);
});

describe('verifyX509Svid accepts valid SVIDs', () => {
  it('verifies a leaf signed by the root', async () => {
    const svid = await root.createX509Svid(ID);
    const result = await verifyX509Svid(svid.chainDer(), bundles, { now: TEST_NOW });
    expect(result.spiffeId.toString()).toBe(ID);
    expect(result.verifiedChain.map((c) => c.subject)).toEqual([svid.certificate.subject, root.certificate.subject]);
  });

  it('verifies a leaf through an intermediate, given as parsed certificates', async () => {
    const svid = await intermediate.createX509Svid(ID, { dnsNames: ['web.example.org'] });
    const result = await verifyX509Svid(svid.chain, root.bundle(), { now: TEST_NOW });
    expect(result.spiffeId.toString()).toBe(ID);
    expect(result.verifiedChain).toHaveLength(3);
    expect(result.verifiedChain[2]?.subject).toBe(root.certificate.subject);
  });

  it('verifies a leaf through two intermediates given as concatenated der, out of order', async () => {
    const second = await intermediate.createIntermediate();
    const svid = await second.createX509Svid(ID);
    const [leaf, a, b] = svid.chainDer() as [Uint8Array, Uint8Array, Uint8Array];
    const concatenated = new Uint8Array([...leaf, ...b, ...a]);
    const result = await verifyX509Svid(concatenated, bundles, { now: TEST_NOW });
    expect(result.verifiedChain).toHaveLength(4);
  });

  it('finds the right root when the bundle holds several (CA rotation)', async () => {
    const next = await TestCa.create('example.org', { now: TEST_NOW });
    const bundle = TrustBundle.create(root.trustDomain, {
      x509Authorities: [root.certificate, next.certificate],
    });
    const svid = await next.createX509Svid(ID);
    await expect(verifyX509Svid(svid.chain, bundle, { now: TEST_NOW })).resolves.toBeDefined();
  });

  it('agrees with openssl verify -x509_strict on a chain through an intermediate', async () => {
    const svid = await intermediate.createX509Svid(ID);
    await expect(verifyX509Svid(svid.chain, bundles, { now: TEST_NOW })).resolves.toBeDefined();
    const dir = mkdtempSync(join(tmpdir(), 'sigil-x509-'));
    writeFileSync(join(dir, 'root.pem'), root.certificate.toString('pem'));
    writeFileSync(join(dir, 'intermediate.pem'), intermediate.certificate.toString('pem'));
    writeFileSync(join(dir, 'leaf.pem'), svid.certificate.toString('pem'));
    const output = execFileSync('openssl', [
      'verify',
      '-x509_strict',
      '-attime',
      String(TEST_NOW.getTime() / 1000),
      '-CAfile',
      join(dir, 'root.pem'),
      '-untrusted',
      join(dir, 'intermediate.pem'),
      join(dir, 'leaf.pem'),
    ]).toString();
    expect(output).toContain('leaf.pem: OK');
    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'leaf.pem')]).toString();
    expect(text).toContain(`URI:${ID}`);
    expect(text).toContain('CA:FALSE');
  });

  it('accepts the validity bounds themselves', async () => {
    const svid = await root.createX509Svid(ID);
    await expect(verifyX509Svid(svid.chain, bundles, { now: svid.certificate.notAfter })).resolves.toBeDefined();
    await expect(verifyX509Svid(svid.chain, bundles, { now: svid.certificate.notBefore })).resolves.toBeDefined();
  });
});

interface Made {
  chain: x509.X509Certificate[] | Uint8Array;
  now?: Date;
  bundle?: TrustBundle;
}

type Case = [name: string, make: () => Promise<Made>, code: string, message: string | RegExp];

const leaf =
  (options: CertificateOptions, id = ID) =>
  async () => ({ chain: (await root.createX509Svid(id, options)).chain });

describe('verifyX509Svid rejects', () => {
  const cases: Case[] = [
    [
      'a leaf of a trust domain without bundle',
      async () => ({ chain: (await root.createX509Svid('spiffe://unknown.org/w')).chain }),
      'ERR_BUNDLE_NOT_FOUND',
      'no bundle for trust domain "unknown.org"',
    ],
    [
      'a leaf signed by an untrusted root',
      async () => {
        const rogue = await TestCa.create('example.org', { now: TEST_NOW });
        return { chain: (await rogue.createX509Svid(ID)).chain };
      },
      'ERR_X509_SVID_INVALID',
      'certificate chain does not chain to a trusted authority of example.org',
    ],
    [
      'a leaf of example.org signed by the other.org root',
      async () => ({ chain: (await otherRoot.createX509Svid(ID)).chain }),
      'ERR_X509_SVID_INVALID',
      'does not chain to a trusted authority of example.org',
    ],
    [
      'a leaf with a forged signature',
      async () => {
        // Same issuer name as the root, signed by another key.
        const keys = await generateTestKeys();
        return { chain: (await root.createX509Svid(ID, { signingKey: keys.privateKey })).chain };
      },
      'ERR_X509_SVID_INVALID',
      'does not chain to a trusted authority',
    ],
    [
      'an expired leaf',
      async () => ({ chain: (await root.createX509Svid(ID)).chain, now: new Date(TEST_NOW.getTime() + 2 * HOUR) }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate expired at 2030-01-01T01:00:00.000Z',
    ],
    [
      'a leaf not yet valid',
      async () => ({ chain: (await root.createX509Svid(ID)).chain, now: new Date(TEST_NOW.getTime() - 2 * 60_000) }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate is not valid before 2029-12-31T23:59:00.000Z',
    ],
    ['a leaf with cA=true', leaf({ isCa: true }), 'ERR_X509_SVID_INVALID', 'leaf certificate must not be a ca'],
    [
      'a leaf with two uri sans',
      leaf({ uris: [ID, 'spiffe://example.org/other'] }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must have exactly one uri san, got 2',
    ],
    [
      'a leaf without uri san',
      leaf({ uris: [], dnsNames: ['web.example.org'] }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must have exactly one uri san, got 0',
    ],
    [
      'a leaf without san extension',
      leaf({ uris: [] }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must have exactly one uri san, got 0',
    ],
    [
      'a leaf whose uri is not a spiffe id',
      leaf({ uris: ['https://example.org/workload'] }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate uri san is not a spiffe id: invalid spiffe id "https://example.org/workload": scheme must be "spiffe"',
    ],
    [
      'a leaf with keyCertSign',
      leaf({ keyUsage: KeyUsage.digitalSignature | KeyUsage.keyCertSign }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must not have keyCertSign key usage',
    ],
    [
      'a leaf with cRLSign',
      leaf({ keyUsage: KeyUsage.digitalSignature | KeyUsage.cRLSign }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must not have cRLSign key usage',
    ],
    [
      'a leaf without digitalSignature',
      leaf({ keyUsage: KeyUsage.keyEncipherment }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate must have digitalSignature key usage',
    ],
    [
      'a leaf with the trust domain id (no path)',
      leaf({}, 'spiffe://example.org'),
      'ERR_X509_SVID_INVALID',
      'leaf certificate spiffe id "spiffe://example.org" must have a path',
    ],
    [
      'a leaf with an unknown critical extension',
      leaf({ extraExtensions: [new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0]))] }),
      'ERR_X509_SVID_INVALID',
      'leaf certificate has an unsupported critical extension 1.2.3.4.5',
    ],
    [
      'an intermediate that is not a ca',
      async () => {
        const notCa = await root.createIntermediate({ isCa: false });
        return { chain: (await notCa.createX509Svid(ID)).chain };
      },
      'ERR_X509_SVID_INVALID',
      'must be a ca (basicConstraints cA=true)',
    ],
    [
      'an intermediate without basic constraints',
      async () => {
        const notCa = await root.createIntermediate({ isCa: null });
        return { chain: (await notCa.createX509Svid(ID)).chain };
      },
      'ERR_X509_SVID_INVALID',
      'must be a ca (basicConstraints cA=true)',
    ],
    [
      'an intermediate without keyCertSign',
      async () => {
        const ca = await root.createIntermediate({ keyUsage: KeyUsage.cRLSign });
        return { chain: (await ca.createX509Svid(ID)).chain };
      },
      'ERR_X509_SVID_INVALID',
      'must have keyCertSign key usage',
    ],
    [
      'an expired intermediate',
      async () => {
        const ca = await root.createIntermediate({
          notAfter: new Date(TEST_NOW.getTime() - 1000),
          notBefore: new Date(TEST_NOW.getTime() - HOUR),
        });
        return { chain: (await ca.createX509Svid(ID)).chain };
      },
      'ERR_X509_SVID_INVALID',
      /intermediate certificate "CN=Test Intermediate CA \d+, O=example.org" expired at 2029-12-31T23:59:59.000Z/,
    ],
    [
      'a chain missing its intermediate',
      async () => ({ chain: [(await intermediate.createX509Svid(ID)).certificate] }),
      'ERR_X509_SVID_INVALID',
      'no issuer found for leaf certificate',
    ],
    [
      'a chain longer than the root path length allows',
      async () => {
        const strictRoot = await TestCa.create('example.org', { now: TEST_NOW, pathLength: 0 });
        const ca = await strictRoot.createIntermediate();
        const svid = await ca.createX509Svid(ID);
        return { chain: [...svid.chain, strictRoot.certificate], bundle: strictRoot.bundle() };
      },
      'ERR_X509_SVID_INVALID',
      'allows 0 intermediate(s) below it, the chain has 1',
    ],
    [
      'an expired root',
      async () => {
        const oldRoot = await TestCa.create('example.org', {
          now: TEST_NOW,
          notAfter: new Date(TEST_NOW.getTime() - 1000),
        });
        return { chain: (await oldRoot.createX509Svid(ID)).chain, bundle: oldRoot.bundle() };
      },
      'ERR_X509_SVID_INVALID',
      /root certificate "CN=Test Root CA \d+, O=example.org" expired at 2029-12-31T23:59:59.000Z/,
    ],
    ['an empty chain', async () => ({ chain: [] }), 'ERR_X509_SVID_INVALID', 'certificate chain is empty'],
    [
      'bytes that are not der',
      async () => ({ chain: new Uint8Array([1, 2, 3]) }),
      'ERR_X509_SVID_INVALID',
      'der item 0 does not start with a sequence tag',
    ],
    [
      'truncated der',
      async () => ({ chain: (await root.createX509Svid(ID)).chainDer()[0]!.slice(0, 100) }),
      'ERR_X509_SVID_INVALID',
      'der item 0 is truncated',
    ],
  ];

  it.each(cases)('%s', async (_name, make, code, message) => {
    const made = await make();
    const run = (): VerifiedX509Svid =>
      verifyX509SvidSync(made.chain, made.bundle ?? bundles, { now: made.now ?? TEST_NOW });
    const error = await rejection(verifyX509Svid(made.chain, made.bundle ?? bundles, { now: made.now ?? TEST_NOW }));
    expect(error.code).toBe(code);
    if (typeof message === 'string') expect(error.message).toContain(message);
    else expect(error.message).toMatch(message);
    // The synchronous form is the same rule set and fails with the same error.
    expect(run).toThrow(error);
    expect(() => run()).toThrow(SpiffeError);
  });
});

describe('idFromCertificate', () => {
  it('returns the uri san of a leaf and of a ca', async () => {
    const svid = await root.createX509Svid(ID);
    expect(idFromCertificate(svid.certificate).toString()).toBe(ID);
    expect(idFromCertificate(new Uint8Array(root.certificate.rawData)).toString()).toBe('spiffe://example.org');
  });

  it('rejects bytes that are not a certificate', () => {
    expect(() => idFromCertificate(new Uint8Array([0x30, 0x03, 1, 2, 3]))).toThrow(
      'certificate 0 is not a der x.509 certificate',
    );
  });
});

describe('parseX509Svid', () => {
  it('parses a chain with its matching pkcs#8 key and hint', async () => {
    const svid = await intermediate.createX509Svid(ID);
    const parsed = await parseX509Svid(svid.chainDer(), await svid.privateKeyPkcs8(), { hint: 'internal' });
    expect(parsed.spiffeId.toString()).toBe(ID);
    expect(parsed.certificates).toHaveLength(2);
    expect(parsed.hint).toBe('internal');
    expect(parsed.privateKey.type).toBe('private');
    expect(parsed.privateKey.algorithm).toMatchObject({ name: 'ECDSA', namedCurve: 'P-256' });
  });

  it('parses an rsa key', async () => {
    const svid = await root.createX509Svid(ID, { keyAlgorithm: 'RSA-2048' });
    const parsed = await parseX509Svid(svid.chainDer(), await svid.privateKeyPkcs8());
    expect(parsed.privateKey.algorithm.name).toBe('RSASSA-PKCS1-v1_5');
    expect(parsed.hint).toBeUndefined();
  });

  it.each([
    ['a key of another certificate', 'private key does not match the public key of the leaf certificate'],
    ['bytes that are not a key', 'private key is not a pkcs#8 der key'],
    ['a ca leaf', 'leaf certificate must not be a ca'],
    ['a non-ca intermediate', 'must be a ca (basicConstraints cA=true)'],
  ])('rejects %s', async (name, message) => {
    const svid = await root.createX509Svid(ID, name === 'a ca leaf' ? { isCa: true } : {});
    const other = await root.createX509Svid(ID);
    let chain = svid.chainDer();
    let key = await svid.privateKeyPkcs8();
    if (name === 'a key of another certificate') key = await other.privateKeyPkcs8();
    if (name === 'bytes that are not a key') key = new Uint8Array([0x30, 0x00]);
    if (name === 'a non-ca intermediate') chain = [...chain, ...other.chainDer()];
    const error = await rejection(parseX509Svid(chain, key));
    expect(error.code).toBe('ERR_X509_SVID_INVALID');
    expect(error.message).toContain(message);
  });
});

describe('TrustDomain of results', () => {
  it('keeps the trust domain of the leaf', async () => {
    const svid = await otherRoot.createX509Svid('spiffe://other.org/db');
    const result = await verifyX509Svid(svid.chain, bundles, { now: TEST_NOW });
    expect(result.spiffeId.trustDomain.equals(TrustDomain.parse('other.org'))).toBe(true);
  });
});
