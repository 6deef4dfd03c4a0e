/**
 * The one error type of the apps. Services throw it with a kind from the gRPC vocabulary (we serve both HTTP
 * and gRPC); the edges map the kind once: `error.filter.ts` to an HTTP status, `toGrpcStatus()` to a gRPC code.
 * Messages name the field or rule that failed, e.g. `spiffeId: path must not end with a slash`.
 */
export type AppErrorKind =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'unavailable';

export class AppError extends Error {
  override readonly name = 'AppError';
  /** For `resource_exhausted` and `unavailable`: when to ask again, in whole seconds (HTTP `Retry-After`). */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    readonly kind: AppErrorKind,
    message: string,
    options?: { cause?: unknown; retryAfterSeconds?: number },
  ) {
    super(message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/** HTTP status for each kind; exhaustive so a new kind cannot be forgotten. */
export const HTTP_STATUS_BY_KIND: Readonly<Record<AppErrorKind, number>> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 422,
  resource_exhausted: 429,
  unavailable: 503,
};
