import { createPublicKey } from 'node:crypto';
import { CliError } from '@sigil/runtime';
import { SpiffeError, TrustBundle, TrustDomain } from '@sigil/spiffe';

/** One relationship of a SPIRE `federation create|update -data` file, as the admin API takes it. */
export interface FederationDataItem {
  readonly trust_domain: string;
  readonly bundle_endpoint_url: string;
  readonly bundle_endpoint_profile: string;
  readonly endpoint_spiffe_id?: string;
  /** `trust_domain_bundle` as SPIFFE JWKS text, to store with `bundle set --format spiffe` first. */
  readonly bundleJwks?: string;
}

const RELATIONSHIP_KEYS = new Set([
  'trust_domain',
  'bundle_endpoint_url',
  'https_web',
  'https_spiffe',
  'trust_domain_bundle',
]);
const BUNDLE_KEYS = new Set(['trust_domain', 'x509_authorities', 'jwt_authorities', 'refresh_hint', 'sequence_number']);

function invalid(message: string): CliError {
  return new CliError(`--data: ${message}`, 1, 'invalid_argument');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The relationships of SPIRE's `federation create|update -data` JSON (`{"federation_relationships": [...]}`, each with
 * `trust_domain`, `bundle_endpoint_url`, one of `https_web: {}` or `https_spiffe: {"endpoint_spiffe_id": …}`, and an
 * optional `trust_domain_bundle` in SPIRE's bundle form: `x509_authorities[].asn1` and `jwt_authorities[].public_key`
 * as base64 DER, `key_id`, `refresh_hint`, `sequence_number`). The server checks the values and names the field.
 */
export function parseFederationData(data: unknown): FederationDataItem[] {
  const list = isObject(data) ? data['federation_relationships'] : undefined;
  if (!Array.isArray(list) || list.length === 0) {
    throw invalid('"federation_relationships" must be a list of at least one relationship');
  }
  return list.map((raw, index) => parseRelationship(raw, `federation_relationships[${index}]`));
}

function parseRelationship(raw: unknown, where: string): FederationDataItem {
  if (!isObject(raw)) throw invalid(`${where}: must be an object`);
  for (const key of Object.keys(raw)) {
    if (!RELATIONSHIP_KEYS.has(key)) throw invalid(`${where}: unknown key ${JSON.stringify(key)}`);
  }
  const text = (key: string, value: unknown): string => {
    if (typeof value !== 'string' || value === '') throw invalid(`${where}.${key}: must be a non-empty string`);
    return value;
  };
  const trustDomain = text('trust_domain', raw['trust_domain']);
  const base = {
    trust_domain: trustDomain,
    bundle_endpoint_url: text('bundle_endpoint_url', raw['bundle_endpoint_url']),
  };
  const web = raw['https_web'];
  const spiffe = raw['https_spiffe'];
  if ((web === undefined) === (spiffe === undefined)) {
    throw invalid(`${where}: must hold exactly one profile, https_web or https_spiffe`);
  }
  let profile: Pick<FederationDataItem, 'bundle_endpoint_profile' | 'endpoint_spiffe_id'>;
  if (web !== undefined) {
    if (!isObject(web) || Object.keys(web).length > 0) throw invalid(`${where}.https_web: must be an empty object`);
    profile = { bundle_endpoint_profile: 'https_web' };
  } else {
    if (!isObject(spiffe)) throw invalid(`${where}.https_spiffe: must be an object`);
    for (const key of Object.keys(spiffe)) {
      if (key !== 'endpoint_spiffe_id') throw invalid(`${where}.https_spiffe: unknown key ${JSON.stringify(key)}`);
    }
    profile = {
      bundle_endpoint_profile: 'https_spiffe',
      endpoint_spiffe_id: text('https_spiffe.endpoint_spiffe_id', spiffe['endpoint_spiffe_id']),
    };
  }
  const bundle = raw['trust_domain_bundle'];
  return {
    ...base,
    ...profile,
    ...(bundle !== undefined &&
      bundle !== null && { bundleJwks: bundleJwks(bundle, trustDomain, `${where}.trust_domain_bundle`) }),
  };
}

/** SPIRE's bundle message (types.Bundle) as SPIFFE JWKS text. */
function bundleJwks(raw: unknown, relationshipTrustDomain: string, where: string): string {
  if (!isObject(raw)) throw invalid(`${where}: must be an object`);
  for (const key of Object.keys(raw)) {
    if (!BUNDLE_KEYS.has(key)) throw invalid(`${where}: unknown key ${JSON.stringify(key)}`);
  }
  let trustDomain: TrustDomain;
  try {
    trustDomain = TrustDomain.parse(relationshipTrustDomain);
    if (raw['trust_domain'] !== undefined && !TrustDomain.parse(String(raw['trust_domain'])).equals(trustDomain)) {
      throw invalid(`${where}.trust_domain: must be the relationship's trust domain ${trustDomain.name}`);
    }
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`${where}.trust_domain: ${error.message}`);
    throw error;
  }
  const list = (key: string): Record<string, unknown>[] => {
    const value = raw[key] ?? [];
    if (!Array.isArray(value) || !value.every(isObject)) throw invalid(`${where}.${key}: must be a list of objects`);
    return value;
  };
  const der = (value: unknown, field: string): Buffer => {
    if (typeof value !== 'string' || !/^[A-Za-z0-9+/]+=*$/.test(value)) {
      throw invalid(`${field}: must be base64 DER`);
    }
    return Buffer.from(value, 'base64');
  };
  const x509Authorities = list('x509_authorities').map((authority, index) =>
    der(authority['asn1'], `${where}.x509_authorities[${index}].asn1`),
  );
  const jwtAuthorities = list('jwt_authorities').map((authority, index): [string, unknown] => {
    const field = `${where}.jwt_authorities[${index}]`;
    const kid = authority['key_id'];
    if (typeof kid !== 'string' || kid === '') throw invalid(`${field}.key_id: must be a non-empty string`);
    try {
      const key = createPublicKey({
        key: der(authority['public_key'], `${field}.public_key`),
        format: 'der',
        type: 'spki',
      });
      return [kid, key.export({ format: 'jwk' })];
    } catch (error) {
      if (error instanceof CliError) throw error;
      throw invalid(`${field}.public_key: not a public key (SubjectPublicKeyInfo DER): ${(error as Error).message}`);
    }
  });
  const counter = (key: string): number | undefined => {
    const value = raw[key];
    if (value === undefined || value === null) return undefined;
    const number = typeof value === 'string' ? Number(value) : value;
    if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0) {
      throw invalid(`${where}.${key}: must be a non-negative integer`);
    }
    return number === 0 ? undefined : number;
  };
  const refreshHintSeconds = counter('refresh_hint');
  const sequenceNumber = counter('sequence_number');
  try {
    return TrustBundle.create(trustDomain, {
      x509Authorities,
      jwtAuthorities,
      ...(refreshHintSeconds !== undefined && { refreshHintSeconds }),
      ...(sequenceNumber !== undefined && { sequenceNumber }),
    }).toJson();
  } catch (error) {
    if (error instanceof SpiffeError) throw invalid(`${where}: ${error.message}`);
    throw error;
  }
}
