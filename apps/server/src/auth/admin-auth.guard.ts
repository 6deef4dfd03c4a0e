import {
  type CanActivate,
  type ExecutionContext,
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { logPath, RateLimitedLog } from '@sigil/logging';
import { type FastifyRequest } from 'fastify';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { setActor } from './actor.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import { AdminTokensService } from './admin-tokens.service.js';
import { IS_PUBLIC_KEY, type PublicBudget } from './public.decorator.js';

/**
 * Registered once, globally: every route is admin-only unless marked {@link Public}. A request is allowed when it
 * arrived on the local admin socket, or carries `Authorization: Bearer <admin token>` of a known, unexpired token.
 */
@Injectable()
export class AdminAuthGuard implements CanActivate, OnModuleDestroy {
  // Refusals are the caller's to repeat: a few lines per reason per interval, then a count of the rest.
  private readonly refusals: RateLimitedLog;

  constructor(
    private readonly reflector: Reflector,
    private readonly adminSockets: AdminSocketConnections,
    private readonly adminTokens: AdminTokensService,
    @Inject(CLOCK) clock: Clock,
  ) {
    this.refusals = new RateLimitedLog(new Logger(AdminAuthGuard.name), { now: () => clock.now().getTime() });
  }

  onModuleDestroy(): void {
    this.refusals.close();
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    // Only HTTP is served through Nest; anything else would be a new transport that must bring its own guard.
    if (context.getType() !== 'http') return false;
    if (this.reflector.getAllAndOverride<PublicBudget>(IS_PUBLIC_KEY, [context.getHandler(), context.getClass()])) {
      return true;
    }
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    if (this.adminSockets.has(request.raw.socket)) {
      setActor(request.raw, { kind: 'local-admin' });
      return true;
    }
    const name = await this.authenticateBearer(request.headers.authorization, request);
    setActor(request.raw, { kind: 'admin-token', name });
    return true;
  }

  private async authenticateBearer(header: string | undefined, request: FastifyRequest): Promise<string> {
    const refuse = (message: string): never => {
      // Logged (not audited): an unauthenticated caller must not be able to fill the audit table.
      this.refusals.warn(message, {
        msg: 'admin API request refused',
        method: request.method,
        path: logPath(request.url),
        reason: message,
      });
      throw new AppError('unauthenticated', message);
    };
    if (header === undefined) {
      return refuse('authorization: admin API needs a bearer admin token or the local admin socket');
    }
    const match = /^Bearer +(\S+)$/i.exec(header);
    if (!match?.[1]) return refuse('authorization: must be "Bearer <admin token>"');
    const name = await this.adminTokens.authenticate(match[1]);
    return name ?? refuse('authorization: unknown or expired admin token');
  }
}
