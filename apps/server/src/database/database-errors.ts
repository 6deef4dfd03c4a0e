import { AppError } from '../common/errors.js';

/** What pg-pool rejects with when no connection freed up within its `connectionTimeoutMillis`. */
const POOL_TIMEOUT_MESSAGE = 'timeout exceeded when trying to connect';

/** Node socket errors of a database that cannot be reached. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE']);

/** SQLSTATEs of a server going down or not up yet: admin/crash shutdown, cannot connect now. */
const DOWN_SQLSTATES = new Set(['57P01', '57P02', '57P03']);
/** Too many connections: the server is up (others may be writing to it) but will not take one more of ours. */
const TOO_MANY_CONNECTIONS = '53300';
/** What pg rejects with when a new connection did not become ready within `connectionTimeoutMillis`. */
const CONNECT_TIMEOUT_MESSAGE = 'Connection terminated due to connection timeout';

/**
 * True when the database cannot be reached at all (refused, reset or timed-out connections, a server shutting down
 * or starting; class 08, connection exceptions, matched by prefix): the outage that the agent status rule of
 * AgentsService serves through. False for a database that is up but busy (the pool timed out waiting for a free
 * connection, too many connections): other replicas may still be committing there, a ban among them, and anyone
 * able to load the database could otherwise choose when that rule applies.
 */
export function databaseUnreachable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  // A server that took the TCP connection but did not start a session in time is up, and may be loaded on purpose.
  // (A host that drops packets ends the same way: then the rule does not apply, and agents get 503: fail closed.)
  if (error.message === CONNECT_TIMEOUT_MESSAGE) return false;
  const code = (error as { code?: unknown }).code;
  return (
    error.message.startsWith('Connection terminated') ||
    (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || DOWN_SQLSTATES.has(code) || /^08/.test(code)))
  );
}

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
  const busy = (error as { code?: unknown }).code === TOO_MANY_CONNECTIONS || error.message === CONNECT_TIMEOUT_MESSAGE;
  if (!busy && !databaseUnreachable(error)) return undefined;
  return new AppError('unavailable', 'database: unreachable or refusing connections; retry in a few seconds', {
    cause: error,
  });
}
