import { SignJWT, base64url, exportJWK, generateKeyPair } from 'jose';
import type { webcrypto } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  SpiffeError,
  SpiffeId,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  parseAndValidateJwtSvid,
  parseInsecureJwtSvid,
  signJwtSvid,
  type JwtSvidAlgorithm,
} from './index.js';

const NOW = new Date('2030-01-01T00:00:00Z');
const EXP = new Date('2030-01-01T00:05:00Z');
const ID = SpiffeId.parse('spiffe://example.org/workload');
const example = TrustDomain.parse('example.org');
const other = TrustDomain.parse('other.org');

type KeyPair = { publicKey: webcrypto.CryptoKey; privateKey: webcrypto.CryptoKey };
const keys: Record<string, KeyPair> = {};
let bundles: TrustBundleSet;

beforeAll(async () => {
  for (const [kid, alg] of [
    ['es256', 'ES256'],
    ['es384', 'ES384'],
    ['rs256', 'RS256'],
    ['ps256', 'PS256'],
    ['other', 'ES256'],
  ] as const) {
    keys[kid] = (await generateKeyPair(alg, { extractable: true })) as unknown as KeyPair;
  }
  const jwk = async (kid: string) => [kid, await exportJWK(keys[kid]!.publicKey)] as const;
  bundles = new TrustBundleSet([
    TrustBundle.create(example, {
      jwtAuthorities: [await jwk('es256'), await jwk('es384'), await jwk('rs256'), await jwk('ps256')],
    }),
    TrustBundle.create(other, { jwtAuthorities: [await jwk('other')] }),
  ]);
});

function sign(overrides: Partial<Parameters<typeof signJwtSvid>[0]> & { keyId?: string } = {}): Promise<string> {
  const kid = overrides.keyId ?? 'es256';
  return signJwtSvid({
    spiffeId: ID,
    audience: ['db'],
    expiresAt: EXP,
    issuedAt: NOW,
    privateKey: keys[kid]!.privateKey,
    kid,
    ...overrides,
  });
}

/** Signs arbitrary header and claims with jose, to build tokens our signer refuses to make. */
function forge(header: Record<string, unknown>, claims: Record<string, unknown>, kid = 'es256'): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', ...header }).sign(keys[kid]!.privateKey);
}

function encode(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

const validClaims = { sub: ID.toString(), aud: 'db', exp: EXP.getTime() / 1000, iat: NOW.getTime() / 1000 };

async function rejection(promise: Promise<unknown>): Promise<SpiffeError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(SpiffeError);
    return error as SpiffeError;
  }
  throw new Error('expected a SpiffeError');
}

describe('signJwtSvid + parseAndValidateJwtSvid', () => {
  it('signs ES256 with kid and typ JWT, and validates it', async () => {
    const token = await sign({ extraClaims: { foo: 'bar' } });
    const [header] = token.split('.');
    expect(JSON.parse(Buffer.from(header!, 'base64url').toString())).toEqual({
      alg: 'ES256',
      kid: 'es256',
      typ: 'JWT',
    });
    const svid = await parseAndValidateJwtSvid(token, bundles, 'db', { now: NOW });
    expect(svid.spiffeId.equals(ID)).toBe(true);
    expect(svid.audience).toEqual(['db']);
    expect(svid.expiry).toEqual(EXP);
    expect(svid.issuedAt).toEqual(NOW);
    expect(svid.claims).toEqual({ ...validClaims, foo: 'bar' });
    expect(svid.token).toBe(token);
  });

  it('sets iss only when an issuer is given (jwt_issuer)', async () => {
    const withIssuer = await parseAndValidateJwtSvid(
      await sign({ issuer: 'https://oidc.example.org' }),
      bundles,
      'db',
      { now: NOW },
    );
    expect(withIssuer.claims).toEqual({ ...validClaims, iss: 'https://oidc.example.org' });
    const without = await parseAndValidateJwtSvid(await sign(), bundles, 'db', { now: NOW });
    expect(without.claims).not.toHaveProperty('iss');
  });

  it.each<[JwtSvidAlgorithm, string]>([
    ['ES384', 'es384'],
    ['RS256', 'rs256'],
    ['PS256', 'ps256'],
  ])('accepts %s', async (alg, kid) => {
    const token = await sign({ alg, keyId: kid });
    await expect(parseAndValidateJwtSvid(token, bundles, 'db', { now: NOW })).resolves.toMatchObject({
      audience: ['db'],
    });
  });

  it('accepts a token whose audience list contains the expected one, or one of several expected', async () => {
    const token = await sign({ audience: ['db', 'cache'] });
    expect((await parseAndValidateJwtSvid(token, bundles, 'cache', { now: NOW })).audience).toEqual(['db', 'cache']);
    await expect(parseAndValidateJwtSvid(token, bundles, ['web', 'db'], { now: NOW })).resolves.toBeDefined();
  });

  it('accepts a token one second before it expires', async () => {
    const token = await sign();
    await expect(
      parseAndValidateJwtSvid(token, bundles, 'db', { now: new Date(EXP.getTime() - 1000) }),
    ).resolves.toBeDefined();
  });
});

