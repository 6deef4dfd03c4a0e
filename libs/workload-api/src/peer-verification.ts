import { type X509Certificate } from 'node:crypto';
import {
  type BundleSource,
  type SpiffeId,
  type VerifiedX509Svid,
  verifyX509SvidSync,
  nodeCertificateFromDer,
} from '@sigil/spiffe';
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
 * The synchronous check of a peer's X.509-SVID, for `checkServerIdentity`, which Node calls inside the handshake and
 * which cannot wait for a promise: `verifyX509SvidSync` (the one rule set of `verifyX509Svid`: the leaf rules, every
 * intermediate a CA with keyCertSign, signatures, validity at `now`, path length, critical extensions) against the
 * bundle of the peer's own trust domain, then the authorizer. OpenSSL has validated the chain before, up to an
 * authority of any trust domain held, but it knows neither the SPIFFE leaf rules nor per-trust-domain bundles:
 * without this, a federated trust domain's CA could issue certificates in our trust domain's name, and a leaf with
 * keyCertSign would pass.
 *
 * @throws WorkloadApiError `ERR_PEER_REJECTED` with the failed rule in the message and the SpiffeError as cause.
 */
export function verifyPeerSync(
  chain: readonly Uint8Array[],
  source: BundleSource,
  authorizer: Authorizer,
  now: Date,
): VerifiedPeer {
  if (chain.length === 0) throw rejected('peer presented no certificate');
  let verified: VerifiedX509Svid;
  try {
    verified = verifyX509SvidSync(
      chain.map((der) => new Uint8Array(der)),
      source,
      { now },
    );
  } catch (error) {
    throw rejected(`peer x509 svid rejected: ${(error as Error).message}`, error);
  }
  const certificates = verified.verifiedChain.map((cert) => nodeCertificateFromDer(new Uint8Array(cert.rawData)));
  return authorize(verified.spiffeId, certificates, authorizer);
}

/**
 * {@link verifyPeerSync} behind a promise, for the server side, where the check may be asynchronous. Same rules,
 * same errors.
 *
 * @throws WorkloadApiError `ERR_PEER_REJECTED` with the failed rule in the message and the SpiffeError as cause.
 */
export async function verifyPeer(
  chain: readonly Uint8Array[],
  source: BundleSource,
  authorizer: Authorizer,
  now: Date,
): Promise<VerifiedPeer> {
  return verifyPeerSync(chain, source, authorizer, now);
}
