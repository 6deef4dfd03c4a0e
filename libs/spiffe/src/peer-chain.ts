import { type PeerCertificate } from 'node:tls';

/**
 * Most certificates an X.509-SVID chain may hold (the leaf and its intermediates). Verification refuses a longer
 * chain before it checks any signature: building a path costs a signature check per candidate issuer, and a TLS
 * peer chooses the candidates, so an unbounded chain lets any client stall the process that verifies it.
 */
export const MAX_X509_SVID_CHAIN_LENGTH = 10;

/**
 * The DER certificates a TLS peer presented, leaf first, from Node's detailed peer certificate
 * (`getPeerCertificate(true)`, or the argument of `checkServerIdentity`). Collects at most one more than
 * {@link MAX_X509_SVID_CHAIN_LENGTH}, so that an overlong chain is refused by verification, not cut to a length that
 * might verify. Every certificate is only a candidate: the verifier checks signatures.
 */
export function peerCertificateChain(peer: PeerCertificate | undefined): Uint8Array[] {
  const chain: Uint8Array[] = [];
  const seen = new Set<string>();
  let current: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = peer;
  while (current?.raw !== undefined && !seen.has(current.fingerprint256)) {
    if (chain.length > MAX_X509_SVID_CHAIN_LENGTH) break;
    seen.add(current.fingerprint256);
    chain.push(new Uint8Array(current.raw));
    current = current.issuerCertificate;
  }
  return chain;
}
