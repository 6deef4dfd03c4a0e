/**
 * Object identifiers and pre-encoded AlgorithmIdentifiers used by the fast path, encoded once at module load.
 */
import { DER_NULL, derOid, derSequence } from './der.js';

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
