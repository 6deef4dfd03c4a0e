import { generateKeyPairSync, type webcrypto } from 'node:crypto';
import { exportPublicKeySpki } from '@sigil/pki';
import { TrustDomain } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { TestCa, generateTestKeys } from '../../../../test/support/test-ca.js';
import { checkSignedCa, publishedJwtAuthority } from './upstream-sigil.js';

const TD = TrustDomain.parse('example.org');
const b64 = (certificate: { rawData: ArrayBuffer }): string => Buffer.from(certificate.rawData).toString('base64');
const FROM = 'top:8081';

/** What an upstream answers: a CA for `keys` under `upstream`, the chain above it, and the roots. */
async function answer(options: { root: TestCa; issuer?: TestCa; keys: webcrypto.CryptoKeyPair }) {
  const issuer = options.issuer ?? options.root;
  const ca = await issuer.createIntermediate({ keys: options.keys });
  const above = issuer === options.root ? [options.root] : [issuer];
  return {
    ca_cert_chain: [b64(ca.certificate), ...above.map((each) => b64(each.certificate))],
    x509_authorities: [b64(options.root.certificate)],
    expires_at: ca.certificate.notAfter.toISOString(),
  };
}

describe('checkSignedCa: the answer of an upstream Sigil server, checked before use', () => {
  it('keeps the chain above our CA with the root last, and the upstream roots', async () => {
    const root = await TestCa.create(TD);
    const keys = await generateTestKeys();
    const spki = exportPublicKeySpki(keys.publicKey);
    const signed = checkSignedCa(await answer({ root, keys }), spki, TD, new Date(), FROM);
    expect(signed.upstreamChainDer.map((der) => der.toString('base64'))).toEqual([b64(root.certificate)]);
    expect(signed.upstreamAuthoritiesDer.map((der) => der.toString('base64'))).toEqual([b64(root.certificate)]);

    // Under an upstream that is itself an intermediate: its CA, then the root from the bundle.
    const middle = await root.createIntermediate();
    const nested = checkSignedCa(await answer({ root, issuer: middle, keys }), spki, TD, new Date(), FROM);
    expect(nested.upstreamChainDer.map((der) => der.toString('base64'))).toEqual([
      b64(middle.certificate),
      b64(root.certificate),
    ]);
  });

  it.each<[string, (good: Awaited<ReturnType<typeof answer>>, other: TestCa) => Promise<unknown> | unknown, string]>([
    ['a body without the chain', () => ({ x509_authorities: [] }), 'ca_cert_chain: must be a non-empty array'],
    [
      'a certificate that is not base64',
      (good) => ({ ...good, x509_authorities: ['%%%'] }),
      'x509_authorities[0]: must be base64 DER',
    ],
    [
      'a CA for another key',
      async (good, other) => ({
        ...good,
        ca_cert_chain: [b64((await other.createIntermediate()).certificate), ...good.ca_cert_chain.slice(1)],
      }),
      'ca_cert_chain[0]: is not a certificate of the key this server sent',
    ],
    [
      'a chain that reaches none of the roots',
      (good, other) => ({ ...good, x509_authorities: [b64(other.certificate)] }),
      'ca_cert_chain: does not link up to any of the 1 x509_authorities',
    ],
  ])('refuses %s', async (_name, mutate, message) => {
    const root = await TestCa.create(TD);
    const other = await TestCa.create(TD);
    const keys = await generateTestKeys();
    const body = await mutate(await answer({ root, keys }), other);
    expect(() => checkSignedCa(body, exportPublicKeySpki(keys.publicKey), TD, new Date(), FROM)).toThrow(
      `upstream_server_address ${FROM}: ${message}`,
    );
  });

  it('refuses a leaf where a CA certificate belongs, and a CA of another trust domain', async () => {
    const root = await TestCa.create(TD);
    const keys = await generateTestKeys();
    const spki = exportPublicKeySpki(keys.publicKey);
    const leaf = await root.createX509Svid('spiffe://example.org/not-a-ca', { keys });
    const body = {
      ca_cert_chain: [b64(leaf.certificate), b64(root.certificate)],
      x509_authorities: [b64(root.certificate)],
    };
    expect(() => checkSignedCa(body, spki, TD, new Date(), FROM)).toThrow('ca_cert_chain[0]: is not a CA certificate');

    const foreign = await TestCa.create('other.org');
    const ca = await foreign.createIntermediate({ keys });
    const wrongTd = {
      ca_cert_chain: [b64(ca.certificate), b64(foreign.certificate)],
      x509_authorities: [b64(foreign.certificate)],
    };
    expect(() => checkSignedCa(wrongTd, spki, TD, new Date(), FROM)).toThrow(
      'ca_cert_chain[0]: must name spiffe://example.org as its one URI SAN, got spiffe://other.org',
    );
  });

  // Read from the DER by @sigil/spiffe's idFromCertificate (the one SPIFFE-ID-from-certificate rule), not from
  // Node's subjectAltName text.
  it.each<[string, string[], string]>([
    ['no URI SAN', [], 'certificate must have exactly one uri san, got 0'],
    [
      'a second URI SAN',
      ['spiffe://example.org', 'spiffe://example.org/x'],
      'certificate must have exactly one uri san, got 2',
    ],
    ['a SPIFFE ID with a path', ['spiffe://example.org/nested'], 'spiffe://example.org/nested'],
    [
      'a URI that is not a SPIFFE ID',
      ['https://example.org, URI:spiffe://example.org'],
      'certificate uri san is not a spiffe id',
    ],
  ])('refuses a CA certificate with %s', async (_name, uris, got) => {
    const root = await TestCa.create(TD);
    const keys = await generateTestKeys();
    const ca = await root.createIntermediate({ keys, uris });
    const body = {
      ca_cert_chain: [b64(ca.certificate), b64(root.certificate)],
      x509_authorities: [b64(root.certificate)],
    };
    expect(() => checkSignedCa(body, exportPublicKeySpki(keys.publicKey), TD, new Date(), FROM)).toThrow(
      `ca_cert_chain[0]: must name spiffe://example.org as its one URI SAN, got ${got}`,
    );
  });
});

describe('publishedJwtAuthority: the upstream answer to a JWT key publication', () => {
  const now = new Date(Date.UTC(2026, 0, 1));
  const spki = () =>
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
  const asked = { kid: 'k1', publicKeyDer: spki(), notAfter: new Date(now.getTime() + 24 * 3600_000) };

  it('answers the expiry the upstream server stored: as asked, or cut to its bound', () => {
    expect(publishedJwtAuthority([asked], asked, now)).toEqual(asked);
    const cut = { ...asked, notAfter: new Date(now.getTime() + 3600_000) };
    expect(publishedJwtAuthority([{ ...asked, kid: 'other' }, cut], asked, now)).toEqual(cut);
  });

  it('refuses an answer without the key, with another public key, or an expiry later than asked or not after now', () => {
    expect(() => publishedJwtAuthority([], asked, now)).toThrow(
      'jwt_authorities: does not hold the key k1 just published',
    );
    expect(() => publishedJwtAuthority([{ ...asked, publicKeyDer: spki() }], asked, now)).toThrow(/does not hold/);
    const later = { ...asked, notAfter: new Date(asked.notAfter.getTime() + 1000) };
    expect(() => publishedJwtAuthority([later], asked, now)).toThrow(/no later than asked/);
    expect(() => publishedJwtAuthority([{ ...asked, notAfter: now }], asked, now)).toThrow(/not after now/);
  });
});
