// The one @peculiar/x509 setup (reflect-metadata loaded first, Node's WebCrypto as the provider) lives in
// @sigil/spiffe, which every lib builds on; pki modules import it from here.
export { x509 } from '@sigil/spiffe';
