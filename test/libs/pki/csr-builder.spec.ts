import { generateKeyPairSync, KeyObject, webcrypto } from 'node:crypto';
import { SpiffeId } from '@sigil/spiffe';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { opensslRequest } from '../../support/openssl.js';
import { createCsrReference, parseCsrReference } from '../../support/pki-reference/csr.js';
import { createCsr, createCsrFast, type CreateCsrFastParams } from '../../../libs/pki/src/csr-builder.js';
import { parseCsrFast } from '../../../libs/pki/src/csr-parser.js';
import { derBytes, DerCursor, type DerContext } from '../../../libs/pki/src/der-reader.js';
import { DerTag } from '../../../libs/pki/src/der-tags.js';
import { PkiError } from '../../../libs/pki/src/errors.js';
import { generateKeyPair, type KeyType } from '../../../libs/pki/src/keys.js';
import { toPem } from '../../../libs/pki/src/pem.js';
import { x509 } from '../../../libs/pki/src/x509-lib.js';

interface TestKey {
  readonly pair: webcrypto.CryptoKeyPair;
  readonly spki: Buffer;
}

const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];
const keys = new Map<KeyType, TestKey>();

beforeAll(async () => {
  for (const keyType of KEY_TYPES) {
    const pair = await generateKeyPair(keyType);
    keys.set(keyType, { pair, spki: Buffer.from(await webcrypto.subtle.exportKey('spki', pair.publicKey)) });
  }
});

function key(keyType: KeyType): TestKey {
  return keys.get(keyType) as TestKey;
}

const READ: DerContext = { name: 'test csr', code: 'ERR_DER_INVALID' };

/** The CertificationRequestInfo TLV of a request. */
function requestInfo(der: Uint8Array): Buffer {
  const top = DerCursor.over(der, READ);
  const request = top.enter(top.expect(DerTag.SEQUENCE, 'request'), 'request');
  return Buffer.from(derBytes(der, request.expect(DerTag.SEQUENCE, 'info')));
}

const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/).filter((s) => s !== '.' && s !== '..');
const spiffeIds = fc
  .tuple(fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,10}(\.[a-z0-9]{1,8}){0,2}$/), fc.array(segment, { maxLength: 4 }))
  .map(([trustDomain, path]) => `spiffe://${trustDomain}${path.map((part) => `/${part}`).join('')}`);
const dnsLabel = fc.stringMatching(/^[a-z]([a-z0-9-]{0,10}[a-z0-9])?$/);
const dnsNameLists = fc.uniqueArray(
  fc.array(dnsLabel, { minLength: 1, maxLength: 3 }).map((labels) => labels.join('.')),
  { maxLength: 3 },
);

