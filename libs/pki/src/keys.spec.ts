import {
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  generateKeyPairSync,
  sign,
  verify,
  webcrypto,
} from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  exportPrivateKeyPkcs8,
  exportPublicKeySpki,
  generateKeyPair,
  generateSigningKey,
  importPrivateKeyPkcs8,
  importPublicKeySpki,
  isKeyPairOf,
  keyTypeOf,
  signingAlgorithmFor,
  toKeyObject,
  type KeyType,
} from './keys.js';
import { ecKeyDerOf, privateKeyDerOf, spkiDerOf } from './spki.js';

const KEY_TYPES: KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];
const message = new TextEncoder().encode('sigil');

describe('key pairs', () => {
  it.each(KEY_TYPES)('%s: generates, signs, and round-trips PKCS#8 and SPKI', async (keyType) => {
    const keys = await generateKeyPair(keyType);
    expect(keyTypeOf(keys.privateKey)).toBe(keyType);
    expect(keyTypeOf(keys.publicKey)).toBe(keyType);
    expect(keys.privateKey.extractable).toBe(true);

    const pkcs8 = exportPrivateKeyPkcs8(keys.privateKey);
    const imported = await importPrivateKeyPkcs8(pkcs8);
    expect(keyTypeOf(imported)).toBe(keyType);
    expect(exportPrivateKeyPkcs8(imported)).toEqual(pkcs8);

    const spki = exportPublicKeySpki(keys.publicKey);
    const publicKey = await importPublicKeySpki(spki, keyType);
    expect(exportPublicKeySpki(publicKey)).toEqual(spki);
    expect(isKeyPairOf(imported, spki)).toBe(true);

    const algorithm = signingAlgorithmFor(keyType);
    const signature = await webcrypto.subtle.sign(algorithm, imported, message);
    expect(await webcrypto.subtle.verify(algorithm, publicKey, signature, message)).toBe(true);
  });

  it('defaults to EC P-256 (SPIRE default)', async () => {
    expect(keyTypeOf((await generateKeyPair()).privateKey)).toBe('ec-p256');
  });

  it.each([
    ['ec-p256', { name: 'ECDSA', hash: 'SHA-256' }],
    ['ec-p384', { name: 'ECDSA', hash: 'SHA-384' }],
    ['rsa-2048', { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }],
  ] as const)('signing algorithm of %s', (keyType, expected) => {
    expect(signingAlgorithmFor(keyType)).toEqual(expected);
  });

  it('converts to a Node KeyObject that crypto.sign can use, verifiable by WebCrypto', async () => {
    const keys = await generateKeyPair('ec-p256');
    const signature = sign('sha256', message, { key: toKeyObject(keys.privateKey), dsaEncoding: 'ieee-p1363' });
    expect(await webcrypto.subtle.verify(signingAlgorithmFor('ec-p256'), keys.publicKey, signature, message)).toBe(
      true,
    );
    expect(verify('sha256', message, { key: toKeyObject(keys.publicKey), dsaEncoding: 'ieee-p1363' }, signature)).toBe(
      true,
    );
  });

  it('detects a mismatched pair', async () => {
    const a = await generateKeyPair();
    const b = await generateKeyPair();
    expect(isKeyPairOf(a.privateKey, exportPublicKeySpki(b.publicKey))).toBe(false);
  });
});

describe('key errors', () => {
  it('refuses an unknown key type', async () => {
    await expect(generateKeyPair('ec-p521' as KeyType)).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: 'keyType: must be one of ec-p256, ec-p384, rsa-2048, got ec-p521',
    });
  });

  it('refuses PKCS#8 of another type than requested', async () => {
    const pkcs8 = exportPrivateKeyPkcs8((await generateKeyPair('ec-p384')).privateKey);
    await expect(importPrivateKeyPkcs8(pkcs8, 'ec-p256')).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: 'pkcs8: key is ec-p384, expected ec-p256',
    });
  });

  it('refuses garbage PKCS#8', async () => {
    await expect(importPrivateKeyPkcs8(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: expect.stringMatching(/^pkcs8: not a valid private key: /),
    });
  });

  it('refuses unsupported curves and algorithms', async () => {
    const p521 = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-521' }, true, ['sign', 'verify']);
    expect(() => keyTypeOf(p521.privateKey)).toThrow(
      'key: unsupported key algorithm ECDSA (P-521), expected ec P-256, ec P-384 or rsa 2048',
    );
    const p521Pkcs8 = exportPrivateKeyPkcs8(p521.privateKey);
    await expect(importPrivateKeyPkcs8(p521Pkcs8)).rejects.toThrow('pkcs8: unsupported ec curve secp521r1');
    const ed = createPrivateKey({
      key: Buffer.from('302e020100300506032b657004220420' + '11'.repeat(32), 'hex'),
      format: 'der',
      type: 'pkcs8',
    });
    await expect(importPrivateKeyPkcs8(new Uint8Array(ed.export({ format: 'der', type: 'pkcs8' })))).rejects.toThrow(
      'pkcs8: unsupported key algorithm ed25519, expected ec P-256, ec P-384 or rsa 2048',
    );
  });

  it('refuses a non-canonical SPKI (compressed EC point)', async () => {
    const keys = await generateKeyPair('ec-p256');
    const spki = exportPublicKeySpki(keys.publicKey);
    // Same key with the point compressed: 0x02/0x03 prefix + X, in a SubjectPublicKeyInfo of the right length.
    const x = spki.slice(spki.length - 64, spki.length - 32);
    const yOdd = spki[spki.length - 1]! & 1;
    const prefix = Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex');
    const compressedSpki = new Uint8Array(Buffer.concat([prefix, Buffer.from([0x02 | yOdd]), x]));
    await expect(importPublicKeySpki(compressedSpki)).rejects.toMatchObject({
      code: 'ERR_KEY_INVALID',
      message: 'spki: public key is not in canonical der form',
    });
  });

  it('refuses to export a non-extractable private key or a public key as private', async () => {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    expect(() => exportPrivateKeyPkcs8(keys.privateKey)).toThrow('privateKey: must be extractable to be exported');
    expect(() => exportPrivateKeyPkcs8(keys.publicKey)).toThrow('privateKey: must be a private key, got a public key');
  });
});

