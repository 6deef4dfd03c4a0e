/**
 * Certificates from DER and PEM, parsed with @peculiar/x509: kept apart from `pem.ts`, which the signing workers
 * load (through the CSR parser) and which must not load @peculiar/x509 there.
 */
import { loadX509 } from '@sigil/spiffe';
import { DerCursor } from './der-reader.js';
import { DerTag } from './der-tags.js';
import { PkiError, messageOf } from './errors.js';
import { PEM_LABEL, pemBlocks } from './pem.js';
import type { x509 } from './x509-lib.js';

/**
 * Parses one DER certificate, refusing trailing data.
 *
 * @throws PkiError `ERR_CERTIFICATE_INVALID` naming `field`.
 */
export function certificateFromDer(der: Uint8Array, field = 'certificate'): x509.X509Certificate {
  if (!(der instanceof Uint8Array)) throw new PkiError('ERR_CERTIFICATE_INVALID', `${field}: must be a Uint8Array`);
  const top = DerCursor.over(der, { name: field, code: 'ERR_CERTIFICATE_INVALID' });
  top.expect(DerTag.SEQUENCE, 'certificate');
  top.finish('the input (one certificate)');
  try {
    return new (loadX509().X509Certificate)(der.slice());
  } catch (error) {
    throw new PkiError('ERR_CERTIFICATE_INVALID', `${field}: not a valid der certificate: ${messageOf(error)}`, {
      cause: error,
    });
  }
}

/**
 * Parses every block of a PEM text as a certificate; every block must be labelled "CERTIFICATE".
 *
 * @throws PkiError `ERR_PEM_INVALID` for PEM errors, `ERR_CERTIFICATE_INVALID` for a block that is not a certificate.
 */
export function certificatesFromPem(pem: string): x509.X509Certificate[] {
  return pemBlocks(pem).map((block, index) => {
    if (block.label !== PEM_LABEL.certificate) {
      throw new PkiError(
        'ERR_PEM_INVALID',
        `pem block ${index}: expected label "${PEM_LABEL.certificate}", found "${block.label}"`,
      );
    }
    return certificateFromDer(block.der, `certificates[${index}]`);
  });
}
