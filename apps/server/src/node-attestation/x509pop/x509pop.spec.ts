import 'reflect-metadata';
import { X509Certificate, createHash, createPrivateKey, sign, webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KeyUsage, TEST_NOW, TestCa, generateTestKeys, type TestSvid } from '../../../../../test/support/test-ca.js';
import {
  X509POP_MAX_CHAIN_BYTES,
  X509POP_MAX_SIGNATURE_CHECKS,
  isPossessionProven,
  parseX509popCaBundle,
  verifyX509popChain,
  X509popCheckedPaths,
} from './x509pop.js';

const der = (svid: TestSvid): Uint8Array[] => svid.chainDer();
const sha1 = (data: ArrayBuffer): string => createHash('sha1').update(new Uint8Array(data)).digest('hex');
const node = (ca: TestCa, options: Parameters<TestCa['createX509Svid']>[1] = {}) =>
  ca.createX509Svid('unused', { subject: 'CN=node-1, O=Nodes', uris: [], ...options });

async function privateKeyOf(svid: TestSvid) {
  return createPrivateKey({ key: Buffer.from(await svid.privateKeyPkcs8()), format: 'der', type: 'pkcs8' });
}

describe('verifyX509popChain', () => {
  it('verifies leaf → intermediate → root and reports the fingerprint and selectors', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const issuing = await root.createIntermediate();
    const leaf = await node(issuing);
    const evidence = await verifyX509popChain(der(leaf), [root.certificate], TEST_NOW);
    expect(evidence.fingerprint).toBe(sha1(leaf.certificate.rawData));
    expect(evidence.selectors).toEqual([
      { type: 'x509pop', value: 'subject:cn:node-1' },
      { type: 'x509pop', value: `ca:fingerprint:${sha1(issuing.certificate.rawData)}` },
      { type: 'x509pop', value: `ca:fingerprint:${sha1(root.certificate.rawData)}` },
    ]);
  });

  type Case = { chain: Uint8Array[]; at?: Date; trusted?: TestCa };
  it.each<[string, (root: TestCa) => Promise<Case>, string]>([
    [
      'a chain to another CA',
      async () => ({ chain: der(await node(await TestCa.create('x.test', { now: TEST_NOW, subject: 'CN=Other' }))) }),
      'x509pop: certificate chain does not lead to a trusted ca (no issuer found for "CN=node-1, O=Nodes")',
    ],
    [
      'a leaf without digitalSignature',
      async (root) => ({ chain: der(await node(root, { keyUsage: KeyUsage.keyEncipherment })) }),
      'x509pop: leaf certificate is not meant for digital signatures (key usage lacks digitalSignature)',
    ],
    [
      'a leaf without key usage',
      async (root) => ({ chain: der(await node(root, { keyUsage: null })) }),
      'x509pop: leaf certificate is not meant for digital signatures (key usage lacks digitalSignature)',
    ],
    [
      'an expired leaf',
      async (root) => ({ chain: der(await node(root)), at: new Date(TEST_NOW.getTime() + 2 * 3600_000) }),
      `x509pop: leaf certificate expired at ${new Date(TEST_NOW.getTime() + 3600_000).toISOString()}`,
    ],
    [
      'an intermediate that is not a CA',
      async (root) => {
        const fake = await root.createIntermediate({ subject: 'CN=Not A CA', isCa: false });
        return { chain: der(await node(fake)) };
      },
      'x509pop: intermediate certificate "CN=Not A CA" is not a ca',
    ],
    [
      'an intermediate beyond the root path length',
      async () => {
        const strict = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Strict Root', pathLength: 0 });
        const chain = der(await node(await strict.createIntermediate({ subject: 'CN=Too Deep' })));
        return { chain, trusted: strict };
      },
      'x509pop: root certificate "CN=Strict Root" allows 0 intermediate(s) below it, the chain has 1',
    ],
  ])('refuses %s', async (_name, make, message) => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Root' });
    const { chain, at, trusted } = await make(root);
    await expect(verifyX509popChain(chain, [(trusted ?? root).certificate], at ?? TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message,
    });
  });

  it('refuses garbage and empty chains as invalid arguments', async () => {
    await expect(verifyX509popChain([new Uint8Array([1, 2, 3])], [], TEST_NOW)).rejects.toMatchObject({
      kind: 'invalid_argument',
      message: 'certificates.0: not a der x.509 certificate',
    });
    await expect(verifyX509popChain([], [], TEST_NOW)).rejects.toMatchObject({
      message: 'certificates: must hold 1 to 8 certificates',
    });
  });
});

type KeyPair = Awaited<ReturnType<typeof generateTestKeys>>;

