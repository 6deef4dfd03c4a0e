import { exportJWK, generateKeyPair } from 'jose';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa } from '../../support/test-ca.js';
import {
  SpiffeError,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  type JwtAuthorityKey,
} from '../../../libs/spiffe/src/index.js';

const td = TrustDomain.parse('example.org');
let ca: TestCa;
let ca2: TestCa;
let x5c: string;
let ecJwk: Record<string, unknown>;
let rsaJwk: Record<string, unknown>;

beforeAll(async () => {
  ca = await TestCa.create(td, { now: TEST_NOW });
  ca2 = await TestCa.create(td, { now: TEST_NOW, keyAlgorithm: 'P-384' });
  x5c = Buffer.from(ca.certificate.rawData).toString('base64');
  ecJwk = { ...(await exportJWK((await generateKeyPair('ES256', { extractable: true })).publicKey)) };
  rsaJwk = { ...(await exportJWK((await generateKeyPair('RS256', { extractable: true })).publicKey)) };
});

function failure(fn: () => unknown): SpiffeError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeError);
    return error as SpiffeError;
  }
  throw new Error('expected a SpiffeError');
}

describe('TrustBundle.parseJwks', () => {
  it('parses x509 and jwt authorities, sequence and refresh hint', () => {
    const bundle = TrustBundle.parseJwks(
      td,
      JSON.stringify({
        keys: [
          { use: 'x509-svid', kty: 'EC', x5c: [x5c] },
          { use: 'jwt-svid', kid: 'k1', ...ecJwk },
          { use: 'jwt-svid', kid: 'k2', ...rsaJwk, alg: 'RS256' },
        ],
        spiffe_sequence: 42,
        spiffe_refresh_hint: 300,
      }),
    );
    expect(bundle.trustDomain.equals(td)).toBe(true);
    expect(bundle.x509Authorities.map((c) => c.subject)).toEqual([ca.certificate.subject]);
    expect([...bundle.jwtAuthorities.keys()]).toEqual(['k1', 'k2']);
    expect(bundle.findJwtAuthority('k1')).toEqual({ kty: 'EC', crv: 'P-256', x: ecJwk.x, y: ecJwk.y });
    expect(bundle.findJwtAuthority('k2')).toEqual({ kty: 'RSA', n: rsaJwk.n, e: rsaJwk.e });
    expect(bundle.sequenceNumber).toBe(42);
    expect(bundle.refreshHintSeconds).toBe(300);
  });

  it('accepts utf-8 bytes and objects, and an empty key list (a revoked trust domain)', () => {
    const bundle = TrustBundle.parseJwks(td, new TextEncoder().encode('{"keys":[]}'));
    expect(bundle.isEmpty()).toBe(true);
    expect(bundle.sequenceNumber).toBeUndefined();
    expect(TrustBundle.parseJwks(td, { keys: [] }).isEmpty()).toBe(true);
  });

  it('ignores keys of unknown use and jwt keys of unknown type (SPIFFE_Trust_Domain_and_Bundle.md §4.2)', () => {
    const bundle = TrustBundle.parseJwks(td, {
      keys: [
        { use: 'wit-svid', kty: 'EC', ...ecJwk },
        { use: 'enc', kty: 'RSA', ...rsaJwk },
        { use: 'jwt-svid', kid: 'okp', kty: 'OKP', crv: 'Ed25519', x: 'AAAA' },
        { use: 'jwt-svid', kid: 'k1', ...ecJwk },
      ],
    });
    expect([...bundle.jwtAuthorities.keys()]).toEqual(['k1']);
    expect(bundle.x509Authorities).toHaveLength(0);
  });

  it.each<[string, unknown, string]>([
    ['text that is not json', '{"keys": [', 'bundle is not valid json'],
    ['a json array', '[]', 'bundle must be a json object'],
    ['a missing keys member', '{}', 'bundle must have a keys array'],
    ['keys that is not an array', '{"keys": {}}', 'bundle must have a keys array'],
    ['a key that is not an object', '{"keys": [1]}', 'key entry 0 must be a json object'],
    ['a key without use', '{"keys": [{"kty": "EC"}]}', 'key entry 0 is missing use'],
    ['a key with a numeric use', '{"keys": [{"kty": "EC", "use": 1}]}', 'key entry 0 use must be a string'],
    [
      'an x509-svid key without x5c',
      '{"keys": [{"use": "x509-svid", "kty": "EC"}]}',
      'x509-svid key entry 0 must have exactly one x5c certificate, got 0',
    ],
    [
      'an x509-svid key with an empty x5c',
      '{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": []}]}',
      'must have exactly one x5c certificate, got 0',
    ],
    [
      'an x509-svid key with bad base64',
      '{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["***"]}]}',
      'x509-svid key entry 0 x5c is not valid base64',
    ],
    [
      'an x509-svid key with base64url',
      '{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["MIIB-_"]}]}',
      'x5c is not valid base64',
    ],
    [
      'an x509-svid key with a non-certificate',
      '{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["MAMCAQE="]}]}',
      'x509-svid key entry 0 x5c is not a der x.509 certificate',
    ],
    [
      'a jwt-svid key without kid',
      '{"keys": [{"use": "jwt-svid", "kty": "EC"}]}',
      'jwt-svid key entry 0 is missing kid',
    ],
    ['a sequence that is a string', '{"keys": [], "spiffe_sequence": "1"}', 'spiffe_sequence must be an integer'],
    ['a negative sequence', '{"keys": [], "spiffe_sequence": -1}', 'spiffe_sequence must be a non-negative integer'],
    [
      'a fractional refresh hint',
      '{"keys": [], "spiffe_refresh_hint": 1.5}',
      'spiffe_refresh_hint must be a non-negative integer',
    ],
  ])('rejects %s', (_name, document, message) => {
    const error = failure(() => TrustBundle.parseJwks(td, document as string));
    expect(error.code).toBe('ERR_BUNDLE_INVALID');
    expect(error.message).toContain(message);
  });

  it('rejects an x509-svid key with two certificates', () => {
    const error = failure(() =>
      TrustBundle.parseJwks(td, { keys: [{ use: 'x509-svid', kty: 'EC', x5c: [x5c, x5c] }] }),
    );
    expect(error.message).toContain('x509-svid key entry 0 must have exactly one x5c certificate, got 2');
  });

  it.each<[string, () => Record<string, unknown>, string]>([
    ['a duplicate kid', () => ({ ...ecJwk, kid: 'k1' }), 'jwt-svid key entry 1 repeats kid "k1"'],
    [
      'a private key',
      () => ({ ...ecJwk, kid: 'k2', d: 'AAAA' }),
      'jwt-svid key entry 1: key must be a public key (private member "d" is present)',
    ],
    [
      'a point off the curve',
      () => ({ ...ecJwk, kid: 'k2', y: ecJwk.x }),
      'jwt-svid key entry 1: key is not a valid EC public key',
    ],
    [
      'a missing coordinate',
      () => ({ ...ecJwk, kid: 'k2', y: undefined }),
      'jwt-svid key entry 1: key member "y" must be a non-empty string',
    ],
    [
      'an RSA key without modulus',
      () => ({ ...rsaJwk, kid: 'k2', n: '' }),
      'key member "n" must be a non-empty string',
    ],
  ])('rejects a jwt authority with %s', (_name, second, message) => {
    const error = failure(() =>
      TrustBundle.parseJwks(td, {
        keys: [
          { use: 'jwt-svid', kid: 'k1', ...ecJwk },
          { use: 'jwt-svid', ...second() },
        ],
      }),
    );
    expect(error.code).toBe('ERR_BUNDLE_INVALID');
    expect(error.message).toContain(message);
  });
});

