import { createHash, createPrivateKey, sign, webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyUsage, TEST_NOW, TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import { isPossessionProven, parseX509popCaBundle, verifyX509popChain } from './x509pop.js';

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
