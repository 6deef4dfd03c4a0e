// The one @peculiar/x509 setup (reflect-metadata loaded first, Node's WebCrypto as the provider) lives in
// @sigil/spiffe (its `x509` entry point, kept out of the main one so that clients which only verify SVIDs never load
// @peculiar/x509), which every lib builds on; pki modules import it from here.
export { x509 } from '@sigil/spiffe/x509';