describe('TrustBundle.toJwks', () => {
  it('writes x509 keys with one x5c and no kid, jwt keys with kid, then the hint and sequence', () => {
    const bundle = TrustBundle.create(td, {
      x509Authorities: [ca.certificate],
      jwtAuthorities: { k1: ecJwk },
      sequenceNumber: 7,
      refreshHintSeconds: 60,
    });
    const jwks = bundle.toJwks();
    expect(jwks.keys[0]).toEqual({
      use: 'x509-svid',
      kty: 'EC',
      crv: 'P-256',
      x: expect.any(String),
      y: expect.any(String),
      x5c: [x5c],
    });
    expect(jwks.keys[0]).not.toHaveProperty('kid');
    expect(jwks.keys[1]).toEqual({ use: 'jwt-svid', kty: 'EC', crv: 'P-256', x: ecJwk.x, y: ecJwk.y, kid: 'k1' });
    expect(Object.keys(jwks)).toEqual(['keys', 'spiffe_refresh_hint', 'spiffe_sequence']);
    expect(jwks.spiffe_sequence).toBe(7);
    expect(jwks.spiffe_refresh_hint).toBe(60);
  });

  it('uses the P-384 curve of a P-384 authority', () => {
    const key = TrustBundle.create(td, { x509Authorities: [ca2.certificate] }).toJwks().keys[0];
    expect(key).toMatchObject({ use: 'x509-svid', kty: 'EC', crv: 'P-384' });
  });

  it('round-trips through JSON text', () => {
    const bundle = TrustBundle.create(td, {
      x509Authorities: [ca.certificate, ca2.certificate],
      jwtAuthorities: [
        ['k1', ecJwk],
        ['k2', rsaJwk],
      ],
      sequenceNumber: 2 ** 53 - 1,
      refreshHintSeconds: 0,
    });
    const parsed = TrustBundle.parseJwks(td, bundle.toJson());
    expect(parsed.equals(bundle)).toBe(true);
    expect(parsed.sequenceNumber).toBe(2 ** 53 - 1);
    expect(parsed.refreshHintSeconds).toBe(0);
    expect(parsed.toJson()).toBe(bundle.toJson());
  });
});

