import { X509Certificate, type webcrypto } from 'node:crypto';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { createRootCa } from './ca.js';
import { createCsr } from './csr-builder.js';
import { signCsrs, SpiffeIdCache, type CsrSigningOutcome, type CsrToSign } from './csr-signing.js';
import { exportPublicKeySpki, generateKeyPair } from './keys.js';
import { CsrSigningPool } from './signing-pool.js';
import { X509SvidSigner } from './svid-signer.js';

// The pool runs the built worker (dist/signing-worker.js): `npm run build` first, as CI does through `npm ci`.
const TRUST_DOMAIN = TrustDomain.parse('example.org');
const NOW = new Date(Date.UTC(2026, 0, 1));

async function newCa(): Promise<{
  id: string;
  certificateDer: Uint8Array;
  privateKey: webcrypto.CryptoKey;
  cert: X509Certificate;
}> {
  const ca = await createRootCa({
    trustDomain: TRUST_DOMAIN,
    keys: await generateKeyPair(),
    ttlSeconds: 86_400,
    now: NOW,
  });
  return {
    id: crypto.randomUUID(),
    certificateDer: ca.der,
    privateKey: ca.privateKey,
    cert: new X509Certificate(ca.der),
  };
}

async function csrItem(path: string, requested?: string): Promise<{ item: CsrToSign; spki: Buffer }> {
  const keys = await generateKeyPair();
  const id = `spiffe://example.org/${path}`;
  const { pem } = await createCsr({ keys, spiffeId: SpiffeId.parse(requested ?? id) });
  return {
    item: {
      csr: pem,
      entrySpiffeId: id,
      entrySpiffeIdCanonical: true,
      spiffeId: id,
      dnsNames: ['web.example.org'],
      ttlSeconds: 600,
      field: `csrs.${path}.csr`,
    },
    spki: Buffer.from(exportPublicKeySpki(keys.publicKey)),
  };
}

const pemBody = (pem: string): string => pem.replace(/-----[^-]+-----|\s/g, '');

function expectLeaf(outcome: CsrSigningOutcome | undefined, ca: X509Certificate, spki: Buffer, id: string): void {
  expect(outcome?.ok).toBe(true);
  const leaf = new X509Certificate((outcome as { leafDer: Uint8Array }).leafDer);
  expect(leaf.checkIssued(ca) && leaf.verify(ca.publicKey)).toBe(true);
  expect(leaf.subjectAltName).toBe(`URI:${id}, DNS:web.example.org`);
  expect(leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(spki)).toBe(true);
}

