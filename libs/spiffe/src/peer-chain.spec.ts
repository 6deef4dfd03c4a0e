import { type PeerCertificate } from 'node:tls';
import { webcrypto } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TrustBundle } from './bundle.js';
import { MAX_X509_SVID_CHAIN_LENGTH, peerCertificateChain } from './peer-chain.js';
import { TrustDomain } from './trust-domain.js';
import { verifyX509SvidSync } from './x509-svid.js';
import { x509 } from './x509-provider.js';

const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const validity = { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000) };
const generate = () =>
  webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']) as Promise<webcrypto.CryptoKeyPair>;

/**
 * The chain a hostile TLS peer sends to make path building expensive: a leaf and `length - 1` CA certificates that
 * all share one subject (so each is a candidate issuer of every other), each signed by the next one's key.
 */
async function sameSubjectChain(length: number): Promise<Uint8Array[]> {
  const keys = await Promise.all(Array.from({ length: length + 1 }, generate));
  const ca = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
  ];
  const chain: Uint8Array[] = [];
  for (let i = 0; i < length; i++) {
    const leaf = i === 0;
    const certificate = await x509.X509CertificateGenerator.create({
      ...validity,
      serialNumber: (i + 1).toString(16).padStart(2, '0'),
      subject: leaf ? 'CN=leaf' : 'CN=S',
      issuer: 'CN=S',
      publicKey: keys[i]!.publicKey,
      signingKey: keys[i + 1]!.privateKey,
      signingAlgorithm: algorithm,
      extensions: leaf
        ? [
            new x509.SubjectAlternativeNameExtension([{ type: 'url', value: 'spiffe://example.org/attacker' }], true),
            new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          ]
        : ca,
    });
    chain.push(new Uint8Array(certificate.rawData));
  }
  return chain;
}

describe('X.509-SVID chain length', () => {
  it('refuses a chain longer than the limit before checking any signature', async () => {
    const chain = await sameSubjectChain(MAX_X509_SVID_CHAIN_LENGTH + 1);
    const bundle = TrustBundle.create(TrustDomain.parse('example.org'), { x509Authorities: [chain.at(-1)!] });
    expect(() => verifyX509SvidSync(chain, bundle)).toThrow(
      `certificate chain holds more than ${MAX_X509_SVID_CHAIN_LENGTH} certificates`,
    );
    // At the limit the same chain (without the root, which is in the bundle) verifies.
    const verified = verifyX509SvidSync(chain.slice(0, MAX_X509_SVID_CHAIN_LENGTH), bundle);
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/attacker');
    expect(verified.verifiedChain).toHaveLength(MAX_X509_SVID_CHAIN_LENGTH + 1);
  });

  it('collects at most one certificate more than the limit from a TLS peer, and stops at a loop', () => {
    const peers: (PeerCertificate & { issuerCertificate?: PeerCertificate })[] = Array.from({ length: 30 }, (_, i) => ({
      raw: Buffer.from([i]),
      fingerprint256: `fp${i}`,
    })) as never;
    peers.forEach((peer, i) => (peer.issuerCertificate = peers[i + 1]));
    expect(peerCertificateChain(peers[0]).map((der) => der[0])).toEqual(
      Array.from({ length: MAX_X509_SVID_CHAIN_LENGTH + 1 }, (_, i) => i),
    );
    peers[2]!.issuerCertificate = peers[0];
    expect(peerCertificateChain(peers[0]).map((der) => der[0])).toEqual([0, 1, 2]);
    expect(peerCertificateChain(undefined)).toEqual([]);
  });
});
