/**
 * `@sigil/workload-api/service`: the `SpiffeWorkloadAPI` service definition and its message schemas and types,
 * generated from `proto/workload.proto`, alone: what the agent's Workload API server needs. The root entry point also
 * loads the client, the sources and the TLS helpers (~6 MiB of the agent's resident memory, which serves the API
 * and never calls it: see bench/README.md, "Where the memory goes").
 *
 * @packageDocumentation
 */
export {
  /** The `SpiffeWorkloadAPI` service: five RPCs, three of them server-streaming. */
  SpiffeWorkloadAPI,
  /** Descriptor of `workload.proto`, for registries and reflection. */
  file_workload,
  /** Schema of the empty `X509SVIDRequest`. */
  X509SVIDRequestSchema,
  /** Schema of `X509SVIDResponse{svids=1, crl=2, federated_bundles=3}`. */
  X509SVIDResponseSchema,
  /** Schema of `X509SVID{spiffe_id=1, x509_svid=2, x509_svid_key=3, bundle=4, hint=5}`. */
  X509SVIDSchema,
  /** Schema of the empty `X509BundlesRequest`. */
  X509BundlesRequestSchema,
  /** Schema of `X509BundlesResponse{crl=1, bundles=2}`. */
  X509BundlesResponseSchema,
  /** Schema of `JWTSVIDRequest{audience=1, spiffe_id=2}`. */
  JWTSVIDRequestSchema,
  /** Schema of `JWTSVIDResponse{svids=1}`. */
  JWTSVIDResponseSchema,
  /** Schema of `JWTSVID{spiffe_id=1, svid=2, hint=3}`. */
  JWTSVIDSchema,
  /** Schema of the empty `JWTBundlesRequest`. */
  JWTBundlesRequestSchema,
  /** Schema of `JWTBundlesResponse{bundles=1}` (JWKS JSON per trust domain). */
  JWTBundlesResponseSchema,
  /** Schema of `ValidateJWTSVIDRequest{audience=1, svid=2}`. */
  ValidateJWTSVIDRequestSchema,
  /** Schema of `ValidateJWTSVIDResponse{spiffe_id=1, claims=2}`. */
  ValidateJWTSVIDResponseSchema,
} from './gen/workload_pb.js';
export type {
  X509SVIDRequest,
  X509SVIDResponse,
  X509SVID,
  X509BundlesRequest,
  X509BundlesResponse,
  JWTSVIDRequest,
  JWTSVIDResponse,
  JWTSVID,
  JWTBundlesRequest,
  JWTBundlesResponse,
  ValidateJWTSVIDRequest,
  ValidateJWTSVIDResponse,
} from './gen/workload_pb.js';