/** RSA keys of any modulus WebCrypto makes (its exponents stay below 2^31: the fixture above covers larger ones). */
const rsaKeys = (modulusLength: number, exponent: number[]) => (): Promise<KeyPair> =>
  webcrypto.subtle.generateKey(
    { name: 'RSASSA-PKCS1-v1_5', modulusLength, publicExponent: new Uint8Array(exponent), hash: 'SHA-256' },
    true,
    ['sign', 'verify'],
  ) as Promise<KeyPair>;

/**
 * A certificate an attacker makes without the CA's key: any names, signed by a key of its own, optionally without
 * key identifiers (so nothing but a signature check tells it from the real issuer) and padded with DNS names.
 */
async function forge(params: {
  subject: string;
  issuer: string;
  isCa: boolean;
  keys: KeyPair;
  signer: KeyPair;
  keyIdentifiers: boolean;
  padNames?: number;
}): Promise<Uint8Array> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(params.isCa, undefined, true),
    new x509.KeyUsagesExtension(params.isCa ? KeyUsage.keyCertSign : KeyUsage.digitalSignature, true),
  ];
  if (params.keyIdentifiers) {
    extensions.push(await x509.SubjectKeyIdentifierExtension.create(params.keys.publicKey));
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create(params.signer.publicKey));
  }
  if (params.padNames) {
    const names = Array.from({ length: params.padNames }, (_, i) => ({ type: 'dns' as const, value: `n${i}.example` }));
    extensions.push(new x509.SubjectAlternativeNameExtension(names));
  }
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: params.subject,
    issuer: params.issuer,
    notBefore: new Date(TEST_NOW.getTime() - 3600_000),
    notAfter: new Date(TEST_NOW.getTime() + 3600_000),
    publicKey: params.keys.publicKey,
    signingKey: params.signer.privateKey,
    signingAlgorithm:
      params.signer.privateKey.algorithm.name === 'ECDSA'
        ? { name: 'ECDSA', hash: 'SHA-256' }
        : { name: params.signer.privateKey.algorithm.name },
    extensions,
  });
  return new Uint8Array(certificate.rawData);
}

/**
 * A forged chain of 8 certificates all named like `rootName`: the leaf signed by the first intermediate's key,
 * each intermediate by the next one's, listed in reverse so that finding each issuer tries every candidate.
 */
async function forgedChain(rootName: string, keyIdentifiers: boolean, padNames = 0): Promise<Uint8Array[]> {
  const keys = await Promise.all(Array.from({ length: 8 }, () => generateTestKeys()));
  const base = { issuer: rootName, keyIdentifiers, padNames };
  const leaf = await forge({ ...base, subject: 'CN=forged node', isCa: false, keys: keys[0]!, signer: keys[1]! });
  const intermediates: Uint8Array[] = [];
  for (let index = 1; index < 8; index++) {
    const signer = keys[Math.min(index + 1, 7)]!;
    intermediates.push(await forge({ ...base, subject: rootName, isCa: true, keys: keys[index]!, signer }));
  }
  return [leaf, ...intermediates.reverse()];
}

