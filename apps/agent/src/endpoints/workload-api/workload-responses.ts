import { type JsonObject, type MessageInitShape } from '@bufbuild/protobuf';
import { type SpiffeId, type TrustBundle, type TrustDomain } from '@sigil/spiffe';
import {
  type JWTBundlesResponseSchema,
  type X509BundlesResponseSchema,
  type X509SVIDResponseSchema,
  type X509SVIDSchema,
} from '@sigil/workload-api';

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
  /** Undefined while the SVID is still being signed. */
  readonly x509Svid: CachedX509Svid | undefined;
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