describe('createCsrFast', () => {
  it.each(KEY_TYPES)(
    'builds %s requests that @peculiar/x509, parseCsrFast and the reference parser all verify',
    async (keyType) => {
      const { pair, spki } = key(keyType);
      await fc.assert(
        fc.asyncProperty(fc.option(spiffeIds, { nil: undefined }), dnsNameLists, async (spiffeId, dnsNames) => {
          const der = createCsrFast({ privateKey: pair.privateKey, spkiDer: spki, spiffeId, dnsNames });
          const uris = spiffeId === undefined ? [] : [spiffeId];

          const peculiar = new x509.Pkcs10CertificateRequest(der);
          expect(await peculiar.verify()).toBe(true);
          expect(Buffer.from(peculiar.publicKey.rawData).equals(spki)).toBe(true);
          const sans = peculiar.getExtensions('2.5.29.17');
          const names = sans.flatMap((san) => new x509.SubjectAlternativeNameExtension(san.rawData).names.items);
          expect(names.filter((name) => name.type === 'url').map((name) => name.value)).toEqual(uris);
          expect(names.filter((name) => name.type === 'dns').map((name) => name.value)).toEqual(dnsNames);

          const fast = parseCsrFast(der);
          expect(fast.spkiDer.equals(spki)).toBe(true);
          expect(fast.uris).toEqual(uris);
          expect(fast.dnsNames).toEqual(dnsNames);

          const reference = await parseCsrReference(der);
          expect(Buffer.from(reference.spkiDer).equals(spki)).toBe(true);
          expect(reference.keyType).toBe(keyType);
          expect(reference.uris).toEqual(uris);
          expect(reference.dnsNames).toEqual(dnsNames);

          // @peculiar/x509 signs the same CertificationRequestInfo, and so does createCsr (the CryptoKeyPair entry
          // point); only the signature differs (ECDSA is randomised).
          const parsedId = spiffeId === undefined ? undefined : SpiffeId.parse(spiffeId);
          const expected = await createCsrReference({ keys: pair, spiffeId: parsedId, dnsNames });
          expect(requestInfo(der).toString('hex')).toBe(requestInfo(expected.der).toString('hex'));
          const created = await createCsr({ keys: pair, spiffeId: parsedId, dnsNames });
          expect(requestInfo(created.der).toString('hex')).toBe(requestInfo(expected.der).toString('hex'));
          expect(created.pem).toBe(toPem('CERTIFICATE REQUEST', created.der));
          // RSA PKCS#1 v1.5 signatures are deterministic: there the whole request is the same.
          if (keyType === 'rsa-2048') expect(Buffer.from(created.der).equals(Buffer.from(expected.der))).toBe(true);
        }),
        { numRuns: 15 },
      );
    },
  );

  it('takes a KeyObject private key and a parsed SpiffeId', () => {
    const { pair, spki } = key('ec-p256');
    const spiffeId = SpiffeId.parse('spiffe://example.org/workload');
    const der = createCsrFast({ privateKey: KeyObject.from(pair.privateKey), spkiDer: spki, spiffeId });
    expect(parseCsrFast(der).uris).toEqual(['spiffe://example.org/workload']);
  });

  it('writes a request that openssl req -verify accepts', async () => {
    const { pair, spki } = key('ec-p256');
    const der = createCsrFast({
      privateKey: pair.privateKey,
      spkiDer: spki,
      spiffeId: 'spiffe://example.org/ns/prod/sa/web',
      dnsNames: ['web.example.org', '*.example.com'],
    });
    const result = await opensslRequest(der);
    expect(result.verified).toBe(true);
    expect(result.text).toContain('URI:spiffe://example.org/ns/prod/sa/web');
    expect(result.text).toContain('DNS:web.example.org, DNS:*.example.com');
  });

  it('makes a request whose signature does not verify when the private key is not the one of spkiDer', async () => {
    const other = await generateKeyPair('ec-p256');
    const der = createCsrFast({ privateKey: other.privateKey, spkiDer: key('ec-p256').spki });
    expect(() => parseCsrFast(der)).toThrow('csr: signature does not verify with the request public key');
  });

  const ed25519 = generateKeyPairSync('ed25519');
  const rsa1024 = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const cases: ReadonlyArray<[string, () => unknown, string, string]> = [
    ['a missing params object', () => undefined, 'ERR_PKI_INVALID_INPUT', 'params: must be an object'],
    [
      'a public key',
      () => ({ privateKey: key('ec-p256').pair.publicKey, spkiDer: key('ec-p256').spki }),
      'ERR_KEY_INVALID',
      'privateKey: must be a private key, got public',
    ],
    [
      'something else than a key',
      () => ({ privateKey: 'key', spkiDer: key('ec-p256').spki }),
      'ERR_KEY_INVALID',
      'privateKey: must be a CryptoKey or a KeyObject',
    ],
    [
      'an ed25519 key',
      () => ({ privateKey: ed25519.privateKey, spkiDer: key('ec-p256').spki }),
      'ERR_KEY_INVALID',
      'privateKey: must be ec P-256, ec P-384 or rsa 2048',
    ],
    [
      'an rsa 1024 key',
      () => ({ privateKey: rsa1024.privateKey, spkiDer: key('rsa-2048').spki }),
      'ERR_KEY_INVALID',
      'privateKey: must be ec P-256, ec P-384 or rsa 2048',
    ],
    [
      'an spkiDer that is not bytes',
      () => ({ privateKey: key('ec-p256').pair.privateKey, spkiDer: 'spki' }),
      'ERR_KEY_INVALID',
      'spkiDer: must be der bytes',
    ],
    [
      'an spkiDer of an unsupported key',
      () => ({
        privateKey: key('ec-p256').pair.privateKey,
        spkiDer: ed25519.publicKey.export({ format: 'der', type: 'spki' }),
      }),
      'ERR_KEY_INVALID',
      'spkiDer: unsupported key algorithm ed25519, expected ec P-256, ec P-384 or rsa 2048',
    ],
    [
      'a P-384 private key with a P-256 spkiDer',
      () => ({ privateKey: key('ec-p384').pair.privateKey, spkiDer: key('ec-p256').spki }),
      'ERR_KEY_INVALID',
      'privateKey: is ec-p384 but spkiDer is ec-p256, they must be the same key type',
    ],
    [
      'a spiffeId string that is not a SPIFFE ID',
      () => ({ privateKey: key('ec-p256').pair.privateKey, spkiDer: key('ec-p256').spki, spiffeId: 'https://x' }),
      'ERR_PKI_INVALID_INPUT',
      'spiffeId: invalid spiffe id "https://x": scheme must be "spiffe"',
    ],
    [
      'a spiffeId of another type',
      () => ({ privateKey: key('ec-p256').pair.privateKey, spkiDer: key('ec-p256').spki, spiffeId: 42 }),
      'ERR_PKI_INVALID_INPUT',
      'spiffeId: must be a SpiffeId or a string',
    ],
    [
      'a bad DNS name',
      () => ({ privateKey: key('ec-p256').pair.privateKey, spkiDer: key('ec-p256').spki, dnsNames: ['a..b'] }),
      'ERR_PKI_INVALID_INPUT',
      'dnsNames[0]: "a..b" has an empty label',
    ],
  ];
  it.each(cases)('refuses %s', (_name, params, code, message) => {
    let thrown: unknown;
    try {
      createCsrFast(params() as CreateCsrFastParams);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(PkiError);
    expect((thrown as PkiError).code).toBe(code);
    expect((thrown as PkiError).message).toBe(message);
  });
});
