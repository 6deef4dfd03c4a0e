import { type ErrorKind } from '@sigil/agent-api';

/**
 * The one error type of the apps. Services throw it with a kind from the gRPC vocabulary (we serve both HTTP
 * and gRPC); the edges map the kind once: `error.filter.ts` to an HTTP status, `toGrpcStatus()` to a gRPC code.
 * Messages name the field or rule that failed, e.g. `spiffeId: path must not end with a slash`.
 */
export type AppErrorKind = ErrorKind;

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

/** HTTP status for each kind: part of the contract the agent reads (a 401 or 403 means attest again). */
export { HTTP_STATUS_BY_KIND } from '@sigil/agent-api';