describe('generateSigningKey, spkiDerOf and privateKeyDerOf', () => {
  it.each(KEY_TYPES)(
    '%s: a key object whose SPKI and PKCS#8 are the bytes OpenSSL exports, and that signs',
    async (keyType) => {
      const rounds = keyType === 'rsa-2048' ? 3 : 200;
      for (let i = 0; i < rounds; i++) {
        const { privateKey, spkiDer, pkcs8Der } = await generateSigningKey(keyType);
        expect(privateKey.type).toBe('private');
        const exported = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
        expect(spkiDer.equals(exported)).toBe(true);
        expect(pkcs8Der.equals(privateKey.export({ format: 'der', type: 'pkcs8' }))).toBe(true);
        expect(spkiDerOf(createPublicKey(privateKey)).equals(exported)).toBe(true);
        const publicKey = await importPublicKeySpki(spkiDer, keyType);
        const signature = sign(keyType === 'ec-p384' ? 'sha384' : 'sha256', message, privateKey);
        expect(verify(keyType === 'ec-p384' ? 'sha384' : 'sha256', message, toKeyObject(publicKey), signature)).toBe(
          true,
        );
      }
    },
  );

  it('refuses an unknown key type and a secret key', async () => {
    await expect(generateSigningKey('ec-p521' as KeyType)).rejects.toThrow('keyType: must be one of');
    expect(() => spkiDerOf(createSecretKey(Buffer.alloc(32)))).toThrow('key: must be an asymmetric KeyObject');
  });

  it('leaves keys of other curves to OpenSSL', () => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp521r1' });
    expect(spkiDerOf(publicKey).equals(publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    const laidOut = privateKeyDerOf(privateKey);
    expect(laidOut.spkiDer.equals(publicKey.export({ format: 'der', type: 'spki' }))).toBe(true);
    expect(laidOut.pkcs8Der.equals(privateKey.export({ format: 'der', type: 'pkcs8' }))).toBe(true);
  });

  it('privateKeyDerOf refuses a public or secret key', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    expect(() => privateKeyDerOf(publicKey)).toThrow('key: must be a private KeyObject');
    expect(() => privateKeyDerOf(createSecretKey(Buffer.alloc(32)))).toThrow('key: must be a private KeyObject');
  });

  it('lays out no EC key whose JWK members are not exactly of the curve size (left to OpenSSL)', () => {
    for (const namedCurve of ['prime256v1', 'secp384r1']) {
      const jwk = generateKeyPairSync('ec', { namedCurve }).privateKey.export({ format: 'jwk' });
      expect(ecKeyDerOf(jwk)).toBeDefined();
      for (const member of ['d', 'x', 'y'] as const) {
        const value = jwk[member]!;
        expect(ecKeyDerOf({ ...jwk, [member]: undefined })).toBeUndefined();
        expect(ecKeyDerOf({ ...jwk, [member]: value.slice(1) })).toBeUndefined();
        expect(ecKeyDerOf({ ...jwk, [member]: `${value}A` })).toBeUndefined();
        // Right length, but a character base64url does not have: fewer bytes decode.
        expect(ecKeyDerOf({ ...jwk, [member]: `${value.slice(0, -2)}!!` })).toBeUndefined();
      }
      expect(ecKeyDerOf({ ...jwk, crv: 'P-521' })).toBeUndefined();
      expect(ecKeyDerOf({ ...jwk, kty: 'OKP' })).toBeUndefined();
    }
  });
});
