// @peculiar/x509 reads decorator metadata when it loads, so reflect-metadata must be imported first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { loadX509 } from './lazy-modules.js';

// The one setup (Node's WebCrypto as the provider) is loadX509's; the static import above is the same module instance.
loadX509();

export { x509 };

/**
 * The authority IDs that issued a certificate chain (leaf first): the key identifier of each certificate's
 * Authority Key Identifier, in lowercase hex. A Sigil CA sets it to the subject key identifier of the issuing CA
 * certificate, which is the X.509 authority ID of `localauthority x509 show` and of a server's tainted list; the
 * one rule by which an agent (its SVIDs) and a nested server (its CA) find what a tainted key issued.
 */
export function chainIssuerIds(chain: readonly Uint8Array[]): string[] {
  const ids: string[] = [];
  for (const der of chain) {
    const keyId = new x509.X509Certificate(der).getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId;
    if (keyId !== undefined) ids.push(keyId.toLowerCase());
  }
  return ids;
}
