// The one @peculiar/x509 setup (reflect-metadata loaded first, Node's WebCrypto as the provider) lives in
// @sigil/spiffe, which every lib builds on. pki modules take only the types from here (`import type`) and the module
// from `loadX509` (@sigil/spiffe), called where they use it, so that loading @sigil/pki (an agent making CSRs) does
// not load @peculiar/x509 and its ASN.1 schemas; importing `x509` from here (specs, tests) loads it at once.
export { x509 } from '@sigil/spiffe/x509';
