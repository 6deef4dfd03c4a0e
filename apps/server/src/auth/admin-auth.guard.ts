import { TLSSocket } from 'node:tls';
import {
  type CanActivate,
  type ExecutionContext,
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { SIGIL_AGENT_PATH_PREFIX } from '@sigil/runtime';
import { logPath, RateLimitedLog } from '@sigil/logging';
import { type FastifyRequest } from 'fastify';
import { AuthorisedEntriesService } from '../agent-api/authorised-entries.service.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { setActor } from './actor.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import { AdminTokensService } from './admin-tokens.service.js';
import { ClientSvidVerifier } from './client-svid.js';
import { IS_PUBLIC_KEY, type PublicBudget } from './public.decorator.js';

/** Admin SVID chains remembered across connections (an admin tool may open a connection per call). */
const VERIFIED_ADMIN_SVIDS = 1_000;

/**
 * Registered once, globally: every route is admin-only unless marked {@link Public}. A request is allowed when it
 * arrived on the local admin socket, or carries `Authorization: Bearer <admin token>` of a known, unexpired token, or
 * (without that header) came over the TLS port with an admin X509-SVID as client certificate (SPIRE's admin
 * workloads): one that verifies against our own bundle and names a SPIFFE ID that an unexpired entry with
 * `admin: true` has (this replica's entry index, which follows every entry change). Agent SVIDs are never admins.
 */
@Injectable()
export class AdminAuthGuard implements CanActivate, OnModuleDestroy {
  // Refusals are the caller's to repeat: a few lines per reason per interval, then a count of the rest.
  private readonly refusals: RateLimitedLog;
  private readonly adminSvids = new ClientSvidVerifier(
    VERIFIED_ADMIN_SVIDS,
    'admin SVID',
    'required: the admin API takes an admin X509-SVID, a bearer admin token or the local admin socket',
  );
  private readonly agentIdPrefix: string;

  constructor(
    private readonly reflector: Reflector,
    private readonly adminSockets: AdminSocketConnections,
    private readonly adminTokens: AdminTokensService,
    private readonly bundles: BundleService,
    private readonly entryIndex: AuthorisedEntriesService,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'trustDomain'>,
  ) {
    this.refusals = new RateLimitedLog(new Logger(AdminAuthGuard.name), { now: () => clock.now().getTime() });
    this.agentIdPrefix = `${config.trustDomain.idString()}${SIGIL_AGENT_PATH_PREFIX}`;
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
    const socket = request.raw.socket;
    if (
      request.headers.authorization === undefined &&
      socket instanceof TLSSocket &&
      ClientSvidVerifier.presentsCertificate(socket)
    ) {
      const spiffeId = this.authenticateSvid(socket, request);
      setActor(request.raw, { kind: 'admin-svid', spiffeId });
      return true;
    }
    const name = await this.authenticateBearer(request.headers.authorization, request);
    setActor(request.raw, { kind: 'admin-token', name });
    return true;
  }

  /** The SPIFFE ID of the admin SVID `socket`'s client presented; 401 when it does not verify, 403 when no admin. */
  private authenticateSvid(socket: TLSSocket, request: FastifyRequest): string {
    const now = this.clock.now();
    let spiffeId: string;
    try {
      spiffeId = this.adminSvids.verify(socket, this.bundles.ownBundle(), now).spiffeId;
    } catch (error) {
      if (error instanceof AppError) this.logRefusal(error.message, request);
      throw error;
    }
    const forbidden = (message: string): never => {
      this.logRefusal(message, request);
      throw new AppError('permission_denied', message);
    };
    if (spiffeId.startsWith(this.agentIdPrefix)) {
      return forbidden(`client certificate: ${spiffeId} is an agent SVID, which never calls the admin API`);
    }
    if (!this.entryIndex.isAdmin(spiffeId, now)) {
      return forbidden(`client certificate: ${spiffeId} is not an admin (no unexpired entry with admin: true for it)`);
    }
    return spiffeId;
  }

  private async authenticateBearer(header: string | undefined, request: FastifyRequest): Promise<string> {
    const refuse = (message: string): never => {
      this.logRefusal(message, request);
      throw new AppError('unauthenticated', message);
    };
    if (header === undefined) {
      return refuse(
        'authorization: admin API needs a bearer admin token, an admin X509-SVID (mTLS) or the local admin socket',
      );
    }
    const match = /^Bearer +(\S+)$/i.exec(header);
    if (!match?.[1]) return refuse('authorization: must be "Bearer <admin token>"');
    const name = await this.adminTokens.authenticate(match[1]);
    return name ?? refuse('authorization: unknown or expired admin token');
  }

  private logRefusal(message: string, request: FastifyRequest): void {
    // Logged (not audited): an unauthenticated caller must not be able to fill the audit table.
    this.refusals.warn(message, {
      msg: 'admin API request refused',
      method: request.method,
      path: logPath(request.url),
      reason: message,
    });
  }
}
