import { type X509Certificate } from 'node:crypto';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';

/**
 * Decides whether a TLS peer whose X.509-SVID has been verified may connect (go-spiffe `tlsconfig.Authorizer`).
 * Called with the peer's SPIFFE ID and its verified chain (leaf first, the trusted root last); returning anything
 * but `true`, or throwing, refuses the peer. It runs inside the TLS handshake on the client, so it must be synchronous.
 */
export type Authorizer = (id: SpiffeId, verifiedChain: readonly X509Certificate[]) => boolean;

function toId(id: SpiffeId | string): SpiffeId {
  return typeof id === 'string' ? SpiffeId.parse(id) : id;
}

/** Authorizes any peer with a valid X.509-SVID of a trust domain the source holds a bundle for. */
export function authorizeAny(): Authorizer {
  return () => true;
}

/**
 * Authorizes exactly the peer `id`.
 *
 * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` when `id` is a string that is not a SPIFFE ID.
 */
export function authorizeId(id: SpiffeId | string): Authorizer {
  const expected = toId(id);
  return (actual) => actual.equals(expected);
}

/**
 * Authorizes any peer among `ids`.
 *
 * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` when one of `ids` is a string that is not a SPIFFE ID.
 */
export function authorizeOneOf(ids: Iterable<SpiffeId | string>): Authorizer {
  const allowed = new Set([...ids].map((id) => toId(id).toString()));
  return (actual) => allowed.has(actual.toString());
}

/**
 * Authorizes any peer of `trustDomain`.
 *
 * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID` when `trustDomain` is a string that is not a trust domain.
 */
export function authorizeMemberOf(trustDomain: TrustDomain | string): Authorizer {
  const expected = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
  return (actual) => actual.isMemberOf(expected);
}
