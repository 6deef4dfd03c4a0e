import {
  type CallHandler,
  type ExecutionContext,
  Inject,
  Injectable,
  Logger,
  type NestInterceptor,
  type OnModuleDestroy,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { logPath, RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { type FastifyReply, type FastifyRequest } from 'fastify';
import { catchError, type Observable, throwError } from 'rxjs';
import { addressKey } from '../common/address-key.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { ATTESTATION_REFUSAL_COST, SERVER_CONFIG, type ServerConfig } from '../config.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import { IS_PUBLIC_KEY, type PublicBudget } from './public.decorator.js';

type LimitsConfig = Pick<
  ServerConfig,
  'attestationRatePerSecond' | 'attestationBurst' | 'publicReadRatePerSecond' | 'publicReadBurst'
>;

/**
 * Registered once, globally: every {@link Public} route served on the TLS port draws on a token bucket of its source
 * address, one per budget (`attestation`, `read`), so that one client cannot spend the server's CPU or database on
 * requests that need no credential (the x509pop chain check, join token lookups, the bundle, readiness). Over the
 * limit, the caller gets 429 `resource_exhausted` with `Retry-After`, before the route does any work.
 *
 * - The key is the TCP peer address, never a header: an IPv4 address as is, an IPv6 address by its /64 (one host
 *   usually holds a whole /64). Behind a proxy or NAT every client of that address shares one bucket; the defaults
 *   let a fleet behind one NAT address re-attest (see the README's Limits table).
 * - A refused attestation (403: an unknown join token, a chain or a signature that does not verify) costs
 *   {@link ATTESTATION_REFUSAL_COST} tokens in all, charged when the refusal is known: guessing join tokens or
 *   sending forged chains runs out ten times sooner than attesting.
 * - The local admin socket is not limited (its file permissions are the credential).
 * - Buckets live in this replica's memory: N replicas behind a load balancer allow N times the rate.
 */
@Injectable()
export class PublicRateLimitInterceptor implements NestInterceptor, OnModuleDestroy {
  private readonly limiters: Readonly<Record<PublicBudget, TokenBucketRateLimiter>>;
  // A refused caller repeats at will: a few lines per budget per interval, then a count of the rest.
  private readonly refusals: RateLimitedLog;

  constructor(
    private readonly reflector: Reflector,
    private readonly adminSockets: AdminSocketConnections,
    @Inject(SERVER_CONFIG) private readonly config: LimitsConfig,
    @Inject(CLOCK) clock: Clock,
  ) {
    this.limiters = {
      attestation: new TokenBucketRateLimiter(
        { ratePerSecond: config.attestationRatePerSecond, burst: config.attestationBurst },
        clock,
      ),
      read: new TokenBucketRateLimiter(
        { ratePerSecond: config.publicReadRatePerSecond, burst: config.publicReadBurst },
        clock,
      ),
    };
    this.refusals = new RateLimitedLog(new Logger(PublicRateLimitInterceptor.name), {
      now: () => clock.now().getTime(),
    });
  }

  onModuleDestroy(): void {
    this.refusals.close();
  }

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const budget = this.reflector.getAllAndOverride<PublicBudget | undefined>(IS_PUBLIC_KEY, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (budget === undefined || context.getType() !== 'http') return next.handle();
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    if (this.adminSockets.has(request.raw.socket)) return next.handle();
    const address = addressKey(request.raw.socket.remoteAddress);
    const limiter = this.limiters[budget];
    if (!limiter.tryTake(address)) {
      const retryAfter = Math.max(1, limiter.retryAfterSeconds(address));
      void http.getResponse<FastifyReply>().header('retry-after', String(retryAfter));
      const message = `source address ${address}: over its ${this.describe(budget)}; retry in ${retryAfter} s`;
      this.refusals.warn(budget, {
        msg: 'unauthenticated request refused: source address over its rate limit',
        budget,
        address,
        path: logPath(request.url),
      });
      throw new AppError('resource_exhausted', message);
    }
    if (budget !== 'attestation') return next.handle();
    return next.handle().pipe(
      catchError((error: unknown) => {
        if (error instanceof AppError && error.kind === 'permission_denied') {
          limiter.charge(address, ATTESTATION_REFUSAL_COST - 1);
        }
        return throwError(() => error);
      }),
    );
  }

  private describe(budget: PublicBudget): string {
    return budget === 'attestation'
      ? `attestation rate limit (${this.config.attestationRatePerSecond}/s, burst ${this.config.attestationBurst}; ` +
          `a refused attestation counts ${ATTESTATION_REFUSAL_COST})`
      : `rate limit for bundle, health and metrics requests (${this.config.publicReadRatePerSecond}/s, burst ` +
          `${this.config.publicReadBurst})`;
  }
}
