import { Code, ConnectError } from '@connectrpc/connect';

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

const STATUS_BY_CODE: Readonly<Record<Code, GrpcStatus>> = {
  [Code.Canceled]: 'canceled',
  [Code.Unknown]: 'unknown',
  [Code.InvalidArgument]: 'invalid_argument',
  [Code.DeadlineExceeded]: 'deadline_exceeded',
  [Code.NotFound]: 'not_found',
  [Code.AlreadyExists]: 'already_exists',
  [Code.PermissionDenied]: 'permission_denied',
  [Code.ResourceExhausted]: 'resource_exhausted',
  [Code.FailedPrecondition]: 'failed_precondition',
  [Code.Aborted]: 'aborted',
  [Code.OutOfRange]: 'out_of_range',
  [Code.Unimplemented]: 'unimplemented',
  [Code.Internal]: 'internal',
  [Code.Unavailable]: 'unavailable',
  [Code.DataLoss]: 'data_loss',
  [Code.Unauthenticated]: 'unauthenticated',
};

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

// Socket errors that mean "the endpoint cannot be reached right now". connect-node reports only ECONNREFUSED as
// UNAVAILABLE; a socket file that does not exist yet (the agent is still starting) is the same situation, and gRPC
// clients report both as UNAVAILABLE (SPIFFE_Workload_Endpoint.md §6: retry with a backoff).
const UNREACHABLE = new Set(['ENOENT', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE']);

function systemErrorCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** Wraps the failure of the RPC `method` into an `ERR_RPC_FAILED` error that names the gRPC status. */
export function rpcError(method: string, error: unknown): WorkloadApiError {
  if (error instanceof WorkloadApiError) return error;
  const connectError = ConnectError.from(error);
  const unreachable = UNREACHABLE.has(systemErrorCode(connectError.cause) ?? '');
  const status = unreachable ? 'unavailable' : (STATUS_BY_CODE[connectError.code] ?? 'unknown');
  return new WorkloadApiError('ERR_RPC_FAILED', `${method}: ${status}: ${connectError.rawMessage}`, {
    cause: error,
    status,
  });
}
