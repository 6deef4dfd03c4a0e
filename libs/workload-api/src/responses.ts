import {
  type JwtSvid,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  type X509Svid,
  parseInsecureJwtSvid,
  parseX509Svid,
} from '@sigil/spiffe';
import type {
  JwtBundlesResponseMessage as JWTBundlesResponse,
  JwtSvidResponseMessage as JWTSVIDResponse,
  X509BundlesResponseMessage as X509BundlesResponse,
  X509SvidResponseMessage as X509SVIDResponse,
} from './workload-codec.js';
import { WorkloadApiError } from './errors.js';

/**
 * What `FetchX509SVID` delivers: the workload's X.509-SVIDs (the first is its default identity, SPIFFE_Workload_API.md
 * §5.3) and the X.509 bundles to verify peers with, its own trust domain's and the federated ones.
 */
export interface X509Context {
  /** At least one SVID; hints are unique among them. */
  readonly svids: readonly X509Svid[];
  /** X.509 authorities by trust domain. */
  readonly bundles: TrustBundleSet;
}

/** A JWT-SVID fetched from the Workload API, with the entry's hint when it has one. */
export interface WorkloadJwtSvid extends JwtSvid {
  /** The Workload API `hint`, if any. */
  readonly hint?: string;
}

function invalid(message: string, cause?: unknown): WorkloadApiError {
  return new WorkloadApiError('ERR_RESPONSE_INVALID', message, cause === undefined ? {} : { cause });
}

function trustDomainOfKey(key: string, field: string): TrustDomain {
  try {
    // Keys are `spiffe://<td>` (SPIFFE_Workload_API.md); TrustDomain.parse also takes a bare name, as go-spiffe does.
    return TrustDomain.parse(key);
  } catch (error) {
    throw invalid(`${field} key ${JSON.stringify(key)} is not a trust domain: ${(error as Error).message}`, error);
  }
}

function x509Bundle(trustDomain: TrustDomain, der: Uint8Array, field: string): TrustBundle {
  try {
    return TrustBundle.fromX509Der(trustDomain, der);
  } catch (error) {
    throw invalid(`${field}: ${(error as Error).message}`, error);
  }
}

/**
 * Parses an `X509SVIDResponse`: every SVID (chain + PKCS#8 key, checked to match), its trust domain's bundle from
 * the `bundle` field, and the `federated_bundles`. Of several SVIDs with the same non-empty hint only the first is
 * kept (hints are unique within a response, §5.2.1).
 *
 * @throws WorkloadApiError `ERR_RESPONSE_INVALID` naming the field.
 */
export async function parseX509Context(response: X509SVIDResponse): Promise<X509Context> {
  if (response.svids.length === 0) throw invalid('x509 svid response: svids must not be empty');
  const bundles = new TrustBundleSet();
  const svids: X509Svid[] = [];
  const hints = new Set<string>();
  for (const [i, message] of response.svids.entries()) {
    if (message.hint !== '' && hints.has(message.hint)) continue;
    hints.add(message.hint);
    let svid: X509Svid;
    try {
      svid = await parseX509Svid(message.x509Svid, message.x509SvidKey, { hint: message.hint });
    } catch (error) {
      throw invalid(`x509 svid response: svids[${i}]: ${(error as Error).message}`, error);
    }
    if (message.spiffeId !== '' && message.spiffeId !== svid.spiffeId.toString()) {
      throw invalid(
        `x509 svid response: svids[${i}]: spiffe_id ${JSON.stringify(message.spiffeId)} does not match` +
          ` the certificate's ${svid.spiffeId.toString()}`,
      );
    }
    svids.push(svid);
    const trustDomain = svid.spiffeId.trustDomain;
    if (!bundles.has(trustDomain)) {
      bundles.add(x509Bundle(trustDomain, message.bundle, `x509 svid response: svids[${i}].bundle`));
    }
  }
  for (const [key, der] of Object.entries(response.federatedBundles)) {
    const trustDomain = trustDomainOfKey(key, 'x509 svid response: federated_bundles');
    // The workload's own trust domain is described by the SVID's `bundle` field, never by a federated entry.
    if (bundles.has(trustDomain)) continue;
    bundles.add(x509Bundle(trustDomain, der, `x509 svid response: federated_bundles[${key}]`));
  }
  return { svids, bundles };
}

