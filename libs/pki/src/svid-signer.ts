/**
 * {@link X509SvidSigner}: the X.509-SVID signer of `svid-leaf-signer.ts` made from a CA certificate, which is read and
 * checked here with @peculiar/x509 (`signingCaProfile`). The signing workers use the leaf signer alone.
 */
import type { KeyObject, webcrypto } from 'node:crypto';
import { loadX509 } from '@sigil/spiffe';
import { PkiError } from './errors.js';
import { signingCaProfile } from './signing-ca.js';
import type { SigningCaProfile } from './svid-profile.js';
import { SvidLeafSigner } from './svid-leaf-signer.js';
import type { x509 } from './x509-lib.js';

export type { FastSvidParams } from './svid-leaf-signer.js';

/** How to create a {@link X509SvidSigner}: the signing CA's certificate and private key. */
export interface X509SvidSignerOptions {
  /** The CA certificate (DER bytes or a parsed @peculiar/x509 certificate); its subject becomes every leaf's issuer. */
  readonly certificate: Uint8Array | x509.X509Certificate;
  /** The CA private key (WebCrypto or Node key): EC P-256, EC P-384 or RSA 2048. */
  readonly privateKey: webcrypto.CryptoKey | KeyObject;
}

function certificateOf(certificate: unknown): x509.X509Certificate {
  const { X509Certificate } = loadX509();
  if (certificate instanceof X509Certificate) return certificate;
  if (!(certificate instanceof Uint8Array)) {
    throw new PkiError('ERR_CA_INVALID', 'ca.certificate: must be der bytes or an X509Certificate');
  }
  try {
    return new X509Certificate(certificate);
  } catch (error) {
    throw new PkiError('ERR_CERTIFICATE_INVALID', 'ca.certificate: is not a valid x.509 certificate', { cause: error });
  }
}

/**
 * Reads and checks a signing CA certificate (DER or parsed) as {@link X509SvidSigner.create} does.
 *
 * @throws PkiError `ERR_CA_INVALID` or `ERR_CERTIFICATE_INVALID` naming the failed rule
 */
export function caProfileOf(certificate: Uint8Array | x509.X509Certificate): SigningCaProfile {
  return signingCaProfile(certificateOf(certificate));
}

/**
 * Signs X.509-SVIDs for one CA ({@link SvidLeafSigner}), made from the CA's certificate and private key with
 * {@link X509SvidSigner.create}.
 */
export class X509SvidSigner extends SvidLeafSigner {
  /**
   * Prepares a signer for one CA: checks the certificate is a CA (cA=true, keyCertSign), reads its subject, key
   * identifier, validity and trust domain, and checks that the private key is the certificate's.
   *
   * @throws PkiError `ERR_CA_INVALID`, `ERR_CERTIFICATE_INVALID` or `ERR_KEY_INVALID` naming the failed rule
   */
  static create(options: X509SvidSignerOptions): X509SvidSigner {
    const ca = caProfileOf(options.certificate);
    const { key, signature } = super.checkedKey(ca, options.privateKey);
    return new X509SvidSigner(key, signature, ca);
  }
}