describe('verifyX509popChain against forged chains (unauthenticated callers)', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('refuses a chain over the byte limit before parsing it', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Root' });
    const chain = await forgedChain(root.certificate.subject, true, 300);
    const bytes = chain.reduce((sum, der) => sum + der.length, 0);
    expect(bytes).toBeGreaterThan(X509POP_MAX_CHAIN_BYTES);
    await expect(verifyX509popChain(chain, [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'invalid_argument',
      message: `certificates: ${bytes} bytes of der in all, more than the 32768-byte limit`,
    });
  });

  it('checks no signature when the key identifiers show that a candidate did not issue the certificate', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Root' });
    const rootName = root.certificate.subject;
    const checks = vi.spyOn(X509Certificate.prototype, 'verify');
    // A leaf named as issued by the root, but whose authority key identifier is the attacker's key: no check at all.
    const attacker = await generateTestKeys();
    const keys = await generateTestKeys();
    const leaf = await forge({
      subject: 'CN=forged node',
      issuer: rootName,
      isCa: false,
      keys,
      signer: attacker,
      keyIdentifiers: true,
    });
    await expect(verifyX509popChain([leaf], [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message: 'x509pop: certificate chain does not lead to a trusted ca (no issuer found for "CN=forged node")',
    });
    expect(checks).not.toHaveBeenCalled();
    // 8 certificates named like the root, each with the key identifiers of its real signer: one check per step,
    // none against the root or the other same-named candidates.
    const chain = await forgedChain(rootName, true);
    await expect(verifyX509popChain(chain, [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message: 'x509pop: certificate chain does not lead to a trusted ca (no issuer found for "CN=Root")',
    });
    expect(checks).toHaveBeenCalledTimes(7);
  });

  it('stops after a bounded number of signature checks when names match and nothing else tells issuers apart', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Root' });
    const chain = await forgedChain(root.certificate.subject, false);
    const checks = vi.spyOn(X509Certificate.prototype, 'verify');
    await expect(verifyX509popChain(chain, [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message: `x509pop: certificate chain needs more than ${X509POP_MAX_SIGNATURE_CHECKS} signature checks (too many candidate issuers named like "CN=Root")`,
    });
    expect(checks).toHaveBeenCalledTimes(X509POP_MAX_SIGNATURE_CHECKS);
  });

  it('checks no signature with a caller key of unbounded cost (review: RSA-3072 with a 3,070-bit exponent)', async () => {
    // Made by testdata/x509pop-forged-chain.py: a leaf and 7 intermediates all named "forged-intermediate", each
    // intermediate an RSA-3072 key with a ~3,070-bit public exponent (~86 ms per chain at 16 checks before the fix).
    const fixture = JSON.parse(
      readFileSync(new URL('./testdata/x509pop-huge-exponent-chain.json', import.meta.url), 'utf8'),
    ) as { certificates: string[] };
    const chain = fixture.certificates.map((b64) => new Uint8Array(Buffer.from(b64, 'base64')));
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const checks = vi.spyOn(X509Certificate.prototype, 'verify');
    await expect(verifyX509popChain(chain, [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message: expect.stringMatching(
        /^x509pop: candidate issuer "CN=forged-intermediate" holds an unsupported rsa key with a 30\d\d-bit public exponent \(accepted: below 2\^31, e\.g\. 65537\)$/,
      ),
    });
    expect(checks).not.toHaveBeenCalled();
  });

  it.each<[string, () => Promise<KeyPair>, string]>([
    ['RSA-1024', rsaKeys(1024, [1, 0, 1]), 'rsa key of 1024 bits (accepted: 2048 to 4096)'],
    [
      'P-521',
      () => generateTestKeys('P-521' as Parameters<typeof generateTestKeys>[0]),
      'ec key on curve secp521r1 (accepted: P-256, P-384)',
    ],
  ])('refuses a candidate issuer holding %s before any signature check', async (_, issuerKeys, refusal) => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW, subject: 'CN=Root' });
    const issuer = await issuerKeys();
    const base = { issuer: 'CN=Forged CA', keyIdentifiers: false };
    const leaf = await forge({ ...base, subject: 'CN=n', isCa: false, keys: await generateTestKeys(), signer: issuer });
    const ca = await forge({ ...base, subject: 'CN=Forged CA', isCa: true, keys: issuer, signer: issuer });
    const checks = vi.spyOn(X509Certificate.prototype, 'verify');
    await expect(verifyX509popChain([leaf, ca], [root.certificate], TEST_NOW)).rejects.toMatchObject({
      kind: 'permission_denied',
      message: `x509pop: candidate issuer "CN=Forged CA" holds an unsupported ${refusal}`,
    });
    expect(checks).not.toHaveBeenCalled();
  });

  it('a real chain costs one signature check per certificate', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const leaf = await node(await (await root.createIntermediate()).createIntermediate());
    const checks = vi.spyOn(X509Certificate.prototype, 'verify');
    await verifyX509popChain(der(leaf), [root.certificate], TEST_NOW);
    expect(checks).toHaveBeenCalledTimes(3);
  });
});

describe('isPossessionProven', () => {
  it.each(['P-256', 'RSA-2048'] as const)('accepts a %s signature of the nonce by the leaf key only', async (alg) => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const leaf = await node(root, { keyAlgorithm: alg });
    const evidence = await verifyX509popChain(der(leaf), [root.certificate], TEST_NOW);
    const nonce = webcrypto.getRandomValues(new Uint8Array(32));
    const signature = sign('sha256', nonce, await privateKeyOf(leaf));
    expect(isPossessionProven(evidence.publicKey, nonce, signature)).toBe(true);
    expect(isPossessionProven(evidence.publicKey, new Uint8Array(32), signature)).toBe(false);
    const other = sign('sha256', nonce, await privateKeyOf(await node(root, { keyAlgorithm: alg })));
    expect(isPossessionProven(evidence.publicKey, nonce, other)).toBe(false);
    expect(isPossessionProven(evidence.publicKey, nonce, new Uint8Array([0x30, 0x00]))).toBe(false);
  });
});

describe('parseX509popCaBundle', () => {
  it('needs at least one certificate, each a CA', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    expect(parseX509popCaBundle(root.certificate.toString('pem'), 'ca.pem')).toHaveLength(1);
    expect(() => parseX509popCaBundle('nothing here', 'ca.pem')).toThrow(
      'x509pop ca bundle ca.pem: holds no PEM certificate',
    );
    const leaf = await node(root);
    expect(() => parseX509popCaBundle(leaf.certificate.toString('pem'), 'ca.pem')).toThrow(
      'x509pop ca bundle ca.pem: certificate 0 is not a ca',
    );
  });
});

