import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import { type ErrorBody } from '@sigil/agent-api';
import { logPath, RateLimitedLog, truncateForLog } from '@sigil/logging';
import { type FastifyReply, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import { databaseUnavailable } from '../database/database-errors.js';
import { AppError, HTTP_STATUS_BY_KIND } from './errors.js';

/** The body of every error answer of the HTTP API (the agent API's contract defines it). */
export type { ErrorBody };

// A caller that finds a request failing this way can repeat it: a few lines per error class, then a count.
const unhandled = new RateLimitedLog(new Logger('ErrorFilter'));
const databaseRefusals = new RateLimitedLog(new Logger('ErrorFilter'));

/** Fastify's own request errors (raised before a route runs), by code. */
function fromFastifyError(error: { code: string; statusCode: number; message: string }, bodyLimit: number) {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 413,
        body: { error: 'resource_exhausted', message: `request body: larger than the ${bodyLimit}-byte limit` },
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: { error: 'invalid_argument', message: 'content-type: must be application/json' } };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, body: { error: 'invalid_argument', message: 'request body: not valid JSON' } };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return {
        status: 400,
        body: { error: 'invalid_argument', message: 'request body: empty, but content-type is application/json' },
      };
    default:
      return undefined;
  }
}

/**
 * Maps anything thrown while serving a request to a status and an {@link ErrorBody}, once for the whole app:
 * AppError kinds through HTTP_STATUS_BY_KIND, framework errors to the nearest kind, and anything else to a 500
 * `internal` whose details are logged (once, here) under an `errorId` and never sent to the caller.
 */
export function toErrorReply(
  exception: unknown,
  request: { method: string; url: string },
  bodyLimit: number,
): { status: number; body: ErrorBody; retryAfterSeconds?: number } {
  if (exception instanceof AppError) {
    return {
      status: HTTP_STATUS_BY_KIND[exception.kind],
      body: { error: exception.kind, message: exception.message },
      ...(exception.retryAfterSeconds !== undefined && { retryAfterSeconds: exception.retryAfterSeconds }),
    };
  }
  const unavailable = databaseUnavailable(exception);
  if (unavailable) {
    databaseRefusals.warn('database-unavailable', {
      msg: 'request failed: database busy or unreachable',
      method: request.method,
      path: logPath(request.url),
      reason: truncateForLog((exception as Error).message),
    });
    return { status: 503, body: { error: unavailable.kind, message: unavailable.message } };
  }
  // Nest hands Fastify's own request errors (body too large, bad JSON) over as an HttpException with the cause.
  const fastifyError = (exception instanceof HttpException ? exception.cause : exception) as
    { code?: unknown; statusCode?: unknown; message?: unknown } | undefined;
  if (typeof fastifyError?.code === 'string' && typeof fastifyError.statusCode === 'number') {
    const known = fromFastifyError(fastifyError as { code: string; statusCode: number; message: string }, bodyLimit);
    if (known) return known;
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    if (status === 404) {
      return {
        status,
        body: { error: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` },
      };
    }
    const kind = Object.entries(HTTP_STATUS_BY_KIND).find(([, code]) => code === status)?.[0];
    if (kind) return { status, body: { error: kind, message: exception.message.toLowerCase() } };
    if (status < 500) return { status, body: { error: 'invalid_argument', message: exception.message.toLowerCase() } };
  }
  const errorId = randomUUID();
  const errorClass = exception instanceof Error ? exception.constructor.name : typeof exception;
  unhandled.error(errorClass, {
    msg: 'unhandled error',
    errorId,
    method: request.method,
    path: logPath(request.url),
    err: exception,
  });
  return {
    status: 500,
    body: { error: 'internal', message: `internal error; the server log has the details under ${errorId}`, errorId },
  };
}

@Catch()
export class ErrorFilter implements ExceptionFilter {
  constructor(private readonly bodyLimit: number) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    // The route's own body limit where it has one (open attestation routes: ATTESTATION_BODY_LIMIT_BYTES).
    const bodyLimit = request.routeOptions?.bodyLimit ?? this.bodyLimit;
    const { status, body, retryAfterSeconds } = toErrorReply(exception, request, bodyLimit);
    const reply = http.getResponse<FastifyReply>().status(status);
    if (retryAfterSeconds !== undefined) void reply.header('retry-after', String(retryAfterSeconds));
    void reply.send(body);
  }
}
