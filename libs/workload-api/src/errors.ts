/**
 * Stable error codes of `@sigil/workload-api`. Callers branch on `code` (and, for RPC failures, on `status`), never
 * on the message text.
 *
 * - `ERR_ADDRESS_INVALID`: the Workload API address is missing or breaks a rule of SPIFFE_Workload_Endpoint.md §4.
 * - `ERR_ARGUMENT_INVALID`: a method was called with an invalid argument (for example an empty audience).
 * - `ERR_RPC_FAILED`: the Workload API answered a call with a gRPC error, or could not be reached; see `status`.
 * - `ERR_RESPONSE_INVALID`: a response could not be parsed into SVIDs or bundles.
 * - `ERR_TIMEOUT`: a source did not receive its first update in time.
 * - `ERR_CLOSED`: the client or source was closed.
 * - `ERR_PEER_REJECTED`: a TLS peer failed X.509-SVID verification or authorization.
 * - `ERR_BEARER_INVALID`: an `Authorization` header does not carry a bearer token.
 */
export type WorkloadApiErrorCode =
  | 'ERR_ADDRESS_INVALID'
  | 'ERR_ARGUMENT_INVALID'
  | 'ERR_RPC_FAILED'
  | 'ERR_RESPONSE_INVALID'
  | 'ERR_TIMEOUT'
  | 'ERR_CLOSED'
  | 'ERR_PEER_REJECTED'
  | 'ERR_BEARER_INVALID';

/**
 * A gRPC status code name in the snake case of the gRPC specification (`invalid_argument`, `unavailable`,
 * `permission_denied`, …).
 */
export type GrpcStatus =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

// By the numeric code of the gRPC specification (statuscodes.md); 0 is OK.
const STATUS_BY_CODE: readonly GrpcStatus[] = [
  'canceled',
  'unknown',
  'invalid_argument',
  'deadline_exceeded',
  'not_found',
  'already_exists',
  'permission_denied',
  'resource_exhausted',
  'failed_precondition',
  'aborted',
  'out_of_range',
  'unimplemented',
  'internal',
  'unavailable',
  'data_loss',
  'unauthenticated',
];

/** The status of the numeric gRPC code `code` (1-16); `unknown` for any other number. */
export function grpcStatusOf(code: number): GrpcStatus {
  return (Number.isInteger(code) ? STATUS_BY_CODE[code - 1] : undefined) ?? 'unknown';
}

/**
 * A gRPC call that ended with a status other than OK, or whose connection failed (`unavailable`, the failure in
 * `cause`), as the client's gRPC channel reports it (grpc-channel.ts). `rpcError` turns it into a
 * {@link WorkloadApiError}.
 */
export class GrpcCallError extends Error {
  constructor(
    readonly status: GrpcStatus,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GrpcCallError';
  }
}

/**
 * The one error type of `@sigil/workload-api` (besides the `SpiffeError`s of `@sigil/spiffe` that it lets through
 * unchanged). The message states what failed, in lowercase without a final period; an underlying error, if any, is
 * kept in `cause`.
 */
export class WorkloadApiError extends Error {
  /** Stable machine-readable code. */
  readonly code: WorkloadApiErrorCode;
  /** For `ERR_RPC_FAILED`: the gRPC status the call ended with (`unavailable` when the endpoint was unreachable). */
  readonly status: GrpcStatus | undefined;

  constructor(code: WorkloadApiErrorCode, message: string, options: { cause?: unknown; status?: GrpcStatus } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WorkloadApiError';
    this.code = code;
    this.status = options.status;
  }
}

/** Wraps the failure of the RPC `method` into an `ERR_RPC_FAILED` error that names the gRPC status. */
export function rpcError(method: string, error: unknown): WorkloadApiError {
  if (error instanceof WorkloadApiError) return error;
  const status = error instanceof GrpcCallError ? error.status : 'unknown';
  const message = error instanceof Error ? error.message : String(error);
  return new WorkloadApiError('ERR_RPC_FAILED', `${method}: ${status}: ${message}`, { cause: error, status });
}
