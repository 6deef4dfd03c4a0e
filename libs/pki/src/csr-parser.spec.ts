import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, KeyObject, sign, webcrypto, type KeyObject as NodeKeyObject } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { PkiError } from './errors.js';
import { toPem } from './pem.js';
import { x509 } from './x509-lib.js';
import { CSR_MAX_BYTES, parseCsrFast, parseCsrFastAsync } from './csr-parser.js';
import {
  derBitString,
  derContext,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derSmallInteger,
} from './der-writer.js';
import { readDerElement, type DerContext } from './der-reader.js';
import { ALGORITHM_IDENTIFIERS, Oid } from './oids.js';

type KeyName = 'P-256' | 'P-384' | 'RSA-2048';
interface TestKey {
  readonly name: KeyName;
  readonly pair: webcrypto.CryptoKeyPair;
  readonly privateKey: NodeKeyObject;
  readonly spki: Buffer;
}

const KEY_NAMES: readonly KeyName[] = ['P-256', 'P-384', 'RSA-2048'];
const keys = new Map<KeyName, TestKey>();
const samples = new Map<KeyName, Uint8Array>();

async function generate(name: KeyName): Promise<TestKey> {
  const params =
    name === 'RSA-2048'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : { name: 'ECDSA', namedCurve: name };
  const pair = (await webcrypto.subtle.generateKey(params, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', pair.publicKey));
  return { name, pair, privateKey: KeyObject.from(pair.privateKey), spki };
}

function signingAlgorithm(name: KeyName, sha384 = false): { name: string; hash: string } {
  if (name === 'RSA-2048') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return { name: 'ECDSA', hash: sha384 || name === 'P-384' ? 'SHA-384' : 'SHA-256' };
}

/** A CSR made by @peculiar/x509, the implementation the fast parser is held against. */
async function peculiarCsr(key: TestKey, uris: string[], dnsNames: string[], subject?: string): Promise<Uint8Array> {
  const names = [
    ...uris.map((value) => ({ type: 'url' as const, value })),
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
  ];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: key.pair,
    signingAlgorithm: signingAlgorithm(key.name),
    ...(subject === undefined ? {} : { name: subject }),
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return new Uint8Array(csr.rawData);
}

/** Whether @peculiar/x509 parses the input and verifies its signature. */
async function peculiarAccepts(input: string | Uint8Array): Promise<boolean> {
  try {
    return await new x509.Pkcs10CertificateRequest(input).verify();
  } catch {
    return false;
  }
}

/** Runs the fast parser: true when it accepts; any error must be a PkiError with one of the parser's codes. */
function fastAccepts(input: string | Uint8Array): boolean {
  try {
    parseCsrFast(input);
    return true;
  } catch (error) {
    if (!(error instanceof PkiError) || error.code !== 'ERR_CSR_INVALID') {
      throw new Error(`parseCsrFast threw something other than its own error: ${String(error)}`, { cause: error });
    }
    return false;
  }
}

/** A hand-built CSR for the rules @peculiar/x509 does not let us break: every part can be replaced. */
function craftCsr(
  key: TestKey,
  options: { version?: number; attributes?: Buffer[]; algorithm?: Buffer; hash?: string; spki?: Buffer } = {},
): Buffer {
  const info = derSequence(
    derSmallInteger(options.version ?? 0),
    derSequence(),
    options.spki ?? key.spki,
    derContext(0, true, ...(options.attributes ?? [])),
  );
  const algorithm =
    options.algorithm ??
    (key.name === 'RSA-2048'
      ? ALGORITHM_IDENTIFIERS.sha256WithRsaEncryption
      : key.name === 'P-384'
        ? ALGORITHM_IDENTIFIERS.ecdsaWithSha384
        : ALGORITHM_IDENTIFIERS.ecdsaWithSha256);
  const hash = options.hash ?? (key.name === 'P-384' ? 'sha384' : 'sha256');
  return derSequence(info, algorithm, derBitString(sign(hash, info, key.privateKey)));
}

function extensionRequest(...extensions: Buffer[]): Buffer {
  return derSequence(derOid(Oid.extensionRequest), derSet(derSequence(...extensions)));
}

function sanExtension(...names: Buffer[]): Buffer {
  return derSequence(derOid(Oid.subjectAltName), derOctetString(derSequence(...names)));
}

function csrErrorOf(input: string | Uint8Array): string {
  try {
    parseCsrFast(input);
  } catch (error) {
    expect(error).toBeInstanceOf(PkiError);
    expect((error as PkiError).code).toBe('ERR_CSR_INVALID');
    return (error as PkiError).message;
  }
  throw new Error('expected parseCsrFast to refuse the input');
}

/** Offsets of every TLV header in a valid DER sample, to corrupt length fields precisely. */
function headerOffsets(der: Uint8Array): number[] {
  const context: DerContext = { name: 'sample', code: 'ERR_CSR_INVALID' };
  const offsets: number[] = [];
  const walk = (start: number, end: number): void => {
    for (let offset = start; offset < end;) {
      const element = readDerElement(der, offset, end, context);
      offsets.push(offset);
      if (element.tag & 0x20) walk(element.contentStart, element.end);
      offset = element.end;
    }
  };
  walk(0, der.length);
  return offsets;
}

beforeAll(async () => {
  for (const name of KEY_NAMES) {
    const key = await generate(name);
    keys.set(name, key);
    samples.set(name, await peculiarCsr(key, ['spiffe://example.org/workload'], ['a.example.org'], 'CN=sample'));
  }
});

const keyName = fc.constantFrom(...KEY_NAMES);
const spiffeUri = fc
  .array(fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/), { minLength: 0, maxLength: 4 })
  .map((segments) => `spiffe://example.org${segments.map((segment) => `/${segment}`).join('')}`);
const asciiUri = fc.stringMatching(/^[a-z][a-z0-9+.-]{0,8}:[\x21-\x7e]{0,40}$/);
const dnsName = fc.oneof(
  fc.domain(),
  fc.domain().map((domain) => `*.${domain}`),
);

describe('parseCsrFast against @peculiar/x509', () => {
  it('reads the same public key and names as @peculiar/x509 from random valid CSRs (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        keyName,
        fc.array(fc.oneof(spiffeUri, asciiUri), { maxLength: 3 }),
        fc.array(dnsName, { maxLength: 4 }),
        fc.option(fc.stringMatching(/^[A-Za-z0-9 ]{1,20}$/), { nil: undefined }),
        fc.boolean(),
        async (name, uris, dnsNames, commonName, asPem) => {
          const der = await peculiarCsr(keys.get(name)!, uris, dnsNames, commonName && `CN=${commonName}`);
          const reference = new x509.Pkcs10CertificateRequest(der);
          expect(await reference.verify()).toBe(true);
          const parsed = parseCsrFast(asPem ? toPem('CERTIFICATE REQUEST', der) : der);
          expect(parsed.spkiDer.toString('hex')).toBe(Buffer.from(reference.publicKey.rawData).toString('hex'));
          expect(parsed.publicKey.export({ format: 'der', type: 'spki' }).equals(parsed.spkiDer)).toBe(true);
          const san = reference.getExtension('2.5.29.17');
          const items = san ? new x509.SubjectAlternativeNameExtension(san.rawData).names.items : [];
          expect(parsed.uris).toEqual(items.filter((item) => item.type === 'url').map((item) => item.value));
          expect(parsed.dnsNames).toEqual(items.filter((item) => item.type === 'dns').map((item) => item.value));
        },
      ),
      { numRuns: 60 },
    );
  });

  it.each(KEY_NAMES)('rejects every truncation of a %s CSR, DER and PEM', (name) => {
    const der = samples.get(name)!;
    for (let length = 0; length < der.length; length++) expect(fastAccepts(der.subarray(0, length))).toBe(false);
    const pem = toPem('CERTIFICATE REQUEST', der);
    const endLine = pem.indexOf('-----END');
    for (let length = 0; length < endLine; length++) expect(fastAccepts(pem.slice(0, length))).toBe(false);
  });

  it('accepts nothing @peculiar/x509 rejects after random mutations (property)', async () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('overwrite' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 4 }) }),
      fc.record({
        kind: fc.constant('insert' as const),
        at: fc.nat(),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }),
      }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 4 }) }),
      fc.record({
        kind: fc.constant('length' as const),
        at: fc.nat(),
        form: fc.constantFrom('random', 'non-minimal', 'indefinite', 'huge'),
        value: fc.integer({ min: 0, max: 255 }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(keyName, fc.array(mutation, { minLength: 1, maxLength: 3 }), async (name, mutations) => {
        let bytes = Buffer.from(samples.get(name)!);
        for (const change of mutations) {
          const at = change.at % bytes.length;
          if (change.kind === 'flip') bytes[at] = (bytes[at] as number) ^ (1 << change.bit);
          if (change.kind === 'overwrite') bytes.set(change.bytes.subarray(0, bytes.length - at), at);
          if (change.kind === 'insert')
            bytes = Buffer.concat([bytes.subarray(0, at), change.bytes, bytes.subarray(at)]);
          if (change.kind === 'delete')
            bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + change.count)]);
          if (change.kind === 'length') {
            const headers = headerOffsets(samples.get(name)!).filter((offset) => offset + 1 < bytes.length);
            const header = headers[change.at % headers.length] as number;
            const replacement = {
              random: [change.value],
              'non-minimal': [0x81, bytes[header + 1] as number],
              indefinite: [0x80],
              huge: [0x84, 0xff, 0xff, 0xff, change.value],
            }[change.form];
            bytes = Buffer.concat([
              bytes.subarray(0, header + 1),
              Buffer.from(replacement),
              bytes.subarray(header + 2),
            ]);
          }
        }
        if (fastAccepts(bytes)) expect(await peculiarAccepts(bytes)).toBe(true);
      }),
      { numRuns: 400 },
    );
  });

  it('accepts nothing @peculiar/x509 rejects among random byte strings and PEM texts (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          fc
            .uint8Array({ maxLength: 400 })
            .map((bytes) => toPem('CERTIFICATE REQUEST', Buffer.concat([bytes, Buffer.from([0])]))),
          fc.string({ maxLength: 300 }),
        ),
        async (input) => {
          if (fastAccepts(input)) expect(await peculiarAccepts(input)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses deep nesting quickly, however deep', () => {
    let nested: Buffer = Buffer.from(samples.get('P-256')!);
    for (let level = 0; level < 2000; level++) nested = derSequence(nested);
    expect(csrErrorOf(nested)).toBe('csr: nesting deeper than 20 levels at offset 76');
  });
});

