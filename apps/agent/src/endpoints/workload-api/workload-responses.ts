import { type JsonObject, type MessageInitShape } from '@bufbuild/protobuf';
import { type SpiffeId, type TrustBundle, type TrustDomain } from '@sigil/spiffe';
import {
  type JWTBundlesResponseSchema,
  type X509BundlesResponseSchema,
  type X509SVIDResponseSchema,
  type X509SVIDSchema,
} from '@sigil/workload-api/service';

/** The X.509-SVID of one identity as the cache holds it. */
export interface CachedX509Svid {
  /** DER certificates, leaf first, then intermediates (never the root). */
  readonly chain: readonly Uint8Array[];
  /** Unencrypted PKCS#8 DER private key of the leaf. */
  readonly privateKey: Uint8Array;
}

/** One identity a workload is entitled to: a registration entry whose selectors the workload has. */
export interface WorkloadIdentity {
  readonly entryId: string;
  readonly spiffeId: SpiffeId;
  /** Operator-set hint (`entry create --hint`); empty when none. */
  readonly hint: string;
  /** Trust domains whose bundles the workload receives because of this entry (`--federates-with`). */
  readonly federatesWith: readonly TrustDomain[];
  /** Undefined while the SVID is still being signed, or once the one held expired (see `expired`). */
  readonly x509Svid: CachedX509Svid | undefined;
  /** Set when the SVID held expired before the agent could renew it: it is never served past its expiry. */
  readonly expired?: ExpiredX509Svid | undefined;
}

/** An X509-SVID the agent still holds but may no longer serve. */
export interface ExpiredX509Svid {
  readonly notAfter: Date;
  /** Why it was not renewed in time (the last signing failure), when known. */
  readonly reason: string | undefined;
}

/** What the Workload API and SDS may answer a caller with, by {@link servableIdentities}. */
export type ServableIdentities =
  | { readonly kind: 'ready'; readonly identities: WorkloadIdentity[] }
  | { readonly kind: 'pending' }
  | { readonly kind: 'expired'; readonly message: string };

/**
 * The one rule for serving X509-SVIDs (FetchX509SVID and SDS): an expired SVID is never served. While at least one
 * of the caller's SVIDs is valid, the caller gets the valid ones (once none is still being signed: every answer is
 * complete); once none is valid and at least one has expired, the answer is `UNAVAILABLE` with `message`, which says
 * which expired when and why they were not renewed. Identities is the caller's full list, in the cache's order.
 */
export function servableIdentities(identities: readonly WorkloadIdentity[]): ServableIdentities {
  const valid = identities.filter((identity) => identity.x509Svid !== undefined);
  const expired = identities.filter((identity) => identity.x509Svid === undefined && identity.expired !== undefined);
  if (valid.length === 0 && expired.length > 0) return { kind: 'expired', message: expiredMessage(expired) };
  if (valid.length + expired.length < identities.length) return { kind: 'pending' };
  return { kind: 'ready', identities: valid };
}

function expiredMessage(expired: readonly WorkloadIdentity[]): string {
  const first = expired[0] as WorkloadIdentity & { expired: ExpiredX509Svid };
  const more = expired.length > 1 ? ` (and ${expired.length - 1} more)` : '';
  const reason = first.expired.reason === undefined ? '' : `: ${first.expired.reason}`;
  return (
    `no valid X509-SVID: the one of ${first.spiffeId.toString()}${more} expired at ` +
    `${first.expired.notAfter.toISOString()} and the agent could not renew it${reason}`
  );
}

/** The trust bundles the agent holds. */
export interface AgentBundles {
  /** The bundle of the agent's own trust domain. */
  readonly own: TrustBundle;
  /** Bundles of federated trust domains. */
  readonly federated: readonly TrustBundle[];
}

type X509SvidMessage = MessageInitShape<typeof X509SVIDSchema>;

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/**
 * The identities to answer with, in the cache's order (the first is the default identity, Workload API §5.3),
 * keeping only the first of several with the same non-empty hint: hints must be unique within a response (§5.2.1,
 * §6.2.1). `onDuplicate` is told about each one dropped.
 */
export function uniqueByHint<T extends Pick<WorkloadIdentity, 'hint'>>(
  identities: readonly T[],
  onDuplicate: (dropped: T) => void = () => undefined,
): T[] {
  const seen = new Set<string>();
  return identities.filter((identity) => {
    if (identity.hint === '') return true;
    if (seen.has(identity.hint)) {
      onDuplicate(identity);
      return false;
    }
    seen.add(identity.hint);
    return true;
  });
}

