/**
 * Errors of the agent API, both directions: the body of every error answer, its kinds (gRPC's vocabulary, as the
 * server serves both HTTP and gRPC) with their HTTP statuses, and the error for a message that breaks the contract.
 */

/** The `error` field of an error answer; `internal` is a 500 whose details the server logged under `errorId`. */
export type ErrorKind =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'unavailable';

/** HTTP status for each kind; exhaustive so a new kind cannot be forgotten. */
export const HTTP_STATUS_BY_KIND: Readonly<Record<ErrorKind, number>> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 422,
  resource_exhausted: 429,
  unavailable: 503,
};

/** The body of every error answer of the server's HTTP API. */
export interface ErrorBody {
  error: string;
  message: string;
  /** Only for `internal`: the id under which the error was logged. */
  errorId?: string;
}

/**
 * The kind and message of an error answer. A body that is not an {@link ErrorBody} (a proxy's page, an empty answer)
 * still gives one: `http_<status>` and `HTTP <status>`, so the caller can always say what happened.
 */
export function parseErrorBody(status: number, body: unknown): { kind: string; message: string } {
  const { error, message } = (typeof body === 'object' && body !== null ? body : {}) as Partial<
    Record<keyof ErrorBody, unknown>
  >;
  return {
    kind: typeof error === 'string' ? error : `http_${status}`,
    message: typeof message === 'string' ? message : `HTTP ${status}`,
  };
}

/**
 * A message that does not follow the contract: a server answer the agent cannot use, or a request body the server
 * refuses. The message names the field (`entries[2].spiffe_id: ...`); `field` is that path.
 */
export class AgentApiProtocolError extends Error {
  override readonly name = 'AgentApiProtocolError';

  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}