describe('parseCsrFast rules', () => {
  it('reads a CSR made by the openssl command line', () => {
    const der = execFileSync(
      'openssl',
      [
        'req',
        '-new',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        '/dev/null',
        '-subj',
        '/O=openssl',
        '-addext',
        'subjectAltName=URI:spiffe://example.org/ssl,DNS:ssl.example.org',
        '-outform',
        'DER',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const parsed = parseCsrFast(der);
    expect(parsed.uris).toEqual(['spiffe://example.org/ssl']);
    expect(parsed.dnsNames).toEqual(['ssl.example.org']);
    expect(parsed.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it.each(KEY_NAMES)('accepts a hand-built %s CSR with no attributes', (name) => {
    expect(parseCsrFast(craftCsr(keys.get(name)!)).uris).toEqual([]);
  });

  it('refuses a P-256 CSR signed with SHA-384 only when the signature does not match', () => {
    const key = keys.get('P-256')!;
    expect(fastAccepts(craftCsr(key, { algorithm: ALGORITHM_IDENTIFIERS.ecdsaWithSha384, hash: 'sha384' }))).toBe(true);
    expect(csrErrorOf(craftCsr(key, { algorithm: ALGORITHM_IDENTIFIERS.ecdsaWithSha384, hash: 'sha256' }))).toBe(
      'csr: signature does not verify with the request public key',
    );
  });

  it('names the broken rule, in parseCsrFast and parseCsrFastAsync alike', async () => {
    const p256 = keys.get('P-256')!;
    const rsa = keys.get('RSA-2048')!;
    const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' });
    const ed25519 = generateKeyPairSync('ed25519');
    const tampered = Buffer.from(samples.get('P-256')!);
    tampered[tampered.length - 5] ^= 0x01;
    const uri = derContext(6, false, Buffer.from('spiffe://example.org/a'));
    const offCurve = Buffer.from(p256.spki);
    offCurve[offCurve.length - 1] ^= 0x01;
    const cases: Array<[string, string | Uint8Array]> = [
      ['csr: version must be 0 (v1)', craftCsr(p256, { version: 1 })],
      // A point off the curve is refused when the key is loaded, before any signature is checked.
      ['csr public key: not a valid public key', craftCsr(p256, { spki: offCurve })],
      ['csr: signature does not verify with the request public key', tampered],
      [
        'csr: signatureAlgorithm must be ecdsa-with-SHA256, ecdsa-with-SHA384 (no parameters) or sha256WithRSAEncryption (NULL parameters)',
        craftCsr(p256, { algorithm: derSequence(derOid('1.2.840.10045.4.3.4')), hash: 'sha512' }),
      ],
      [
        'csr public key: unsupported ec curve secp521r1, expected P-256 or P-384',
        craftCsr({
          ...p256,
          privateKey: p521.privateKey,
          spki: p521.publicKey.export({ format: 'der', type: 'spki' }),
        }),
      ],
      [
        'csr public key: unsupported key algorithm ed25519, expected ec P-256, ec P-384 or rsa 2048',
        craftCsr(rsa, { spki: ed25519.publicKey.export({ format: 'der', type: 'spki' }) }),
      ],
      [
        'csr: signatureAlgorithm is for ec keys but the public key is rsa-2048',
        craftCsr(rsa, { algorithm: ALGORITHM_IDENTIFIERS.ecdsaWithSha256 }),
      ],
      [
        'csr: extensionRequest attribute must appear at most once',
        craftCsr(p256, { attributes: [extensionRequest(sanExtension(uri)), extensionRequest(sanExtension(uri))] }),
      ],
      [
        `csr: extension ${Oid.subjectAltName} must appear at most once`,
        craftCsr(p256, { attributes: [extensionRequest(sanExtension(uri), sanExtension(uri))] }),
      ],
      [
        'csr: subjectAltName must hold at least one name',
        craftCsr(p256, { attributes: [extensionRequest(sanExtension())] }),
      ],
      [
        'csr: ia5 string has a byte outside 7-bit ascii at offset 143',
        craftCsr(p256, {
          attributes: [extensionRequest(sanExtension(derContext(6, false, Buffer.from('spiffe://é'))))],
        }),
      ],
      [
        `csr: unexpected data after the last element of the input (one CertificationRequest) at offset ${samples.get('P-256')!.length}`,
        Buffer.concat([samples.get('P-256')!, Buffer.from([0])]),
      ],
      [`csr: input must be at most ${CSR_MAX_BYTES} bytes`, Buffer.alloc(CSR_MAX_BYTES + 1)],
      ['pem: no pem block found', 'not a pem text'],
      ['csr: expected label "CERTIFICATE REQUEST", found "CERTIFICATE"', toPem('CERTIFICATE', samples.get('P-256')!)],
    ];
    for (const [message, input] of cases) {
      expect(csrErrorOf(input), message).toBe(message);
      await expect(parseCsrFastAsync(input), message).rejects.toMatchObject({ code: 'ERR_CSR_INVALID', message });
    }
  });

  it.each(KEY_NAMES)('parseCsrFastAsync returns what parseCsrFast returns for a %s CSR', async (name) => {
    const input = craftCsr(keys.get(name)!, {
      attributes: [extensionRequest(sanExtension(derContext(6, false, Buffer.from('spiffe://example.org/a'))))],
    });
    const sync = parseCsrFast(input);
    const parsed = await parseCsrFastAsync(input);
    expect(parsed.spkiDer).toEqual(sync.spkiDer);
    expect(parsed.uris).toEqual(['spiffe://example.org/a']);
    expect(parsed.dnsNames).toEqual(sync.dnsNames);
    expect(parsed.publicKey.type).toBe('public');
    expect(parsed.publicKey.equals(sync.publicKey)).toBe(true);
  });

  it.each(['P-256', 'P-384'] as const)('parseCsrFastAsync refuses a %s point off the curve', async (name) => {
    const key = keys.get(name)!;
    const offCurve = Buffer.from(key.spki);
    offCurve[offCurve.length - 1] ^= 0x01;
    await expect(parseCsrFastAsync(craftCsr(key, { spki: offCurve }))).rejects.toMatchObject({
      code: 'ERR_CSR_INVALID',
      message: 'csr public key: not a valid public key',
    });
  });
});