describe('parseAndValidateJwtSvid rejects', () => {
  const hmacKey = new TextEncoder().encode('a-shared-secret-that-is-32-bytes');
  const cases: [string, () => Promise<string>, string, string, Date?][] = [
    ['an expired token', () => sign(), 'ERR_JWT_SVID_INVALID', 'token expired at 2030-01-01T00:05:00.000Z', EXP],
    ['a token long expired', () => sign(), 'ERR_JWT_SVID_INVALID', 'token expired at', new Date('2031-01-01')],
    [
      'a wrong audience',
      () => sign({ audience: ['web'] }),
      'ERR_JWT_SVID_INVALID',
      'token audience ["web"] does not contain the expected audience "db"',
    ],
    [
      'an unknown kid',
      () => forge({ kid: 'missing' }, validClaims),
      'ERR_JWT_SVID_INVALID',
      'no jwt authority with kid "missing" in the bundle of example.org',
    ],
    [
      'another trust domain key',
      () => sign({ keyId: 'other' }),
      'ERR_JWT_SVID_INVALID',
      'no jwt authority with kid "other" in the bundle of example.org',
    ],
    [
      'a trust domain without bundle',
      () => sign({ spiffeId: SpiffeId.parse('spiffe://unknown.org/w') }),
      'ERR_BUNDLE_NOT_FOUND',
      'no bundle for trust domain "unknown.org"',
    ],
    [
      'alg none',
      async () => `${encode({ alg: 'none', kid: 'es256', typ: 'JWT' })}.${encode(validClaims)}.`,
      'ERR_JWT_SVID_INVALID',
      'token alg "none" is not allowed',
    ],
    [
      'HS256',
      () => new SignJWT(validClaims).setProtectedHeader({ alg: 'HS256', kid: 'es256' }).sign(hmacKey),
      'ERR_JWT_SVID_INVALID',
      'token alg "HS256" is not allowed',
    ],
    [
      'EdDSA',
      async () => `${encode({ alg: 'EdDSA', kid: 'es256' })}.${encode(validClaims)}.c2ln`,
      'ERR_JWT_SVID_INVALID',
      'token alg "EdDSA" is not allowed',
    ],
    [
      'a tampered payload',
      async () => {
        const [header, , signature] = (await sign()).split('.');
        return `${header}.${encode({ ...validClaims, sub: 'spiffe://example.org/admin' })}.${signature}`;
      },
      'ERR_JWT_SVID_INVALID',
      'token signature is invalid',
    ],
    [
      'a signature by another key of the bundle',
      async () => {
        const [, payload, signature] = (await sign({ keyId: 'es256' })).split('.');
        return `${encode({ alg: 'ES256', kid: 'ps256' })}.${payload}.${signature}`;
      },
      'ERR_JWT_SVID_INVALID',
      'jwt authority "ps256" cannot verify alg ES256',
    ],
    [
      'a header alg that does not fit the key',
      async () => {
        const [, payload, signature] = (await sign()).split('.');
        return `${encode({ alg: 'ES384', kid: 'es256' })}.${payload}.${signature}`;
      },
      'ERR_JWT_SVID_INVALID',
      'jwt authority "es256" cannot verify alg ES384',
    ],
    ['a missing kid', () => forge({}, validClaims), 'ERR_JWT_SVID_INVALID', 'token header must have a kid'],
    [
      'a sub that is not a spiffe id',
      () => forge({ kid: 'es256' }, { ...validClaims, sub: 'workload' }),
      'ERR_JWT_SVID_INVALID',
      'token sub claim is not a spiffe id: invalid spiffe id "workload"',
    ],
    [
      'a missing sub',
      () => forge({ kid: 'es256' }, { ...validClaims, sub: undefined }),
      'ERR_JWT_SVID_INVALID',
      'token must have a sub claim',
    ],
    [
      'a missing exp',
      () => forge({ kid: 'es256' }, { ...validClaims, exp: undefined }),
      'ERR_JWT_SVID_INVALID',
      'token must have an exp claim',
    ],
    [
      'a missing aud',
      () => forge({ kid: 'es256' }, { ...validClaims, aud: undefined }),
      'ERR_JWT_SVID_INVALID',
      'token must have an aud claim',
    ],
    [
      'an empty aud list',
      () => forge({ kid: 'es256' }, { ...validClaims, aud: [] }),
      'ERR_JWT_SVID_INVALID',
      'token aud claim must be a string or a non-empty list',
    ],
    [
      'a typ other than JWT or JOSE',
      () => forge({ kid: 'es256', typ: 'at+jwt' }, validClaims),
      'ERR_JWT_SVID_INVALID',
      'token typ "at+jwt" must be JWT or JOSE',
    ],
    [
      'a token not yet valid (nbf)',
      () => forge({ kid: 'es256' }, { ...validClaims, nbf: NOW.getTime() / 1000 + 60 }),
      'ERR_JWT_SVID_INVALID',
      'token is not valid before 2030-01-01T00:01:00.000Z',
    ],
    [
      'a non-numeric iat',
      () => forge({ kid: 'es256' }, { ...validClaims, iat: 'yesterday' }),
      'ERR_JWT_SVID_INVALID',
      'token iat claim must be a time (seconds since the epoch) within the range of dates',
    ],
    ['a token with two parts', async () => 'abc.def', 'ERR_JWT_SVID_INVALID', 'token must be a compact jws'],
    [
      'a header that is not json',
      async () => `${base64url.encode('nope')}.${encode(validClaims)}.c2ln`,
      'ERR_JWT_SVID_INVALID',
      'token header is not valid base64url json',
    ],
  ];

  it.each(cases)('%s', async (_name, make, code, message, now = NOW) => {
    const error = await rejection(parseAndValidateJwtSvid(await make(), bundles, 'db', { now }));
    expect(error.code).toBe(code);
    expect(error.message).toContain(message);
  });

  it.each([[''], [[]], [['db', '']]])('an invalid expected audience %j', async (audience) => {
    const error = await rejection(parseAndValidateJwtSvid(await sign(), bundles, audience as string[], { now: NOW }));
    expect(error.code).toBe('ERR_JWT_SVID_INVALID');
    expect(error.message).toContain('expected audience must be a non-empty string');
  });
});

