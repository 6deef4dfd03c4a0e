import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  MAX_UPSTREAM_JWT_AUTHORITIES,
  parseDownstreamJwtAuthorities,
  parseJwtAuthority,
  toJwtAuthorityBody,
} from './downstream-contract.js';

const spki = (type: 'ec' | 'rsa', options: { namedCurve?: string; modulusLength?: number }) =>
  (type === 'ec'
    ? generateKeyPairSync('ec', { namedCurve: options.namedCurve ?? 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: options.modulusLength ?? 2048 })
  ).publicKey
    .export({ type: 'spki', format: 'der' })
    .toString('base64');
const P256 = spki('ec', {});
const key = (overrides: Record<string, unknown> = {}) => ({
  key_id: 'kid-1',
  public_key: P256,
  expires_at: 1_900_000_000,
  ...overrides,
});

describe('JWT authorities on the downstream wire (both sides)', () => {
  it.each([
    ['EC P-256', P256],
    ['EC P-384', spki('ec', { namedCurve: 'P-384' })],
    ['RSA 2048', spki('rsa', {})],
  ])('takes a %s key and round-trips it', (_name, publicKey) => {
    const parsed = parseJwtAuthority(key({ public_key: publicKey }), 'jwt_authority');
    expect(parsed.notAfter).toEqual(new Date(1_900_000_000_000));
    expect(toJwtAuthorityBody(parsed)).toEqual(key({ public_key: publicKey }));
  });

  it.each([
    ['not an object', 'x', 'jwt_authority: must be a JSON object'],
    [
      'a kid with a slash',
      key({ key_id: 'a/b' }),
      "jwt_authority.key_id: must be 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'",
    ],
    [
      'a kid too long',
      key({ key_id: 'a'.repeat(129) }),
      "jwt_authority.key_id: must be 1 to 128 characters of A-Z, a-z, 0-9, '-' and '_'",
    ],
    [
      'a key that is not base64',
      key({ public_key: 'not base64!' }),
      'jwt_authority.public_key: must be base64 SubjectPublicKeyInfo DER',
    ],
    [
      'RSA 1024',
      key({ public_key: spki('rsa', { modulusLength: 1024 }) }),
      'jwt_authority.public_key: unsupported rsa modulus of 1024 bits, expected 2048',
    ],
    ['an expiry that is not whole seconds', key({ expires_at: 1.5 }), 'jwt_authority.expires_at: must be unix seconds'],
    ['an expiry as a string', key({ expires_at: '1900000000' }), 'jwt_authority.expires_at: must be unix seconds'],
  ])('refuses %s naming the field', (_name, value, message) => {
    expect(() => parseJwtAuthority(value, 'jwt_authority')).toThrow(new Error(message));
  });

  it('reads an answer: absent from an older upstream, refused when a kid repeats or there are too many', () => {
    expect(parseDownstreamJwtAuthorities({ x509_authorities: [] })).toBeUndefined();
    expect(parseDownstreamJwtAuthorities({ jwt_authorities: [key()] })).toHaveLength(1);
    expect(() => parseDownstreamJwtAuthorities({ jwt_authorities: [key(), key()] })).toThrow(
      'jwt_authorities: key_id kid-1 is listed twice',
    );
    expect(() => parseDownstreamJwtAuthorities({ jwt_authorities: 'x' })).toThrow('jwt_authorities: must be an array');
    const many = Array.from({ length: MAX_UPSTREAM_JWT_AUTHORITIES + 1 }, (_, index) => key({ key_id: `k${index}` }));
    expect(() => parseDownstreamJwtAuthorities({ jwt_authorities: many })).toThrow(
      `jwt_authorities: at most ${MAX_UPSTREAM_JWT_AUTHORITIES} keys, got ${MAX_UPSTREAM_JWT_AUTHORITIES + 1}`,
    );
    expect(() => parseDownstreamJwtAuthorities({ jwt_authorities: [key({ key_id: '' })] })).toThrow(
      /^jwt_authorities\[0\]\.key_id: /,
    );
  });
});

describe('a key not in its canonical encoding (review R15)', () => {
  const padded = Buffer.concat([Buffer.from(P256, 'base64'), Buffer.from([0])]).toString('base64');

  it('is refused from a publishing caller', () => {
    expect(() => parseJwtAuthority(key({ public_key: padded }), 'jwt_authority')).toThrow(
      'jwt_authority.public_key: must be the canonical DER encoding of the key',
    );
  });

  it('is taken in its canonical encoding from an upstream answer, the other keys with it', () => {
    const other = key({ key_id: 'kid-2' });
    const answer = parseDownstreamJwtAuthorities({ jwt_authorities: [key({ public_key: padded }), other] });
    expect(answer?.map((authority) => authority.kid)).toEqual(['kid-1', 'kid-2']);
    expect(answer?.[0]?.publicKeyDer.toString('base64')).toBe(P256);
  });
});
