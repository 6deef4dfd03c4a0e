import { TLSSocket } from 'node:tls';
import {
  applyDecorators,
  type CanActivate,
  type ExecutionContext,
  Inject,
  Injectable,
  SetMetadata,
  UseGuards,
} from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { formatSelector } from '@sigil/runtime';
import { type FastifyRequest } from 'fastify';
import { type PresentedSvid, unauthenticatedClient } from '../auth/client-svid.js';
import { Public } from '../auth/public.decorator.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { setCallingAgent } from './agent-request.js';
import { AgentSvidAuthenticator } from './agent-svid-authenticator.js';
import { AgentSyncRateLimiter } from './rate-limiter.js';

const SYNC_ROUTE = 'sigil:agent-sync-route';

/**
 * Marks the sync route: the guard takes the agent's sync rate limit once the SVID verified and before the agent's
 * status is looked up, so a sync over the limit costs no database query.
 */
export const SyncRateLimited = (): MethodDecorator => SetMetadata(SYNC_ROUTE, true);

/** The agent SVID verified on each connection, for {@link previouslyVerifiedAgentId}. */
const verifiedConnections = new WeakMap<TLSSocket, PresentedSvid>();

/**
 * The agent SPIFFE ID this connection's client certificate was verified for by an earlier request, if any. Only for
 * refusing early (a spent signing budget, before the body is read): it says nothing of whether the agent is still
 * active, which the guard checks on every request it lets through.
 */
export function previouslyVerifiedAgentId(socket: unknown): string | undefined {
  return socket instanceof TLSSocket ? verifiedConnections.get(socket)?.spiffeId : undefined;
}

/**
 * Authenticates an agent on the agent API's mTLS routes by {@link AgentSvidAuthenticator}'s rule: the TLS client
 * certificate must be an X509-SVID that verifies against our own bundle at the clock's time, name an agent
 * (`spiffe://<td>/sigil/agent/...`), and be the current SVID of an attested agent that is neither evicted nor banned.
 * 401 when no valid SVID is presented, 403 when it names no active agent, 429 on a route marked
 * {@link SyncRateLimited} when the agent is over that limit.
 * Nothing here reads the database while the agent's status is in AgentsService's cache.
 */
@Injectable()
export class AgentAuthGuard implements CanActivate {
  /** Connections counted for their agent ({@link admitConnection}), and the count per agent SPIFFE ID. */
  private readonly countedConnections = new WeakSet<TLSSocket>();
  private readonly connectionsPerAgent = new Map<string, number>();
  private readonly maxConnections: number;

  constructor(
    private readonly authenticator: AgentSvidAuthenticator,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'agentMaxConnections'>,
    private readonly reflector: Reflector,
    private readonly syncLimiter: AgentSyncRateLimiter,
  ) {
    this.maxConnections = config.agentMaxConnections;
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (context.getType() !== 'http') return false;
    const request = context.switchToHttp().getRequest<FastifyRequest>();
    const socket = request.raw.socket;
    if (!(socket instanceof TLSSocket)) {
      throw unauthenticatedClient('the agent API is served on the TLS port only, authenticated by the agent X509-SVID');
    }
    const svid = this.authenticator.verify(socket);
    verifiedConnections.set(socket, svid);
    // Counted per agent SVID (ID and serial), not per ID: someone holding an outdated or stolen-then-replaced SVID of
    // the agent (refused just below) cannot use up the connections and syncs of the agent's current one.
    const holder = `${svid.spiffeId} ${svid.serialNumber}`;
    this.admitConnection(socket, holder, svid.spiffeId);
    if (this.reflector.get<boolean | undefined>(SYNC_ROUTE, context.getHandler())) {
      await this.syncLimiter.admit(holder, svid.spiffeId);
    }
    const agent = await this.authenticator.requireActive(svid);
    setCallingAgent(request.raw, {
      spiffeId: svid.spiffeId,
      serialNumber: svid.serialNumber,
      attestationType: agent.attestationType,
      canReattest: agent.canReattest,
      nodeSelectors: new Set(agent.selectors.map(formatSelector)),
    });
    return true;
  }

  /**
   * Counts `socket` for its agent on its first request, until it closes; a request on a connection past the agent's
   * `agent_max_connections` gets 429 (the connection stays uncounted, and is counted by a later request once one of
   * the agent's others has closed).
   */
  private admitConnection(socket: TLSSocket, key: string, spiffeId: string): void {
    // A connection already gone is never counted: its close would not come to take it off.
    if (this.countedConnections.has(socket) || socket.destroyed) return;
    const open = this.connectionsPerAgent.get(key) ?? 0;
    if (open >= this.maxConnections) {
      throw new AppError(
        'resource_exhausted',
        `agent ${spiffeId}: ${open} connections open, at most ${this.maxConnections} (agent_max_connections); ` +
          'reuse them, or retry in 1 s',
        { retryAfterSeconds: 1 },
      );
    }
    this.countedConnections.add(socket);
    this.connectionsPerAgent.set(key, open + 1);
    socket.once('close', () => {
      const left = (this.connectionsPerAgent.get(key) ?? 1) - 1;
      if (left > 0) this.connectionsPerAgent.set(key, left);
      else this.connectionsPerAgent.delete(key);
    });
  }
}

/**
 * Marks a controller's routes as agent routes: not admin routes (the admin guard lets them through), authenticated
 * by {@link AgentAuthGuard} instead.
 */
export const AgentAuth = (): ClassDecorator & MethodDecorator =>
  applyDecorators(Public('none'), UseGuards(AgentAuthGuard));