/**
 * The federated bundles a workload receives: those of the trust domains its entries federate with, as SPIRE does,
 * never the agent's own trust domain and never a trust domain the agent has no bundle for.
 */
export function federatedBundlesFor(
  identities: readonly Pick<WorkloadIdentity, 'federatesWith'>[],
  bundles: AgentBundles,
): TrustBundle[] {
  const wanted = new Set(identities.flatMap((identity) => identity.federatesWith.map((td) => td.name)));
  wanted.delete(bundles.own.trustDomain.name);
  return bundles.federated.filter((bundle) => wanted.has(bundle.trustDomain.name));
}

/** Map key of a bundle in every Workload API response: the SPIFFE ID of its trust domain, `spiffe://<td>`. */
export function bundleKey(bundle: TrustBundle): string {
  return bundle.trustDomain.idString();
}

/**
 * `X509SVIDResponse` for identities that all have their SVID: DER chain leaf first, PKCS#8 key, the concatenated DER
 * CA certificates of the agent's trust domain, the hint, and the federated bundles keyed `spiffe://<td>`.
 */
export function x509SvidResponse(
  identities: readonly WorkloadIdentity[],
  bundles: AgentBundles,
): MessageInitShape<typeof X509SVIDResponseSchema> {
  const ownBundle = bundles.own.x509Der();
  const svids = identities.map((identity): X509SvidMessage => {
    if (identity.x509Svid === undefined) throw new Error(`entry ${identity.entryId}: X.509-SVID not signed yet`);
    return {
      spiffeId: identity.spiffeId.toString(),
      x509Svid: concat(identity.x509Svid.chain),
      x509SvidKey: identity.x509Svid.privateKey,
      bundle: ownBundle,
      hint: identity.hint,
    };
  });
  const federatedBundles: Record<string, Uint8Array> = {};
  for (const bundle of federatedBundlesFor(identities, bundles)) federatedBundles[bundleKey(bundle)] = bundle.x509Der();
  return { svids, federatedBundles };
}

/** `X509BundlesResponse`: the agent's own bundle and the federated ones, concatenated DER keyed `spiffe://<td>`. */
export function x509BundlesResponse(
  identities: readonly WorkloadIdentity[],
  bundles: AgentBundles,
): MessageInitShape<typeof X509BundlesResponseSchema> {
  const result: Record<string, Uint8Array> = { [bundleKey(bundles.own)]: bundles.own.x509Der() };
  for (const bundle of federatedBundlesFor(identities, bundles)) result[bundleKey(bundle)] = bundle.x509Der();
  return { bundles: result };
}

/**
 * A bundle's JWT authorities as a standard JWKS document (RFC 7517), the form `FetchJWTBundles` returns: only
 * `jwt-svid` keys, each with its `kid` (go-spiffe and py-spiffe require it), and no SPIFFE-specific members, as
 * SPIRE marshals it for workloads.
 */
export function jwtBundleJwks(bundle: TrustBundle): Uint8Array {
  const keys = [...bundle.jwtAuthorities].map(([kid, key]) => ({ ...key, kid, use: 'jwt-svid' }));
  return new TextEncoder().encode(JSON.stringify({ keys }));
}

/** `JWTBundlesResponse`: JWKS JSON of the agent's own and the federated trust domains, keyed `spiffe://<td>`. */
export function jwtBundlesResponse(
  identities: readonly WorkloadIdentity[],
  bundles: AgentBundles,
): MessageInitShape<typeof JWTBundlesResponseSchema> {
  const result: Record<string, Uint8Array> = { [bundleKey(bundles.own)]: jwtBundleJwks(bundles.own) };
  for (const bundle of federatedBundlesFor(identities, bundles)) result[bundleKey(bundle)] = jwtBundleJwks(bundle);
  return { bundles: result };
}

/**
 * JWT claims for `ValidateJWTSVIDResponse.claims` (a `google.protobuf.Struct`). `aud` is always a list: RFC 7519
 * allows a single string for one audience, but SPIRE has always answered with an array and clients rely on it.
 */
export function claimsStruct(claims: Readonly<Record<string, unknown>>): JsonObject {
  const json = JSON.parse(JSON.stringify(claims)) as JsonObject;
  if (typeof json['aud'] === 'string') json['aud'] = [json['aud']];
  return json;
}
