/**
 * Reading a signing CA certificate into the {@link SigningCaProfile} every leaf is built from, with @peculiar/x509:
 * kept apart from `svid-profile.ts`, which the signing workers load and which must not load @peculiar/x509 there
 * (they are handed the profile read here).
 */
import { loadX509, SpiffeId, type TrustDomain } from '@sigil/spiffe';
import { certificateParts } from './der-reader.js';
import { PkiError, messageOf } from './errors.js';
import { subjectKeyIdentifier, type SigningCaProfile } from './svid-profile.js';
import type { x509 } from './x509-lib.js';

/** True when the certificate is a CA certificate: basicConstraints present with cA=true (RFC 5280 §4.2.1.9). */
export function isCaCertificate(certificate: x509.X509Certificate): boolean {
  return certificate.getExtension(loadX509().BasicConstraintsExtension)?.ca === true;
}

/**
 * Reads and checks a signing CA certificate: basicConstraints cA=true and keyUsage with keyCertSign.
 *
 * @throws PkiError `ERR_CA_INVALID` naming the failed rule.
 */
export function signingCaProfile(certificate: x509.X509Certificate): SigningCaProfile {
  const { KeyUsageFlags, KeyUsagesExtension, SubjectKeyIdentifierExtension, X509Certificate } = loadX509();
  if (!(certificate instanceof X509Certificate)) {
    throw new PkiError('ERR_CA_INVALID', 'ca.certificate: must be an X509Certificate');
  }
  if (!isCaCertificate(certificate))
    throw new PkiError('ERR_CA_INVALID', 'ca.certificate: basicConstraints must have cA=true');
  const keyUsage = certificate.getExtension(KeyUsagesExtension);
  if (!keyUsage || (keyUsage.usages & KeyUsageFlags.keyCertSign) === 0) {
    throw new PkiError('ERR_CA_INVALID', 'ca.certificate: keyUsage must include keyCertSign');
  }
  const parts = certificateParts(new Uint8Array(certificate.rawData), {
    name: 'ca.certificate',
    code: 'ERR_CA_INVALID',
  });
  const ski = certificate.getExtension(SubjectKeyIdentifierExtension);
  const keyIdentifier = ski ? new Uint8Array(Buffer.from(ski.keyId, 'hex')) : subjectKeyIdentifier(parts.spki);
  return {
    subjectDer: parts.subject,
    spkiDer: parts.spki,
    keyIdentifier,
    notAfter: certificate.notAfter,
    trustDomain: spiffeTrustDomainOf(certificate),
  };
}

function spiffeTrustDomainOf(certificate: x509.X509Certificate): TrustDomain | undefined {
  const san = certificate.getExtension(loadX509().SubjectAlternativeNameExtension);
  const uri = san?.names.items.find((name) => name.type === 'url' && name.value.toLowerCase().startsWith('spiffe://'));
  if (uri === undefined) return undefined;
  try {
    return SpiffeId.parse(uri.value).trustDomain;
  } catch (error) {
    throw new PkiError('ERR_CA_INVALID', `ca.certificate: uri san is not a spiffe id: ${messageOf(error)}`, {
      cause: error,
    });
  }
}
