import { create } from '@bufbuild/protobuf';
import { TrustDomain } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { TestCa, type TestSvid } from '../../support/test-ca.js';
import { JWTBundlesResponseSchema, X509SVIDResponseSchema } from '../../../libs/workload-api/src/gen/workload_pb.js';
import { parseJwtBundles, parseX509Context } from '../../../libs/workload-api/src/responses.js';

const encode = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value));
const EC_KEY = {
  kty: 'EC',
  crv: 'P-256',
  x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
  y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
};

describe('parseX509Context', () => {
  let ca: TestCa;
  let web: TestSvid;
  let db: TestSvid;

  beforeAll(async () => {
    ca = await TestCa.create('example.org');
    web = await ca.createX509Svid('spiffe://example.org/web');
    db = await ca.createX509Svid('spiffe://example.org/db');
  });

  async function svidMessage(svid: TestSvid, hint = '') {
    return {
      spiffeId: svid === web ? 'spiffe://example.org/web' : 'spiffe://example.org/db',
      x509Svid: Buffer.concat(svid.chainDer()),
      x509SvidKey: await svid.privateKeyPkcs8(),
      bundle: new Uint8Array(ca.certificate.rawData),
      hint,
    };
  }

  it('keeps the first of several SVIDs with the same hint, and federated bundles other than its own', async () => {
    const other = await TestCa.create('other.org');
    const response = create(X509SVIDResponseSchema, {
      svids: [await svidMessage(web, 'internal'), await svidMessage(db, 'internal')],
      federatedBundles: {
        'spiffe://other.org': new Uint8Array(other.certificate.rawData),
        'spiffe://example.org': new Uint8Array(other.certificate.rawData),
      },
    });
    const context = await parseX509Context(response);
    expect(context.svids.map((svid) => [svid.spiffeId.toString(), svid.hint])).toEqual([
      ['spiffe://example.org/web', 'internal'],
    ]);
    expect(context.bundles.bundles().map((bundle) => bundle.trustDomain.name)).toEqual(['example.org', 'other.org']);
    // the SVID's own bundle field wins over a federated entry for its trust domain
    expect(context.bundles.getBundleForTrustDomain(TrustDomain.parse('example.org')).x509Authorities).toEqual([
      expect.objectContaining({ subject: ca.certificate.subject }),
    ]);
  });

  it.each([
    ['no svids', async () => ({ svids: [] }), 'x509 svid response: svids must not be empty'],
    [
      'a key of another certificate',
      async () => ({ svids: [{ ...(await svidMessage(web)), x509SvidKey: await db.privateKeyPkcs8() }] }),
      'x509 svid response: svids[0]: private key does not match the public key of the leaf certificate',
    ],
    [
      'a spiffe_id that is not the certificate one',
      async () => ({ svids: [{ ...(await svidMessage(web)), spiffeId: 'spiffe://example.org/db' }] }),
      'x509 svid response: svids[0]: spiffe_id "spiffe://example.org/db" does not match the certificate\'s spiffe://example.org/web',
    ],
    [
      'a federated key that is not a trust domain',
      async () => ({ svids: [await svidMessage(web)], federatedBundles: { 'spiffe://Bad Domain': new Uint8Array() } }),
      'x509 svid response: federated_bundles key "spiffe://Bad Domain" is not a trust domain',
    ],
  ])('refuses %s', async (_case, init, message) => {
    const response = create(X509SVIDResponseSchema, await init());
    await expect(parseX509Context(response)).rejects.toMatchObject({
      code: 'ERR_RESPONSE_INVALID',
      message: expect.stringContaining(message),
    });
  });
});

describe('parseJwtBundles', () => {
  it('reads JWT authorities from a plain JWKS, skipping other uses and unknown key types', () => {
    const bundles = parseJwtBundles(
      create(JWTBundlesResponseSchema, {
        bundles: {
          'spiffe://example.org': encode({
            keys: [
              { ...EC_KEY, kid: 'with-use', use: 'jwt-svid' },
              { ...EC_KEY, kid: 'without-use' },
              { ...EC_KEY, kid: 'x509', use: 'x509-svid' },
              { kty: 'OKP', crv: 'Ed25519', x: 'AAAA', kid: 'unknown-type' },
            ],
          }),
        },
      }),
    );
    const bundle = bundles.getBundleForTrustDomain(TrustDomain.parse('example.org'));
    expect([...bundle.jwtAuthorities.keys()]).toEqual(['with-use', 'without-use']);
  });

  it.each([
    ['not json', new TextEncoder().encode('{'), 'jwt bundles response: spiffe://example.org: not a json document'],
    [
      'no keys array',
      encode({ keys: {} }),
      'jwt bundles response: spiffe://example.org: must be a jwks object with a keys array',
    ],
    [
      'a key without kid',
      encode({ keys: [{ ...EC_KEY, use: 'jwt-svid' }] }),
      'jwt bundles response: spiffe://example.org: keys[0] must have a kid',
    ],
  ])('refuses %s', (_case, json, message) => {
    expect(() =>
      parseJwtBundles(create(JWTBundlesResponseSchema, { bundles: { 'spiffe://example.org': json } })),
    ).toThrow(expect.objectContaining({ code: 'ERR_RESPONSE_INVALID', message }));
  });
});
