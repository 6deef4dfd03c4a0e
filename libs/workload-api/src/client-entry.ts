/**
 * `@sigil/workload-api/client`: the Workload API client alone (`WorkloadApiClient`, its errors and address rules),
 * the same classes as the package's root exports, for programs that start often and only call the API, such as
 * `sigil-agent api`. The root entry point also loads the TLS helpers, the Connect transport and the generated
 * schemas (@connectrpc/connect, @bufbuild/protobuf's registry), which this one does not: see bench/README.md,
 * "Client command start-up".
 *
 * @packageDocumentation
 */
export { SPIFFE_ENDPOINT_SOCKET, type WorkloadApiAddress, parseWorkloadApiAddress } from './address.js';
export { type Backoff, ExponentialBackoff, type ExponentialBackoffOptions } from './backoff.js';
export { type GrpcStatus, WorkloadApiError, type WorkloadApiErrorCode } from './errors.js';
export {
  type CallOptions,
  type ErrorHandler,
  type FetchJwtSvidParams,
  SECURITY_HEADER,
  type UpdateHandler,
  WorkloadApiClient,
  type WorkloadApiClientOptions,
} from './client.js';
export type { WorkloadJwtSvid, X509Context } from './responses.js';
