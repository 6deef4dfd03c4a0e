import {
  type CallHandler,
  type ExecutionContext,
  HttpException,
  Injectable,
  type NestInterceptor,
} from '@nestjs/common';
import { HTTP_CODE_METADATA, PATH_METADATA } from '@nestjs/common/constants.js';
import { type FastifyRequest } from 'fastify';
import { catchError, concatMap, from, type Observable, throwError } from 'rxjs';
import { actorOf, describeActor } from '../auth/actor.js';
import { AppError, HTTP_STATUS_BY_KIND } from '../common/errors.js';
import { AuditService } from './audit.service.js';

const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const MAX_TARGETS = 100;

/**
 * Registered once, globally: writes an audit record for every mutating `/v1` request that passed authentication,
 * whether it succeeded or failed (refused requests are logged by the guard instead).
 */
@Injectable()
export class AuditInterceptor implements NestInterceptor {
  constructor(private readonly audit: AuditService) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() !== 'http') return next.handle();
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    if (!MUTATING_METHODS.has(request.method) || !isAdminRoute(request)) return next.handle();
    const actor = actorOf(request.raw);
    const base = {
      actor: actor ? describeActor(actor) : 'anonymous',
      action: actionOf(context),
    };
    const paramTargets = Object.values((request.params ?? {}) as Record<string, string>);
    const successStatus =
      (Reflect.getMetadata(HTTP_CODE_METADATA, context.getHandler()) as number | undefined) ??
      (request.method === 'POST' ? 201 : 200);

    return next.handle().pipe(
      concatMap((value: unknown) =>
        from(
          this.audit
            .record({
              ...base,
              target: joinTargets([...paramTargets, ...idsIn(value)]),
              result: batchOutcome(value),
              statusCode: successStatus,
            })
            .then(() => value),
        ),
      ),
      catchError((error: unknown) => {
        const { kind, status } = classify(error);
        return from(
          this.audit.record({ ...base, target: joinTargets(paramTargets), result: kind, statusCode: status }),
        ).pipe(concatMap(() => throwError(() => error)));
      }),
    );
  }
}

/**
 * Whether the route the request matched is an admin API route (`/v1/...`). Decided from the matched route pattern,
 * never from the raw URL: the router percent-decodes the path, so `/%761/entries` reaches `POST /v1/entries` while
 * its raw URL does not start with `/v1/`. Without a matched pattern (not expected here) the request is audited.
 */
function isAdminRoute(request: FastifyRequest): boolean {
  const pattern = request.routeOptions?.url;
  return pattern === undefined || pattern.startsWith('/v1/');
}

/** `<resource>.<handler>`: `entry.create`, `agent.ban`, `join_token.create`. */
function actionOf(context: ExecutionContext): string {
  const controllerPath = String(Reflect.getMetadata(PATH_METADATA, context.getClass()) ?? '');
  const resource = controllerPath.replace(/^\/?v1\//, '').split('/')[0] ?? 'unknown';
  const singular = resource.replace(/ies$/, 'y').replace(/s$/, '').replaceAll('-', '_');
  return `${singular}.${context.getHandler().name}`;
}

export function classify(error: unknown): { kind: string; status: number } {
  if (error instanceof AppError) return { kind: error.kind, status: HTTP_STATUS_BY_KIND[error.kind] };
  if (error instanceof HttpException) {
    const status = error.getStatus();
    const kind = Object.entries(HTTP_STATUS_BY_KIND).find(([, code]) => code === status)?.[0];
    return { kind: kind ?? (status >= 500 ? 'internal' : 'invalid_argument'), status };
  }
  return { kind: 'internal', status: 500 };
}

/**
 * `ok`, or for a batch answer (`{ results: [{ status: { code } }] }`, SPIRE's batch shape) the kind shared by every
 * failed item when all failed, else `partial`.
 */
function batchOutcome(value: unknown): string {
  const results = (value as { results?: unknown } | null)?.results;
  if (!Array.isArray(results)) return 'ok';
  const codes = results.map((item: { status?: { code?: unknown } }) => String(item?.status?.code ?? 'ok'));
  const failed = codes.filter((code) => code !== 'ok');
  if (failed.length === 0) return 'ok';
  return failed.length === codes.length && new Set(failed).size === 1 ? (failed[0] as string) : 'partial';
}

/** Ids of what a response describes: its own `id`/`spiffe_id`, or those of the objects in its arrays. */
function idsIn(value: unknown): string[] {
  const idOf = (item: unknown): string | undefined => {
    if (typeof item !== 'object' || item === null) return undefined;
    const record = item as Record<string, unknown>;
    for (const key of ['id', 'spiffe_id', 'name']) if (typeof record[key] === 'string') return record[key];
    for (const nested of Object.values(record)) {
      if (typeof nested === 'object' && nested !== null && !Array.isArray(nested)) {
        const id = idOf(nested);
        if (id) return id;
      }
    }
    return undefined;
  };
  const own = idOf(value);
  if (own || typeof value !== 'object' || value === null) return own ? [own] : [];
  return Object.values(value as Record<string, unknown>)
    .filter(Array.isArray)
    .flatMap((items: unknown[]) => items.map(idOf).filter((id): id is string => id !== undefined));
}

function joinTargets(targets: string[]): string | null {
  const unique = [...new Set(targets)].slice(0, MAX_TARGETS);
  return unique.length === 0 ? null : unique.join(',');
}
