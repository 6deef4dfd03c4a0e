/**
 * Internal: signs a certificate with @peculiar/x509 from fully decided fields, then re-validates the result (SPIRE's
 * template → sign → re-validate): issuer and public key copied byte for byte, signature verifying under the issuer.
 */
import type { webcrypto } from 'node:crypto';
import { certificateParts } from './der-reader.js';
import { PkiError } from './errors.js';
import { keyTypeOf, signingAlgorithmFor } from './keys.js';
import { loadX509 } from '@sigil/spiffe';
import type { x509 } from './x509-lib.js';

/** Everything that goes into one certificate. */
export interface CertificateFields {
  readonly serial: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: x509.Name;
  /** The issuer Name DER, copied into the certificate. */
  readonly issuerDer: Uint8Array;
  /** The subject's SubjectPublicKeyInfo DER, copied into the certificate. */
  readonly spkiDer: Uint8Array;
  readonly extensions: readonly x509.Extension[];
  readonly signingKey: webcrypto.CryptoKey;
  /** The issuer's SubjectPublicKeyInfo DER, to check the new signature. */
  readonly issuerSpkiDer: Uint8Array;
}

/** A signed certificate, parsed and as DER. */
export interface SignedCertificate {
  readonly certificate: x509.X509Certificate;
  readonly der: Uint8Array;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** Builds, signs and re-validates a certificate. */
export async function signCertificate(fields: CertificateFields): Promise<SignedCertificate> {
  const { Name, X509Certificate, X509CertificateGenerator } = loadX509();
  const signed = await X509CertificateGenerator.create({
    serialNumber: Buffer.from(fields.serial).toString('hex'),
    notBefore: fields.notBefore,
    notAfter: fields.notAfter,
    subject: fields.subject,
    issuer: new Name(fields.issuerDer),
    publicKey: fields.spkiDer,
    signingKey: fields.signingKey,
    signingAlgorithm: signingAlgorithmFor(keyTypeOf(fields.signingKey)),
    extensions: [...fields.extensions],
  });
  const der = new Uint8Array(signed.rawData);
  const parts = certificateParts(der);
  if (!bytesEqual(parts.issuer, fields.issuerDer)) {
    // @peculiar/x509 re-encodes the Name; an issuer subject in an unusual encoding would not survive that.
    throw new PkiError('ERR_CA_INVALID', 'ca.certificate: subject cannot be copied byte for byte into the issuer');
  }
  if (!bytesEqual(parts.spki, fields.spkiDer)) {
    throw new PkiError('ERR_KEY_INVALID', 'publicKey: cannot be copied byte for byte into the certificate');
  }
  const certificate = new X509Certificate(der);
  if (!(await certificate.verify({ publicKey: fields.issuerSpkiDer, signatureOnly: true }))) {
    throw new PkiError(
      'ERR_CA_INVALID',
      'ca.privateKey: does not match the ca certificate (signature does not verify)',
    );
  }
  return { certificate, der };
}
