import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type EcImportPath, ecImportPathFor, importSpkiFast, importSpkiFastAsync } from './spki.js';

const PATHS: readonly EcImportPath[] = ['parts', 'der'];

function spkiOf(type: 'P-256' | 'P-384' | 'RSA-2048'): Buffer {
  const { publicKey } =
    type === 'RSA-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: type });
  return publicKey.export({ format: 'der', type: 'spki' });
}

const SPKIS = new Map((['P-256', 'P-384', 'RSA-2048'] as const).map((type) => [type, spkiOf(type)]));

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
  it.each([...SPKIS.keys()])('import the %s key OpenSSL reads from the same DER', async (type) => {
    const spki = SPKIS.get(type)!;
    const expected = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    const sync = importSpkiFast(spki, 'key', 'ERR_KEY_INVALID', path);
    const async = await importSpkiFastAsync(spki, 'key', 'ERR_KEY_INVALID', path);
    for (const imported of [sync, async]) {
      expect(imported.keyType).toBe({ 'P-256': 'ec-p256', 'P-384': 'ec-p384', 'RSA-2048': 'rsa-2048' }[type]);
      expect(imported.keyObject.type).toBe('public');
      expect(imported.keyObject.equals(expected)).toBe(true);
    }
  });

  it.each(['P-256', 'P-384'] as const)('refuse a %s point off the curve, naming the field', async (type) => {
    const offCurve = Buffer.from(SPKIS.get(type)!);
    offCurve[offCurve.length - 1]! ^= 0x01;
    const error = { code: 'ERR_CSR_INVALID', message: 'csr public key: not a valid public key' };
    expect(() => importSpkiFast(offCurve, 'csr public key', 'ERR_CSR_INVALID', path)).toThrow(
      expect.objectContaining(error),
    );
    await expect(importSpkiFastAsync(offCurve, 'csr public key', 'ERR_CSR_INVALID', path)).rejects.toMatchObject(error);
  });

  it('refuses a key that is not canonical before importing it', async () => {
    // A trailing byte after the point: classifySpki refuses the layout before either import runs.
    const padded = Buffer.concat([SPKIS.get('P-256')!, Buffer.from([0])]);
    expect(() => importSpkiFast(padded, 'key', 'ERR_KEY_INVALID', path)).toThrow(/^key: /);
    await expect(importSpkiFastAsync(padded, 'key', 'ERR_KEY_INVALID', path)).rejects.toThrow(/^key: /);
  });
});
