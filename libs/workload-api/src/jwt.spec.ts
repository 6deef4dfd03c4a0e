import { webcrypto } from 'node:crypto';
import { SpiffeId, TrustBundle, TrustDomain, signJwtSvid } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { validateBearerJwtSvid } from './jwt.js';

describe('validateBearerJwtSvid', () => {
  const example = TrustDomain.parse('example.org');
  let bundle: TrustBundle;
  let token: string;
  let privateKey: webcrypto.CryptoKey;

  beforeAll(async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    privateKey = keys.privateKey;
    const { x, y } = await webcrypto.subtle.exportKey('jwk', keys.publicKey);
    bundle = TrustBundle.create(example, { jwtAuthorities: { k1: { kty: 'EC', crv: 'P-256', x, y } } });
    token = await signJwtSvid({
      spiffeId: SpiffeId.parse('spiffe://example.org/client'),
      audience: ['spiffe://example.org/api'],
      expiresAt: new Date(Date.now() + 60_000),
      privateKey,
      kid: 'k1',
    });
  });

  it.each([`Bearer ${'TOKEN'}`, `bearer ${'TOKEN'}`, `BEARER   ${'TOKEN'}`])('accepts %s', async (header) => {
    const svid = await validateBearerJwtSvid(header.replace('TOKEN', token), bundle, 'spiffe://example.org/api');
    expect(svid.spiffeId.toString()).toBe('spiffe://example.org/client');
    expect(svid.token).toBe(token);
  });

  it.each([
    [undefined, 'authorization header is missing'],
    ['', 'authorization header is missing'],
    [['Bearer a', 'Bearer b'], 'authorization header must appear once'],
    ['Basic dXNlcjpwYXNz', 'authorization header must use the bearer scheme'],
    ['Bearertoken', 'authorization header must use the bearer scheme'],
    ['Bearer', 'bearer token is empty'],
    ['Bearer a b', 'bearer token has characters outside the token68 alphabet'],
    ['Bearer a"b', 'bearer token has characters outside the token68 alphabet'],
  ])('refuses %j: %s', async (header, message) => {
    await expect(validateBearerJwtSvid(header, bundle, 'spiffe://example.org/api')).rejects.toMatchObject({
      code: 'ERR_BEARER_INVALID',
      message,
    });
  });

  it('passes the JWT-SVID rules through: wrong audience, expired, another trust domain', async () => {
    await expect(validateBearerJwtSvid(`Bearer ${token}`, bundle, 'spiffe://example.org/other')).rejects.toMatchObject({
      code: 'ERR_JWT_SVID_INVALID',
    });
    await expect(
      validateBearerJwtSvid(`Bearer ${token}`, bundle, 'spiffe://example.org/api', {
        now: new Date(Date.now() + 120_000),
      }),
    ).rejects.toMatchObject({ code: 'ERR_JWT_SVID_INVALID' });
    const foreign = await signJwtSvid({
      spiffeId: SpiffeId.parse('spiffe://other.org/client'),
      audience: ['spiffe://example.org/api'],
      expiresAt: new Date(Date.now() + 60_000),
      privateKey,
      kid: 'k1',
    });
    await expect(validateBearerJwtSvid(`Bearer ${foreign}`, bundle, 'spiffe://example.org/api')).rejects.toMatchObject({
      code: 'ERR_BUNDLE_NOT_FOUND',
    });
  });
});
