import { X509Certificate } from 'node:crypto';
import { type PeerCertificate } from 'node:tls';
import { type BundleSource, type SpiffeId, type TrustBundle, idFromCertificate, verifyX509Svid } from '@sigil/spiffe';
import { type Authorizer } from './authorizer.js';
import { WorkloadApiError } from './errors.js';

/** A TLS peer whose X.509-SVID was verified and authorized. */
export interface VerifiedPeer {
  readonly spiffeId: SpiffeId;
  /** Leaf first, the trusted root of the peer's trust domain last. */
  readonly verifiedChain: readonly X509Certificate[];
}

function rejected(message: string, cause?: unknown): WorkloadApiError {
  return new WorkloadApiError('ERR_PEER_REJECTED', message, cause === undefined ? {} : { cause });
}

/**
 * The DER certificates of a peer's chain, leaf first, from Node's detailed peer certificate (`getPeerCertificate(true)`
 * or the argument of `checkServerIdentity`). Every certificate is only a candidate: the verifiers check signatures.
 */
export function peerChainDer(peer: PeerCertificate | undefined): Buffer[] {
  const chain: Buffer[] = [];
  const seen = new Set<string>();
  let current: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = peer;
  while (current?.raw !== undefined && !seen.has(current.fingerprint256)) {
    seen.add(current.fingerprint256);
    chain.push(current.raw);
    current = current.issuerCertificate;
  }
  return chain;
}

function authorize(spiffeId: SpiffeId, chain: readonly X509Certificate[], authorizer: Authorizer): VerifiedPeer {
  let allowed: unknown;
  try {
    allowed = authorizer(spiffeId, chain);
  } catch (error) {
    throw rejected(`peer ${spiffeId.toString()} is not authorized: the authorizer failed`, error);
  }
  if (allowed !== true) throw rejected(`peer ${spiffeId.toString()} is not authorized`);
  return { spiffeId, verifiedChain: chain };
}

/**
 * Verifies a peer's X.509-SVID with `verifyX509Svid` against the bundle of the peer's trust domain, then asks the
 * authorizer. Used on the server side, where the check may be asynchronous.
 *
 * @throws WorkloadApiError `ERR_PEER_REJECTED` with the failed rule in the message and the SpiffeError as cause.
 */
export async function verifyPeer(
  chain: readonly Uint8Array[],
  source: BundleSource,
  authorizer: Authorizer,
  now: Date,
): Promise<VerifiedPeer> {
  if (chain.length === 0) throw rejected('peer presented no certificate');
  let verified: Awaited<ReturnType<typeof verifyX509Svid>>;
  try {
    verified = await verifyX509Svid(
      chain.map((der) => new Uint8Array(der)),
      source,
      { now },
    );
  } catch (error) {
    throw rejected(`peer x509 svid rejected: ${(error as Error).message}`, error);
  }
  const certificates = verified.verifiedChain.map((cert) => new X509Certificate(Buffer.from(cert.rawData)));
  return authorize(verified.spiffeId, certificates, authorizer);
}

function checkValidity(cert: X509Certificate, role: string, now: Date): void {
  if (now.getTime() < Date.parse(cert.validFrom)) throw rejected(`peer ${role} is not valid before ${cert.validFrom}`);
  if (now.getTime() > Date.parse(cert.validTo)) throw rejected(`peer ${role} expired at ${cert.validTo}`);
}

function isIssuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  return child.checkIssued(issuer) && child.verify(issuer.publicKey);
}

const rootCache = new WeakMap<TrustBundle, X509Certificate[]>();

function rootsOf(bundle: TrustBundle): X509Certificate[] {
  let roots = rootCache.get(bundle);
  if (roots === undefined) {
    roots = bundle.x509AuthoritiesDer().map((der) => new X509Certificate(Buffer.from(der)));
    rootCache.set(bundle, roots);
  }
  return roots;
}

/**
 * The synchronous check of a server's X.509-SVID, for `checkServerIdentity`, which Node calls inside the handshake
 * and which cannot wait for a promise. OpenSSL has already validated the chain (RFC 5280: signatures, validity, CA
 * constraints, path length, critical extensions, key usage for TLS) up to one of the X.509 authorities of any trust
 * domain the source holds. This adds the SPIFFE rules OpenSSL does not know: the leaf is an X.509-SVID (one URI SAN
 * holding a SPIFFE ID with a path, not a CA), and it chains, with every signature checked again by Node's crypto, to
 * an authority of the bundle of the leaf's own trust domain. Without that, a federated trust domain's CA could issue
 * certificates in our trust domain's name. Then the authorizer decides.
 *
 * @throws WorkloadApiError `ERR_PEER_REJECTED` naming the failed rule.
 */
export function verifyPeerSync(
  chain: readonly Uint8Array[],
  source: BundleSource,
  authorizer: Authorizer,
  now: Date,
): VerifiedPeer {
  const [leafDer] = chain;
  if (leafDer === undefined) throw rejected('peer presented no certificate');
  let spiffeId: SpiffeId;
  try {
    spiffeId = idFromCertificate(new Uint8Array(leafDer));
  } catch (error) {
    throw rejected(`peer x509 svid rejected: leaf ${(error as Error).message}`, error);
  }
  if (spiffeId.isRoot()) throw rejected(`peer x509 svid rejected: leaf spiffe id ${spiffeId.toString()} has no path`);
  const [leaf, ...pool] = chain.map((der) => new X509Certificate(Buffer.from(der))) as [
    X509Certificate,
    ...X509Certificate[],
  ];
  if (leaf.ca) throw rejected('peer x509 svid rejected: leaf certificate must not be a ca');
  checkValidity(leaf, 'leaf certificate', now);

  let bundle: TrustBundle;
  try {
    bundle = source.getBundleForTrustDomain(spiffeId.trustDomain);
  } catch (error) {
    throw rejected(`peer x509 svid rejected: ${(error as Error).message}`, error);
  }
  const roots = rootsOf(bundle);
  const verifiedChain = [leaf];
  let current = leaf;
  let candidates = pool;
  for (;;) {
    const root = roots.find((candidate) => isIssuedBy(current, candidate));
    if (root !== undefined) {
      checkValidity(root, 'root certificate', now);
      verifiedChain.push(root);
      return authorize(spiffeId, verifiedChain, authorizer);
    }
    const next = candidates.find((candidate) => candidate.ca && isIssuedBy(current, candidate));
    if (next === undefined) {
      throw rejected(
        `peer x509 svid rejected: certificate chain does not chain to an authority of ${spiffeId.trustDomain.name}`,
      );
    }
    checkValidity(next, 'intermediate certificate', now);
    verifiedChain.push(next);
    candidates = candidates.filter((candidate) => candidate !== next);
    current = next;
  }
}
