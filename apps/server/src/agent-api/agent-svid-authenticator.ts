import { type TLSSocket } from 'node:tls';
import { Inject, Injectable } from '@nestjs/common';
import { SIGIL_AGENT_PATH_PREFIX } from '@sigil/runtime';
import { AgentsService, type AttestedAgent } from '../agents/agents.service.js';
import { ClientSvidVerifier, type PresentedSvid } from '../auth/client-svid.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';

/**
 * Agent SVID chains remembered across connections: an agent opens a new connection for every sync long-poll, and a
 * fleet reconnecting at once (or one agent opening 1,000) would otherwise have each chain verified again. About 200
 * bytes each.
 */
export const VERIFIED_SVID_CACHE_SIZE = 10_000;

/**
 * The one rule of "this TLS client is an active agent of this trust domain": its client certificate is an X509-SVID
 * that verifies against our own bundle at the clock's time, names an agent (`spiffe://<td>/sigil/agent/...`), and is
 * the current (or renewed, pending) SVID of an attested agent that is neither evicted nor banned. The agent API's
 * guard ({@link AgentAuthGuard}) authenticates with it; node attestation asks it only whose attestation budget pays
 * ({@link activeAgentOf}).
 */
@Injectable()
export class AgentSvidAuthenticator {
  private readonly agentIdPrefix: string;
  /** Agent SVIDs verified on earlier connections, per bundle sequence. */
  private readonly svids = new ClientSvidVerifier(
    VERIFIED_SVID_CACHE_SIZE,
    'agent SVID',
    'required: agent API routes authenticate the agent by its X509-SVID (mTLS)',
  );
  /** Connections whose client certificate {@link activeAgentOf} found no agent SVID, at that bundle sequence. */
  private readonly refusedConnections = new WeakMap<TLSSocket, number>();

  constructor(
    private readonly bundles: BundleService,
    private readonly agents: AgentsService,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'trustDomain'>,
  ) {
    this.agentIdPrefix = `${config.trustDomain.idString()}${SIGIL_AGENT_PATH_PREFIX}`;
  }

  /**
   * The agent SVID `socket`'s client presented, verified (chain, validity now, an agent ID of this trust domain), but
   * not yet checked against the agent's record ({@link requireActive}).
   *
   * @throws AppError `unauthenticated` (no certificate, or one that does not verify), `permission_denied` (a valid
   *   SVID that names no agent).
   */
  verify(socket: TLSSocket): PresentedSvid {
    const svid = this.svids.verify(socket, this.bundles.ownBundle(), this.clock.now());
    if (!svid.spiffeId.startsWith(this.agentIdPrefix)) {
      throw new AppError('permission_denied', `client certificate: ${svid.spiffeId} is not an agent id`);
    }
    return svid;
  }

  /**
   * The agent `svid` names, if it is attested, not banned, and `svid` is its current SVID (or its renewed one, which
   * presenting makes current).
   *
   * @throws AppError `permission_denied` otherwise.
   */
  requireActive(svid: PresentedSvid): Promise<AttestedAgent> {
    return this.agents.requireActive(svid.spiffeId, svid.serialNumber);
  }

  /**
   * The SPIFFE ID of the active agent whose SVID `socket`'s client presented ({@link verify} and
   * {@link requireActive}); undefined when it presented no certificate or one that does not pass. A certificate
   * that does not verify is not verified again on the same connection while the bundle is unchanged (a client cannot
   * change its certificate on a connection).
   */
  async activeAgentOf(socket: TLSSocket): Promise<string | undefined> {
    if (!ClientSvidVerifier.presentsCertificate(socket)) return undefined;
    const sequence = this.bundles.ownBundle().sequenceNumber ?? 0;
    if (this.refusedConnections.get(socket) === sequence) return undefined;
    let svid: PresentedSvid;
    try {
      svid = this.verify(socket);
    } catch (error) {
      if (!(error instanceof AppError)) throw error;
      this.refusedConnections.set(socket, sequence);
      return undefined;
    }
    try {
      await this.requireActive(svid);
    } catch (error) {
      // Evicted, banned, an outdated serial; or its status unreadable (a database outage): not known to be active.
      if (error instanceof AppError) return undefined;
      throw error;
    }
    return svid.spiffeId;
  }
}
