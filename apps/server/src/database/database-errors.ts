import { AppError } from '../common/errors.js';

/** What pg-pool rejects with when no connection freed up within its `connectionTimeoutMillis`. */
const POOL_TIMEOUT_MESSAGE = 'timeout exceeded when trying to connect';

/** Node socket errors of a database that cannot be reached. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE']);

/**
 * SQLSTATEs of a server that is there but will not serve us now: admin/crash shutdown, cannot connect now, too many
 * connections (class 08, connection exceptions, is matched by prefix).
 */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

/**
 * The answer for a request that failed because the database could not serve it in time: a pooled connection did
 * not free up within the pool timeout (the database is saturated), or the database is unreachable or refusing
 * connections. Such a request may succeed when repeated, so the caller gets 503 `unavailable` and retry advice, not
 * a 500. `undefined` for any other error.
 */
export function databaseUnavailable(error: unknown): AppError | undefined {
  if (!(error instanceof Error)) return undefined;
  if (error.message === POOL_TIMEOUT_MESSAGE) {
    return new AppError(
      'unavailable',
      'database: busy, no pooled connection freed up within the pool timeout; retry in a few seconds',
      { cause: error },
    );
  }
  const code = (error as { code?: unknown }).code;
  const unreachable =
    error.message.startsWith('Connection terminated') ||
    (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08/.test(code)));
  if (!unreachable) return undefined;
  return new AppError('unavailable', 'database: unreachable or refusing connections; retry in a few seconds', {
    cause: error,
  });
}
