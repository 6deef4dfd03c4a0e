import { generateKeyPair } from '@sigil/pki';
import { SpiffeError, TrustBundle, TrustDomain, parseAndValidateJwtSvid, parseInsecureJwtSvid } from '@sigil/spiffe';
import { KeyObject, sign } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';

// Counterexamples `npm run fuzz` found, kept as regression tests of the parser fixes.

const NOW = new Date('2030-01-01T00:00:00Z');
const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('JWT-SVID header and claim values of the wrong type', () => {
  let bundle: TrustBundle;
  let privateKey: KeyObject;
  const token = (header: unknown, claims: unknown): string => {
    const input = `${b64url(header)}.${b64url(claims)}`;
    const signature = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${signature.toString('base64url')}`;
  };
  const claims = { sub: 'spiffe://example.org/web', aud: 'aud', exp: NOW.getTime() / 1000 + 300 };

  beforeAll(async () => {
    const keys = await generateKeyPair('ec-p256');
    privateKey = KeyObject.from(keys.privateKey);
    const jwk = KeyObject.from(keys.publicKey).export({ format: 'jwk' });
    bundle = TrustBundle.create(TrustDomain.parse('example.org'), { jwtAuthorities: [['kid-1', jwk]] });
  });

  const refusals = (text: string) => [
    () => parseAndValidateJwtSvid(text, bundle, 'aud', { now: NOW }),
    async () => parseInsecureJwtSvid(text, 'aud', { now: NOW }),
  ];

  it.each([
    ['alg', { alg: { toString: null }, kid: 'kid-1', typ: 'JWT' }, /^token alg an object is not allowed/],
    ['typ', { alg: 'ES256', kid: 'kid-1', typ: { toString: null } }, /^token typ an object must be JWT or JOSE$/],
    ['typ', { alg: 'ES256', kid: 'kid-1', typ: ['JWT'] }, /^token typ an array must be JWT or JOSE$/],
  ])('refuses a header %s that is not a string with SpiffeError (was a TypeError)', async (_field, header, message) => {
    for (const call of refusals(token(header, claims))) {
      await expect(call()).rejects.toSatisfy(
        (error: unknown) =>
          error instanceof SpiffeError && error.code === 'ERR_JWT_SVID_INVALID' && message.test(error.message),
      );
    }
  });

  it('refuses a kid that is not a string with SpiffeError (was a TypeError)', async () => {
    const text = token({ alg: 'ES256', kid: { length: 100 }, typ: 'JWT' }, claims);
    await expect(parseAndValidateJwtSvid(text, bundle, 'aud', { now: NOW })).rejects.toThrow(
      new SpiffeError('ERR_JWT_SVID_INVALID', 'token header kid must be a string'),
    );
  });
});

describe('JWT-SVID times outside the range of dates', () => {
  const exp = NOW.getTime() / 1000 + 300;
  const unsigned = (claims: Record<string, unknown>): string =>
    `${b64url({ alg: 'ES256', kid: 'kid-1', typ: 'JWT' })}.${b64url({ sub: 'spiffe://example.org/web', aud: 'aud', exp, ...claims })}.AA`;

  it.each([
    ['exp', { exp: -1e308 }, 'token exp claim must be a time (seconds since the epoch) within the range of dates'],
    ['exp', { exp: 1e308 }, 'token exp claim must be a time (seconds since the epoch) within the range of dates'],
    ['nbf', { nbf: 1e308 }, 'token nbf claim must be a time (seconds since the epoch) within the range of dates'],
    ['nbf', { nbf: 'soon' }, 'token nbf claim must be a time (seconds since the epoch) within the range of dates'],
    ['iat', { iat: 1e308 }, 'token iat claim must be a time (seconds since the epoch) within the range of dates'],
  ])('refuses %s %j with SpiffeError (was a RangeError, or an Invalid Date accepted)', (_claim, claims, message) => {
    expect(() => parseInsecureJwtSvid(unsigned(claims), 'aud', { now: NOW })).toThrow(
      new SpiffeError('ERR_JWT_SVID_INVALID', message),
    );
  });

  it('still accepts the last representable expiry', () => {
    expect(parseInsecureJwtSvid(unsigned({ exp: 8.64e12 }), 'aud', { now: NOW }).expiry.getTime()).toBe(8.64e15);
  });
});
