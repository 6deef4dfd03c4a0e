import { type CallHandler, type ExecutionContext, Injectable, type NestInterceptor } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { type FastifyRequest } from 'fastify';
import { catchError, type Observable, throwError } from 'rxjs';
import { AppError } from '../common/errors.js';
import { IS_PUBLIC_KEY, type PublicBudget } from './public.decorator.js';
import { PublicRateLimits } from './public-rate-limits.js';

/**
 * Registered once, globally: a refused attestation (403 `permission_denied`: an unknown join token, a chain or a
 * signature that does not verify; 400 `invalid_argument`: a certificate that does not parse) is charged to its source address's attestation budget once the refusal is known,
 * so that guessing tokens or sending forged chains runs out ten times sooner than attesting. The budget itself is
 * taken before the request is read, by {@link PublicRateLimits.onRequest}.
 */
@Injectable()
export class PublicRateLimitInterceptor implements NestInterceptor {
  constructor(
    private readonly reflector: Reflector,
    private readonly limits: PublicRateLimits,
  ) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const budget = this.reflector.getAllAndOverride<PublicBudget | undefined>(IS_PUBLIC_KEY, [
      context.getHandler(),
      context.getClass(),
    ]);
    if (budget !== 'attestation' || context.getType() !== 'http') return next.handle();
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    return next.handle().pipe(
      catchError((error: unknown) => {
        // A malformed attestation (400: a chain that does not parse) is refused at the same price: a real agent
        // never sends one, and checking it may have taken a turn of the x509pop check queue.
        if (error instanceof AppError && (error.kind === 'permission_denied' || error.kind === 'invalid_argument')) {
          this.limits.chargeRefusedAttestation(request);
        }
        return throwError(() => error);
      }),
    );
  }
}
