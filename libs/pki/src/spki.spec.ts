import { type KeyObject, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type EcImportPath, ecImportPathFor, importSpkiFast, importSpkiFastAsync } from './spki.js';

const PATHS: readonly EcImportPath[] = ['parts', 'der'];
type KeyName = 'P-256' | 'P-384' | 'RSA-2048';

function keyOf(name: KeyName): { publicKey: KeyObject; spki: Buffer } {
  const { publicKey } =
    name === 'RSA-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: name });
  return { publicKey, spki: publicKey.export({ format: 'der', type: 'spki' }) };
}

const KEYS = new Map((['P-256', 'P-384', 'RSA-2048'] as const).map((name) => [name, keyOf(name)]));

/** The curves' field primes and `b` (SEC 2 §2.4.2, §2.5.1; a = -3), and the SPKI prefix up to the point. */
const CURVES = {
  'P-256': {
    p: 2n ** 256n - 2n ** 224n + 2n ** 192n + 2n ** 96n - 1n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    size: 32,
    prefix: '3059301306072a8648ce3d020106082a8648ce3d03010703420004',
  },
  'P-384': {
    p: 2n ** 384n - 2n ** 128n - 2n ** 96n + 2n ** 32n - 1n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    size: 48,
    prefix: '3076301006072a8648ce3d020106052b8104002203620004',
  },
} as const;

function power(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  for (let b = base % modulus, e = exponent; e > 0n; e >>= 1n, b = (b * b) % modulus) {
    if (e & 1n) result = (result * b) % modulus;
  }
  return result;
}

/**
 * The SPKI of a point on `curve` with its x coordinate written as x + p (still `size` bytes: p is within 2^224 of
 * 2^256, 2^129 of 2^384): the same point modulo p, but not a valid encoding (SEC 1 §2.3.4 wants x < p). Both primes are
 * 3 mod 4, so y = r^((p+1)/4) for the smallest x whose r = x^3 - 3x + b is a square.
 */
function spkiWithXAbovePrime(curve: keyof typeof CURVES): { valid: Buffer; aboveP: Buffer } {
  const { p, b, size, prefix } = CURVES[curve];
  for (let x = 1n; ; x++) {
    const r = (((x * x * x - 3n * x + b) % p) + p) % p;
    const y = power(r, (p + 1n) / 4n, p);
    if ((y * y) % p !== r) continue;
    const hex = (n: bigint) => n.toString(16).padStart(size * 2, '0');
    return {
      valid: Buffer.from(prefix + hex(x) + hex(y), 'hex'),
      aboveP: Buffer.from(prefix + hex(x + p) + hex(y), 'hex'),
    };
  }
}

describe('ecImportPathFor', () => {
  it.each([
    ['3.0.19', 'parts'],
    ['3.0.15+quic', 'parts'],
    ['3.4.1', 'parts'],
    ['3.5.9', 'der'],
    ['3.10.0', 'der'],
    ['4.0.0', 'der'],
    ['1.1.1w', 'parts'],
    ['', 'parts'],
    ['not a version', 'parts'],
  ])('OpenSSL %j → %s', (version, path) => {
    expect(ecImportPathFor(version)).toBe(path);
  });
});

describe.each(PATHS)('importSpkiFast and importSpkiFastAsync, %s path', (path) => {
  it.each([...KEYS.keys()])('import the %s key that was generated', async (name) => {
    const { publicKey, spki } = KEYS.get(name)!;
    const sync = importSpkiFast(spki, 'key', 'ERR_KEY_INVALID', path);
    const async = await importSpkiFastAsync(spki, 'key', 'ERR_KEY_INVALID', path);
    for (const imported of [sync, async]) {
      expect(imported.keyType).toBe({ 'P-256': 'ec-p256', 'P-384': 'ec-p384', 'RSA-2048': 'rsa-2048' }[name]);
      expect(imported.keyObject.type).toBe('public');
      expect(imported.keyObject.equals(publicKey)).toBe(true);
    }
  });

  async function expectRefused(spki: Buffer, message: string): Promise<void> {
    const error = { code: 'ERR_CSR_INVALID', message };
    expect(() => importSpkiFast(spki, 'csr public key', 'ERR_CSR_INVALID', path)).toThrow(
      expect.objectContaining(error),
    );
    await expect(importSpkiFastAsync(spki, 'csr public key', 'ERR_CSR_INVALID', path)).rejects.toMatchObject(error);
  }

  it.each(['P-256', 'P-384'] as const)('refuse a %s point off the curve, naming the field', async (name) => {
    const offCurve = Buffer.from(KEYS.get(name)!.spki);
    offCurve[offCurve.length - 1]! ^= 0x01;
    await expectRefused(offCurve, 'csr public key: not a valid public key');
  });

  it.each(['P-256', 'P-384'] as const)('refuse a %s point whose x is written as x + p', async (name) => {
    const { valid, aboveP } = spkiWithXAbovePrime(name);
    // The same coordinates below p make a valid key: only the encoding is refused.
    expect(importSpkiFast(valid, 'csr public key', 'ERR_CSR_INVALID', path).keyObject.type).toBe('public');
    await expectRefused(aboveP, 'csr public key: not a valid public key');
  });

  it.each(['P-256', 'P-384'] as const)('refuse a %s key that is not canonical before importing it', async (name) => {
    // A trailing byte after the point: classifySpki refuses the layout before either import runs.
    const padded = Buffer.concat([KEYS.get(name)!.spki, Buffer.from([0])]);
    await expectRefused(
      padded,
      'csr public key: must be the canonical der of an ec P-256 (uncompressed point), ec P-384 or rsa 2048 public key',
    );
  });
});
