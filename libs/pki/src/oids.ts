/**
 * Object identifiers, and the signature AlgorithmIdentifiers as DER (encoded once at module load), of every
 * certificate and request Sigil writes or reads.
 */
import { DER_NULL, derOid, derSequence } from './der-writer.js';
import type { KeyType } from './keys.js';

/** Dotted object identifiers (RFC 5280, RFC 5758, RFC 4055, RFC 2985). */
export const Oid = {
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  sha256WithRsaEncryption: '1.2.840.113549.1.1.11',
  extensionRequest: '1.2.840.113549.1.9.14',
  organizationName: '2.5.4.10',
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/**
 * Signature AlgorithmIdentifiers as DER: ECDSA ones without parameters (RFC 5758 §3.2), RSA PKCS#1 v1.5 with NULL
 * parameters (RFC 4055 §5).
 */
export const ALGORITHM_IDENTIFIERS = {
  ecdsaWithSha256: derSequence(derOid(Oid.ecdsaWithSha256)),
  ecdsaWithSha384: derSequence(derOid(Oid.ecdsaWithSha384)),
  sha256WithRsaEncryption: derSequence(derOid(Oid.sha256WithRsaEncryption), DER_NULL),
} as const;

/** How a key of one type signs: the AlgorithmIdentifier written next to the signature and the hash `crypto.sign` uses. */
export interface SignatureProfile {
  readonly algorithmIdentifier: Buffer;
  readonly hash: 'sha256' | 'sha384';
}

/**
 * The signature each key type makes, as `signingAlgorithmFor` says for WebCrypto: ECDSA with SHA-256 (P-256) or
 * SHA-384 (P-384), RSA PKCS#1 v1.5 with SHA-256.
 */
export const SIGNATURE_PROFILES: Readonly<Record<KeyType, SignatureProfile>> = {
  'ec-p256': { algorithmIdentifier: ALGORITHM_IDENTIFIERS.ecdsaWithSha256, hash: 'sha256' },
  'ec-p384': { algorithmIdentifier: ALGORITHM_IDENTIFIERS.ecdsaWithSha384, hash: 'sha384' },
  'rsa-2048': { algorithmIdentifier: ALGORITHM_IDENTIFIERS.sha256WithRsaEncryption, hash: 'sha256' },
};
