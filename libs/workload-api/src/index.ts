/**
 * `@sigil/workload-api`: a Node.js client of the SPIFFE Workload API (`WorkloadApiClient`), sources that keep the
 * workload's SVIDs and bundles current (`X509Source`, `JwtSource`), mutual TLS with SPIFFE authentication for
 * node:tls, node:https and node:http2 that follows rotation (`createServerTlsOptions`, `createClientTlsOptions`,
 * `createMtlsServer`, `attachMtls`), one-way TLS (`createTlsServer`, `attachTls`, `createTlsClientOptions`), a Connect
 * gRPC transport (`createMtlsGrpcTransport`; `@grpc/grpc-js` credentials are in `@sigil/workload-api/grpc-js`),
 * bearer JWT-SVID validation (`validateBearerJwtSvid`), bundle files (`loadX509Bundle`, `loadJwtBundle`), the
 * verification helpers of `@sigil/spiffe` (`verifyX509Svid`, `parseAndValidateJwtSvid`), and the service definition and message types generated from
 * `proto/workload.proto` by protoc-gen-es (see `buf.gen.yaml`), used by the agent's server.
 *
 * Paths are `/SpiffeWorkloadAPI/<Rpc>` (the proto has no package, as the standard's). Every call must carry the
 * metadata `workload.spiffe.io: true`.
 *
 * @see https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE_Workload_API.md
 * @packageDocumentation
 */
// The service and its messages, as `@sigil/workload-api/service` exports them (one list for both entry points).
export * from './service-entry.js';
// The client alone, as `@sigil/workload-api/client` exports it (one list for both entry points).
export * from './client-entry.js';
export type { SourceOptions } from './source-watch.js';
export { X509Source, type X509SourceOptions } from './x509-source.js';
export { JwtSource, type JwtSourceOptions } from './jwt-source.js';
export { type Authorizer, authorizeAny, authorizeId, authorizeMemberOf, authorizeOneOf } from './authorizer.js';
export type { VerifiedPeer } from './peer-verification.js';
export {
  type SpiffeClientTlsOptions,
  type SpiffeServerTlsOptions,
  type SpiffeTlsClientOptions,
  type SpiffeTlsConfig,
  type X509BundleTlsSource,
  type X509SvidTlsSource,
  type X509TlsSource,
  attachMtls,
  attachTls,
  createClientTlsOptions,
  createMtlsServer,
  createServerTlsOptions,
  createTlsClientOptions,
  createTlsServer,
  peerSpiffeId,
} from './tls.js';
export { type MtlsGrpcTransportOptions, createMtlsGrpcTransport } from './grpc-transport.js';
export { type ValidateBearerOptions, validateBearerJwtSvid } from './jwt.js';
export { loadJwtBundle, loadX509Bundle } from './bundles.js';
/**
 * Re-exported from `@sigil/spiffe`: the value types the client hands out and the authorizers take, and the
 * verification helpers (`verifyX509Svid`: an X.509-SVID chain against a bundle source, go-spiffe `x509svid.Verify`;
 * `parseAndValidateJwtSvid`: a JWT-SVID against a bundle source and audience, go-spiffe `jwtsvid.ParseAndValidate`).
 */
export {
  type BundleSource,
  type CertificateChainInput,
  type JwtSvid,
  SpiffeError,
  type SpiffeErrorCode,
  SpiffeId,
  TrustBundle,
  TrustBundleSet,
  TrustDomain,
  type ValidateJwtSvidOptions,
  type VerifiedX509Svid,
  type VerifyX509SvidOptions,
  type X509Svid,
  parseAndValidateJwtSvid,
  parseX509Svid,
  verifyX509Svid,
  verifyX509SvidSync,
} from '@sigil/spiffe';