describe('signJwtSvid rejects bad parameters', () => {
  it.each<[string, Partial<Parameters<typeof signJwtSvid>[0]>, string]>([
    ['no audience', { audience: [] }, 'audience must list at least one value'],
    ['an empty audience', { audience: [''] }, 'audience values must be non-empty strings'],
    ['an empty kid', { kid: '' }, 'kid must be a non-empty string'],
    ['alg HS256', { alg: 'HS256' as JwtSvidAlgorithm }, 'alg must be one of RS256'],
    ['exp before iat', { expiresAt: NOW }, 'expiresAt must be at least one second after issuedAt'],
    ['an invalid date', { expiresAt: new Date('x') }, 'expiresAt must be a valid date'],
    [
      'extra claims overriding sub',
      { extraClaims: { sub: 'spiffe://example.org/admin' } },
      'extraClaims must not set sub',
    ],
    ['extra claims overriding iss', { extraClaims: { iss: 'https://evil.example' } }, 'extraClaims must not set iss'],
    ['an empty issuer', { issuer: '' }, 'issuer must be a non-empty string when set'],
    ['a key that does not fit the alg', { alg: 'RS256' }, 'cannot sign with alg RS256'],
  ])('%s', async (_name, overrides, message) => {
    const error = await rejection(sign(overrides));
    expect(error.code).toBe('ERR_JWT_SVID_INVALID');
    expect(error.message).toContain(message);
  });
});

describe('parseInsecureJwtSvid', () => {
  it('skips the signature but still checks claims, expiry and audience', async () => {
    const [header, payload] = (await sign()).split('.');
    const unsigned = `${header}.${payload}.c2ln`;
    expect(parseInsecureJwtSvid(unsigned, 'db', { now: NOW }).spiffeId.equals(ID)).toBe(true);
    expect(() => parseInsecureJwtSvid(unsigned, 'web', { now: NOW })).toThrow('does not contain the expected audience');
    expect(() => parseInsecureJwtSvid(unsigned, 'db', { now: EXP })).toThrow('token expired at');
    expect(() => parseInsecureJwtSvid(`${encode({ alg: 'none' })}.${payload}.`, 'db', { now: NOW })).toThrow(
      'token alg "none" is not allowed',
    );
  });
});
