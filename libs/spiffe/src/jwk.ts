import { createPublicKey, type KeyObject } from 'node:crypto';
import type { JwtSvidAlgorithm } from './jwt-svid.js';

/**
 * A public JWT authority key as carried in a SPIFFE bundle (SPIFFE_Trust_Domain_and_Bundle.md §4.2): EC with
 * `crv`/`x`/`y` or RSA with `n`/`e`, without private members, `use` or `kid` (the bundle keys it by `kid`).
 */
export type JwtAuthorityKey =
  | { readonly kty: 'EC'; readonly crv: string; readonly x: string; readonly y: string }
  | { readonly kty: 'RSA'; readonly n: string; readonly e: string };

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'];

/** The key types JWT-SVID algorithms can use (JWT-SVID.md §2.1: RS*, PS*, ES*). */
export function isJwtKeyType(kty: unknown): kty is 'EC' | 'RSA' {
  return kty === 'EC' || kty === 'RSA';
}

/**
 * Checks that `jwk` is a usable EC or RSA public key and returns only its public parameters. Returns the broken rule
 * as a string on failure, so each caller raises its own error code and context.
 */
export function normaliseJwtAuthorityKey(jwk: unknown): JwtAuthorityKey | string {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return 'key must be a JSON object';
  const fields = jwk as Record<string, unknown>;
  if (!isJwtKeyType(fields.kty)) return `key type (kty) must be EC or RSA, got ${JSON.stringify(fields.kty)}`;
  for (const member of PRIVATE_MEMBERS) {
    if (member in fields) return `key must be a public key (private member "${member}" is present)`;
  }
  const key: JwtAuthorityKey =
    fields.kty === 'EC'
      ? { kty: 'EC', crv: fields.crv as string, x: fields.x as string, y: fields.y as string }
      : { kty: 'RSA', n: fields.n as string, e: fields.e as string };
  for (const [name, value] of Object.entries(key)) {
    if (typeof value !== 'string' || value.length === 0) return `key member "${name}" must be a non-empty string`;
  }
  try {
    // Node checks the curve name and that the point lies on it, or the RSA modulus and exponent.
    publicKeyObject(key);
  } catch (error) {
    return `key is not a valid ${key.kty} public key (${error instanceof Error ? error.message : String(error)})`;
  }
  return key;
}

const EC_ALGORITHMS: Readonly<Record<string, JwtSvidAlgorithm>> = {
  'P-256': 'ES256',
  'P-384': 'ES384',
  'P-521': 'ES512',
};

/**
 * The JWS algorithm a JWT authority key signs with: ES256/ES384/ES512 by curve, RS256 for RSA (what SPIRE signs
 * with, and what its OIDC discovery provider publishes as `alg`). Undefined for a curve no JWT-SVID algorithm uses.
 */
export function jwtAlgorithmOf(key: JwtAuthorityKey): JwtSvidAlgorithm | undefined {
  return key.kty === 'RSA' ? 'RS256' : EC_ALGORITHMS[key.crv];
}

/** Imports a normalised JWT authority key as a Node public key. */
export function publicKeyObject(key: JwtAuthorityKey): KeyObject {
  return createPublicKey({ key: { ...key }, format: 'jwk' });
}

/** The public key parameters of a DER SubjectPublicKeyInfo as a JWK (kty plus crv/x/y or n/e). */
export function spkiToJwk(spki: Uint8Array): Record<string, string> {
  const jwk = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ format: 'jwk' });
  return Object.fromEntries(
    Object.entries(jwk).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
  );
}

/** True when both keys have the same public parameters. */
export function jwtAuthorityKeysEqual(a: JwtAuthorityKey, b: JwtAuthorityKey): boolean {
  return JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
}