describe('CsrSigningPool', () => {
  let pool: CsrSigningPool | undefined;
  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  it('signs on worker threads what the event loop signs, and refuses the same CSRs with the same messages', async () => {
    const ca = await newCa();
    const good = await Promise.all([csrItem('a'), csrItem('b'), csrItem('c')]);
    const otherId = await csrItem('d', 'spiffe://example.org/someone-else');
    // Its signature's last byte flipped: the CSR no longer verifies.
    const tampered = Buffer.from(pemBody(good[0]!.item.csr as string), 'base64');
    tampered[tampered.length - 1] ^= 0x01;
    const corrupt = { ...good[0]!.item, field: 'csrs.e.csr', csr: new Uint8Array(tampered) };
    const items = [...good.map((csr) => csr.item), otherId.item, corrupt];
    pool = new CsrSigningPool(2);
    const [onWorkers, onLoop] = await Promise.all([
      pool.sign(ca, NOW, items),
      signCsrs(
        X509SvidSigner.create({ certificate: ca.certificateDer, privateKey: ca.privateKey }),
        NOW,
        items,
        new SpiffeIdCache(),
      ),
    ]);
    expect(pool.running).toBe(1);
    good.forEach((csr, index) => expectLeaf(onWorkers[index], ca.cert, csr.spki, csr.item.spiffeId));
    const refusals = [
      {
        ok: false,
        message:
          'csrs.d.csr: uri san "spiffe://example.org/someone-else" does not match the spiffe id spiffe://example.org/d',
      },
      { ok: false, message: 'csrs.e.csr: csr: signature does not verify with the request public key' },
    ];
    expect(onWorkers.slice(3)).toEqual(refusals);
    expect(onLoop.slice(3)).toEqual(onWorkers.slice(3));
    good.forEach((csr, index) => expectLeaf(onLoop[index], ca.cert, csr.spki, csr.item.spiffeId));
  });

  it('signs each chunk with the key it names: the chunk right after a rotation chains to the new CA, on every worker', async () => {
    const [first, second] = [await newCa(), await newCa()];
    const csr = await csrItem('rotated');
    pool = new CsrSigningPool(2);
    // Both workers busy with the first key, so both hold it.
    const before = await Promise.all([pool.sign(first, NOW, [csr.item]), pool.sign(first, NOW, [csr.item])]);
    expect(pool.running).toBe(2);
    for (const [outcome] of before) expectLeaf(outcome, first.cert, csr.spki, csr.item.spiffeId);
    const after = await Promise.all([pool.sign(second, NOW, [csr.item]), pool.sign(second, NOW, [csr.item])]);
    for (const [outcome] of after) {
      expectLeaf(outcome, second.cert, csr.spki, csr.item.spiffeId);
      expect(new X509Certificate((outcome as { leafDer: Uint8Array }).leafDer).checkIssued(first.cert)).toBe(false);
    }
    // And back (a key named again is handed over again).
    const [[back]] = await Promise.all([pool.sign(first, NOW, [csr.item])]);
    expectLeaf(back, first.cert, csr.spki, csr.item.spiffeId);
  });

  it('refuses a CA key that is not the certificate’s, and signs nothing once closed', async () => {
    const [ca, other] = [await newCa(), await newCa()];
    const csr = await csrItem('x');
    pool = new CsrSigningPool(1);
    await expect(pool.sign({ ...ca, privateKey: other.privateKey }, NOW, [csr.item])).rejects.toThrow(
      /^signing worker: no usable key .*: ca\.privateKey: does not match the public key of ca\.certificate$/,
    );
    // A certificate that is no signing CA is refused as the worker refused it, now that the pool reads it.
    const [[leaf]] = await Promise.all([pool.sign({ ...ca, id: 'good' }, NOW, [csr.item])]);
    const leafDer = (leaf as { leafDer: Uint8Array }).leafDer;
    await expect(pool.sign({ ...ca, id: 'leaf', certificateDer: leafDer }, NOW, [csr.item])).rejects.toThrow(
      /^signing worker: no usable key leaf: ca\.certificate: basicConstraints must have cA=true$/,
    );
    await pool.close();
    await expect(pool.sign(ca, NOW, [csr.item])).rejects.toThrow('signing pool: closed');
    expect(() => new CsrSigningPool(0)).toThrow('signing pool: size must be at least 1, got 0');
  });

  it('keeps the CA trust domain on the workers: a leaf outside it is refused there as on the event loop', async () => {
    const ca = await newCa();
    const outside = await csrItem('elsewhere');
    const item = {
      ...outside.item,
      entrySpiffeId: 'spiffe://other.org/elsewhere',
      spiffeId: 'spiffe://other.org/elsewhere',
    };
    const requested = await csrItem('x', 'spiffe://other.org/elsewhere');
    const items = [{ ...item, csr: requested.item.csr }];
    const signer = X509SvidSigner.create({ certificate: ca.certificateDer, privateKey: ca.privateKey });
    const onLoop = await signCsrs(signer, NOW, items, new SpiffeIdCache());
    pool = new CsrSigningPool(1);
    const onWorker = await pool.sign(ca, NOW, items);
    expect(onLoop[0]).toMatchObject({ ok: false, message: expect.stringContaining("is not in the ca's trust domain") });
    expect(onWorker).toEqual(onLoop);
  });

  it('starts workers that load no @peculiar/x509 (it was most of a worker’s start: ~0.18 s of CPU)', async () => {
    const workerScript = new URL('../dist/signing-worker.js', import.meta.url).href;
    const probe = new Worker(
      `const { parentPort } = require('node:worker_threads');
       import(${JSON.stringify(workerScript)}).then(() => parentPort.postMessage(
         Object.keys(require('node:module')._cache).filter((path) => path.includes('@peculiar'))));`,
      { eval: true },
    );
    try {
      const loaded = await new Promise((resolve, reject) => {
        probe.once('message', resolve);
        probe.once('error', reject);
      });
      expect(loaded).toEqual([]);
    } finally {
      await probe.terminate();
    }
  });
});
