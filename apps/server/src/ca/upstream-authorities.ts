import { nodeCertificateFromDer } from '@sigil/spiffe';
import type { CaKey } from './ca-key.js';

/**
 * At most this many upstream roots are followed: a trust domain holds a few (the active key, the prepared one, old
 * ones not yet pruned, an upstream CA's roots); 32 leaves room for any rotation while bounding what an upstream
 * answer can add to every bundle of our trust domain (and to each journal row, which stores the set).
 */
export const MAX_UPSTREAM_ROOTS = 32;

/**
 * Checks a set of upstream X.509 authorities (DER) before it is stored or trusted; throws naming the first
 * problem: more than {@link MAX_UPSTREAM_ROOTS}, one that cannot be read, one that is not a self-signed CA
 * certificate (basicConstraints cA=true, issued by itself, its signature verifies with its own key), or none
 * unexpired at `now`. Returns the certificates as DER buffers.
 */
export function checkUpstreamRoots(roots: readonly Uint8Array[], now: Date): Buffer[] {
  if (roots.length === 0) throw new Error('x509_authorities: must hold at least one certificate');
  if (roots.length > MAX_UPSTREAM_ROOTS) {
    throw new Error(`x509_authorities: at most ${MAX_UPSTREAM_ROOTS} roots, got ${roots.length}`);
  }
  let unexpired = 0;
  const checked = roots.map((der, index) => {
    let certificate;
    try {
      certificate = nodeCertificateFromDer(der);
    } catch {
      throw new Error(`x509_authorities[${index}]: not a DER certificate`);
    }
    if (!certificate.ca)
      throw new Error(`x509_authorities[${index}]: is not a CA certificate (basicConstraints cA=false)`);
    if (!certificate.checkIssued(certificate) || !certificate.verify(certificate.publicKey)) {
      throw new Error(`x509_authorities[${index}]: is not a self-signed root`);
    }
    if (now.getTime() < new Date(certificate.validTo).getTime()) unexpired += 1;
    return certificate.raw;
  });
  if (unexpired === 0) throw new Error('x509_authorities: holds no unexpired certificate');
  return checked;
}

/**
 * The upstream roots this server already stores (every X.509 key the upstream Sigil server signed keeps the set it
 * last followed), DER, without duplicates: what the upstream server's TLS certificate must chain to. Empty before the
 * first such key (the bootstrap, where the local agent's bundle is trusted once).
 */
export function storedUpstreamRoots(
  rows: readonly Pick<CaKey, 'kind' | 'revoked' | 'upstreamAuthorities'>[],
): Buffer[] {
  const roots = new Set(
    rows.filter((row) => row.kind === 'x509' && !row.revoked).flatMap((row) => row.upstreamAuthorities ?? []),
  );
  return [...roots].map((root) => Buffer.from(root, 'base64'));
}

type PublishedRow = Pick<CaKey, 'kind' | 'certificateDer' | 'upstreamChain' | 'upstreamAuthorities'>;
type FollowedRow = Pick<CaKey, 'id' | 'kind' | 'state' | 'authorityId' | 'upstreamChain' | 'upstreamAuthorities'>;

/**
 * The X.509 authorities the bundle publishes for `rows` (already limited to the unrevoked, unexpired keys): a
 * self-signed CA itself; under an upstream CA (`--upstream-ca-cert`), that chain's root; under an upstream Sigil
 * server, the upstream trust bundle's X.509 authorities as last followed (when the key was signed, then every change
 * the top agent's Workload API delivered), less those expired by `now`. The chain root of such a key is one of
 * them when it is signed ({@link checkSignedCa}); a root the top server removes later leaves ours too.
 */
export function publishedX509Authorities(rows: readonly PublishedRow[], now: Date): Buffer[] {
  return rows
    .filter((row) => row.kind === 'x509')
    .flatMap((row) => {
      if (row.upstreamAuthorities !== null) {
        return row.upstreamAuthorities
          .map((der) => Buffer.from(der, 'base64'))
          .filter((der) => now.getTime() < new Date(nodeCertificateFromDer(der).validTo).getTime());
      }
      const root = row.upstreamChain?.at(-1);
      return root === undefined ? [row.certificateDer!] : [Buffer.from(root, 'base64')];
    });
}

/** What following a new upstream root set changes in the journal. */
export interface UpstreamAuthoritiesChange {
  /** The journal rows (X.509 keys signed by the upstream Sigil server) whose stored set differs. */
  readonly rowIds: readonly string[];
  /** Roots (base64 DER) in the new set that no row held. */
  readonly added: readonly string[];
  /** Roots (base64 DER) some row held that the new set lacks. */
  readonly removed: readonly string[];
  /**
   * Authority IDs of the active or prepared keys whose chain root the new set lacks: the top server no longer
   * trusts the root they chain to, so what they sign stops verifying once the new set is published.
   */
  readonly orphaned: readonly string[];
}

/**
 * Compares the upstream bundle's X.509 authorities `roots` (base64 DER) with those stored on each key signed by the
 * upstream Sigil server (SPIRE's `SyncX509Roots`, with a removed root dropped at once rather than only a tainted
 * one: the Workload API carries no taint marks). Order and duplicates do not count as a change.
 */
export function diffUpstreamAuthorities(
  rows: readonly FollowedRow[],
  roots: readonly string[],
): UpstreamAuthoritiesChange {
  const wanted = new Set(roots);
  const followed = rows.filter((row) => row.kind === 'x509' && row.upstreamAuthorities !== null);
  const held = new Set(followed.flatMap((row) => row.upstreamAuthorities!));
  const sameAsWanted = (stored: readonly string[]): boolean => {
    const set = new Set(stored);
    return set.size === wanted.size && [...set].every((root) => wanted.has(root));
  };
  return {
    rowIds: followed.filter((row) => !sameAsWanted(row.upstreamAuthorities!)).map((row) => row.id),
    added: [...wanted].filter((root) => !held.has(root)),
    removed: [...held].filter((root) => !wanted.has(root)),
    orphaned: followed
      .filter((row) => row.state !== 'old' && !wanted.has(row.upstreamChain!.at(-1)!))
      .map((row) => row.authorityId),
  };
}