describe('X509popCheckedPaths', () => {
  const HOUR_MS = 3_600_000;

  it('checks the fields of a path once while it is valid, again (and refuses it) once a certificate has expired', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const leaf = await node(root);
    const checked = new X509popCheckedPaths();
    const first = await verifyX509popChain(der(leaf), [root.certificate], TEST_NOW, checked);
    expect(first.fingerprint).toBe(sha1(leaf.certificate.rawData));
    // The same evidence, not checked again: a caller repeating a certificate costs a hash of what it sent.
    const later = new Date(TEST_NOW.getTime() + HOUR_MS / 2);
    expect(await verifyX509popChain(der(leaf), [root.certificate], later, checked)).toBe(first);
    expect(checked.size).toBe(1);
    // The leaf is valid for an hour: past it, the remembered path is checked again and refused.
    await expect(
      verifyX509popChain(der(leaf), [root.certificate], new Date(TEST_NOW.getTime() + 2 * HOUR_MS), checked),
    ).rejects.toMatchObject({
      kind: 'permission_denied',
      message: `x509pop: leaf certificate expired at ${new Date(TEST_NOW.getTime() + HOUR_MS).toISOString()}`,
    });
    // A chain to another CA is still refused by the walk, whatever is remembered.
    const stranger = await node(await TestCa.create('x.test', { now: TEST_NOW, subject: 'CN=Other' }));
    await expect(verifyX509popChain(der(stranger), [root.certificate], TEST_NOW, checked)).rejects.toMatchObject({
      kind: 'permission_denied',
    });
  });

  it('remembers a chain as presented, for the roots it was checked against: the same bytes skip the walk, another presentation of the path only the full checks', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const leaf = await node(root);
    const other = await node(root, { subject: 'CN=other-node' });
    const checked = new X509popCheckedPaths();
    const first = await verifyX509popChain(der(leaf), [root.certificate], TEST_NOW, checked);
    expect([checked.presentedSize, checked.size]).toEqual([1, 1]);
    // The leaf with a certificate that is not on its path, or twice: accepted (the same path), walked every time,
    // never remembered as presented (padding public certificates would otherwise push real nodes' chains out).
    const padded = [...der(leaf), new Uint8Array(other.certificate.rawData)];
    const repeated = [...der(leaf), ...der(leaf)];
    for (let i = 0; i < 3; i++) {
      expect(await verifyX509popChain(padded, [root.certificate], TEST_NOW, checked)).toBe(first);
      expect(await verifyX509popChain(repeated, [root.certificate], TEST_NOW, checked)).toBe(first);
    }
    expect([checked.presentedSize, checked.size]).toEqual([1, 1]);
    // The path itself with its root: another exact presentation, remembered.
    const withRoot = [...der(leaf), new Uint8Array(root.certificate.rawData)];
    expect(await verifyX509popChain(withRoot, [root.certificate], TEST_NOW, checked)).toBe(first);
    expect([checked.presentedSize, checked.size]).toEqual([2, 1]);
    // The same bytes against other roots are not taken from what was remembered for these: walked, and refused.
    const stranger = await TestCa.create('x.test', { now: TEST_NOW, subject: 'CN=Other' });
    await expect(verifyX509popChain(der(leaf), [stranger.certificate], TEST_NOW, checked)).rejects.toMatchObject({
      kind: 'permission_denied',
    });
    // A certificate that does not parse is refused as such, before anything is remembered.
    await expect(
      verifyX509popChain([new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])], [root.certificate], TEST_NOW, checked),
    ).rejects.toMatchObject({ kind: 'invalid_argument' });
    expect([checked.presentedSize, checked.size]).toEqual([2, 1]);
  });

  it('remembers at most its capacity, the least recently used forgotten first', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const leaves = await Promise.all([1, 2, 3].map((index) => node(root, { subject: `CN=node-${index}` })));
    const checked = new X509popCheckedPaths(2);
    const verify = (leaf: TestSvid) => verifyX509popChain(der(leaf), [root.certificate], TEST_NOW, checked);
    const [one, two, three] = leaves as [TestSvid, TestSvid, TestSvid];
    const first = await verify(one);
    await verify(two);
    expect(await verify(one)).toBe(first);
    await verify(three);
    expect(checked.size).toBe(2);
    // `two` was the least recently used: checked again (a new evidence), `one` still remembered.
    expect(await verify(one)).toBe(first);
    const again = await verify(two);
    expect(again.fingerprint).toBe(sha1(two.certificate.rawData));
    expect(checked.size).toBe(2);
  });
});