/**
 * Parses an `X509BundlesResponse`: concatenated DER CA certificates keyed by trust domain.
 *
 * @throws WorkloadApiError `ERR_RESPONSE_INVALID` naming the key.
 */
export function parseX509Bundles(response: X509BundlesResponse): TrustBundleSet {
  const bundles = new TrustBundleSet();
  for (const [key, der] of Object.entries(response.bundles)) {
    bundles.add(x509Bundle(trustDomainOfKey(key, 'x509 bundles response'), der, `x509 bundles response: ${key}`));
  }
  return bundles;
}

/**
 * The JWT authorities of one JWKS document. Lenient where the standards allow it, so that any Workload API works:
 * keys whose `use` is set to something other than `jwt-svid` are skipped, as are key types other than EC and RSA
 * (SPIFFE_Trust_Domain_and_Bundle.md §4.2); a key without `use` counts as a JWT authority (a plain RFC 7517 JWKS,
 * as go-spiffe reads it). Every JWT authority needs a `kid`.
 */
function jwtBundle(trustDomain: TrustDomain, json: Uint8Array, field: string): TrustBundle {
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (error) {
    throw invalid(`${field}: not a json document`, error);
  }
  const keys = (document as { keys?: unknown } | null)?.keys;
  if (typeof document !== 'object' || document === null || !Array.isArray(keys)) {
    throw invalid(`${field}: must be a jwks object with a keys array`);
  }
  const authorities: [string, unknown][] = [];
  for (const [i, key] of keys.entries()) {
    if (typeof key !== 'object' || key === null) throw invalid(`${field}: keys[${i}] must be a json object`);
    const { use, kty, kid } = key as Record<string, unknown>;
    if (use !== undefined && use !== 'jwt-svid') continue;
    if (kty !== 'EC' && kty !== 'RSA') continue;
    if (typeof kid !== 'string' || kid === '') throw invalid(`${field}: keys[${i}] must have a kid`);
    const { use: _use, ...parameters } = key as Record<string, unknown>;
    authorities.push([kid, parameters]);
  }
  try {
    return TrustBundle.create(trustDomain, { jwtAuthorities: authorities });
  } catch (error) {
    throw invalid(`${field}: ${(error as Error).message}`, error);
  }
}

/**
 * Parses a `JWTBundlesResponse`: JWKS JSON keyed by trust domain.
 *
 * @throws WorkloadApiError `ERR_RESPONSE_INVALID` naming the key.
 */
export function parseJwtBundles(response: JWTBundlesResponse): TrustBundleSet {
  const bundles = new TrustBundleSet();
  for (const [key, json] of Object.entries(response.bundles)) {
    bundles.add(jwtBundle(trustDomainOfKey(key, 'jwt bundles response'), json, `jwt bundles response: ${key}`));
  }
  return bundles;
}

/**
 * Parses a `JWTSVIDResponse`. The tokens come from the trusted local endpoint, so, as go-spiffe does, they are parsed
 * without checking their signature, but their claims, expiry and audience are checked.
 *
 * @throws WorkloadApiError `ERR_RESPONSE_INVALID` naming the SVID.
 */
export function parseJwtSvids(response: JWTSVIDResponse, audience: readonly string[]): WorkloadJwtSvid[] {
  if (response.svids.length === 0) throw invalid('jwt svid response: svids must not be empty');
  const hints = new Set<string>();
  const svids: WorkloadJwtSvid[] = [];
  for (const [i, message] of response.svids.entries()) {
    if (message.hint !== '' && hints.has(message.hint)) continue;
    hints.add(message.hint);
    let svid: JwtSvid;
    try {
      svid = parseInsecureJwtSvid(message.svid, audience);
    } catch (error) {
      throw invalid(`jwt svid response: svids[${i}]: ${(error as Error).message}`, error);
    }
    if (message.spiffeId !== '' && message.spiffeId !== svid.spiffeId.toString()) {
      throw invalid(
        `jwt svid response: svids[${i}]: spiffe_id ${JSON.stringify(message.spiffeId)} does not match` +
          ` the token's sub ${svid.spiffeId.toString()}`,
      );
    }
    svids.push(message.hint === '' ? svid : { ...svid, hint: message.hint });
  }
  return svids;
}