describe('TrustBundle PEM and DER forms', () => {
  it('round-trips through PEM, which openssl reads', () => {
    const bundle = TrustBundle.create(td, { x509Authorities: [ca.certificate, ca2.certificate] });
    const pem = bundle.x509Pem();
    expect(TrustBundle.fromX509Pem(td, `comment line\n${pem}`).equals(bundle)).toBe(true);
    const file = join(mkdtempSync(join(tmpdir(), 'sigil-bundle-')), 'bundle.pem');
    writeFileSync(file, pem);
    const pkcs7 = execFileSync('openssl', ['crl2pkcs7', '-nocrl', '-certfile', file]);
    const subjects = execFileSync('openssl', ['pkcs7', '-print_certs', '-noout'], { input: pkcs7 }).toString();
    expect(subjects.match(/^subject=/gm)).toHaveLength(2);
  });

  it('round-trips through concatenated DER', () => {
    const bundle = TrustBundle.create(td, { x509Authorities: [ca.certificate, ca2.certificate] });
    const der = bundle.x509Der();
    expect(der.length).toBe(ca.certificate.rawData.byteLength + ca2.certificate.rawData.byteLength);
    expect(TrustBundle.fromX509Der(td, der).equals(bundle)).toBe(true);
    expect(bundle.x509AuthoritiesDer()).toHaveLength(2);
  });

  it.each<[string, () => TrustBundle, string]>([
    ['pem without blocks', () => TrustBundle.fromX509Pem(td, 'nothing here'), 'no CERTIFICATE pem block found'],
    [
      'a pem key block',
      () => TrustBundle.fromX509Pem(td, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'),
      'pem block 0 is a PRIVATE KEY, expected CERTIFICATE',
    ],
    [
      'pem with bad base64',
      () => TrustBundle.fromX509Pem(td, '-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n'),
      'pem "CERTIFICATE" block on line 1: body is not valid base64',
    ],
    [
      'pem with a block left open',
      () => TrustBundle.fromX509Pem(td, `${ca.bundle().x509Pem()}-----BEGIN CERTIFICATE-----\nMAMCAQE=\n`),
      'has no END line',
    ],
    [
      'pem with mismatched labels',
      () => TrustBundle.fromX509Pem(td, '-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END X509 CRL-----\n'),
      'pem line 3: END label "X509 CRL" does not match BEGIN label "CERTIFICATE"',
    ],
    [
      'pem of a non-certificate',
      () => TrustBundle.fromX509Pem(td, '-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n'),
      'pem block 0 is not a der x.509 certificate',
    ],
    [
      'truncated der',
      () => TrustBundle.fromX509Der(td, ca.bundle().x509Der().slice(0, 50)),
      'der bundle: der item 0 is truncated',
    ],
    ['empty der', () => TrustBundle.fromX509Der(td, new Uint8Array()), 'der bundle: no der item found'],
  ])('rejects %s', (_name, make, message) => {
    const error = failure(make);
    expect(error.code).toBe('ERR_BUNDLE_INVALID');
    expect(error.message).toContain(message);
  });
});

describe('TrustBundle values', () => {
  it('drops duplicate authorities and stays immutable', () => {
    const bundle = TrustBundle.create(td, {
      x509Authorities: [ca.certificate, new Uint8Array(ca.certificate.rawData)],
    });
    expect(bundle.x509Authorities).toHaveLength(1);
    const next = bundle.withX509Authorities([ca.certificate, ca2.certificate]).withSequenceNumber(2);
    expect(bundle.x509Authorities).toHaveLength(1);
    expect(bundle.sequenceNumber).toBeUndefined();
    expect(next.x509Authorities).toHaveLength(2);
    expect(next.hasX509Authority(ca2.certificate)).toBe(true);
    expect(bundle.hasX509Authority(ca2.certificate)).toBe(false);
    expect(next.equals(bundle)).toBe(false);
    expect(next.withJwtAuthorities({ k: ecJwk }).withRefreshHintSeconds(5).findJwtAuthority('k')).toBeDefined();
  });

  it('compares authorities regardless of order', () => {
    const a = TrustBundle.create(td, { x509Authorities: [ca.certificate, ca2.certificate] });
    const b = TrustBundle.create(td, { x509Authorities: [ca2.certificate, ca.certificate] });
    expect(a.equals(b)).toBe(true);
    expect(a.equals(TrustBundle.create(TrustDomain.parse('other.org'), { x509Authorities: [ca.certificate] }))).toBe(
      false,
    );
  });

  it.each<[string, () => TrustBundle, string]>([
    [
      'an empty kid',
      () => TrustBundle.create(td, { jwtAuthorities: { '': ecJwk } }),
      'jwt authority kid must be a non-empty string',
    ],
    [
      'a symmetric key',
      () => TrustBundle.create(td, { jwtAuthorities: { k: { kty: 'oct', k: 'AAAA' } } }),
      'jwt authority "k": key type (kty) must be EC or RSA, got "oct"',
    ],
    [
      'a non-certificate',
      () => TrustBundle.create(td, { x509Authorities: [new Uint8Array([0x30, 0])] }),
      'x509 authority 0 is not a der x.509 certificate',
    ],
    [
      'a negative sequence',
      () => TrustBundle.create(td, { sequenceNumber: -1 }),
      'sequence number must be a non-negative integer',
    ],
  ])('create rejects %s', (_name, make, message) => {
    const error = failure(make);
    expect(error.code).toBe('ERR_BUNDLE_INVALID');
    expect(error.message).toContain(message);
  });

  it('is the bundle source of its own trust domain only', () => {
    const bundle = ca.bundle();
    expect(bundle.getBundleForTrustDomain(TrustDomain.parse('Example.org'))).toBe(bundle);
    const error = failure(() => bundle.getBundleForTrustDomain(TrustDomain.parse('other.org')));
    expect(error.code).toBe('ERR_BUNDLE_NOT_FOUND');
    expect(error.message).toContain('no bundle for trust domain "other.org"');
  });

  it('exposes jwt authorities typed as public keys', () => {
    const key: JwtAuthorityKey | undefined = TrustBundle.create(td, { jwtAuthorities: { k: rsaJwk } }).findJwtAuthority(
      'k',
    );
    expect(key?.kty).toBe('RSA');
  });
});

describe('TrustBundleSet', () => {
  it('adds, replaces, finds, iterates in name order and deletes', () => {
    const other = TrustDomain.parse('a-other.org');
    const set = new TrustBundleSet([ca.bundle()]);
    set.add(TrustBundle.create(other)).add(ca.bundle().withSequenceNumber(3));
    expect(set.size).toBe(2);
    expect(set.get(td)?.sequenceNumber).toBe(3);
    expect(set.has(other)).toBe(true);
    expect([...set].map((b) => b.trustDomain.name)).toEqual(['a-other.org', 'example.org']);
    expect(set.getBundleForTrustDomain(td).sequenceNumber).toBe(3);
    expect(set.delete(other)).toBe(true);
    const error = failure(() => set.getBundleForTrustDomain(other));
    expect(error.code).toBe('ERR_BUNDLE_NOT_FOUND');
    expect(error.message).toBe('no bundle for trust domain "a-other.org"');
  });
});
