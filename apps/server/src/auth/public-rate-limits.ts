import { type IncomingMessage } from 'node:http';
import { TLSSocket } from 'node:tls';
import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { logPath, RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { type FastifyReply, type FastifyRequest, type HookHandlerDoneFunction } from 'fastify';
import { AgentSvidAuthenticator } from '../agent-api/agent-svid-authenticator.js';
import { addressKey } from '../common/address-key.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { type ErrorBody } from '../common/error.filter.js';
import { ATTESTATION_REFUSAL_COST, SERVER_CONFIG, type ServerConfig } from '../config.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import {
  PUBLIC_BUDGET_CONFIG,
  PUBLIC_COST_CONFIG,
  type OpenRouteBudget,
  type PublicBudget,
} from './public.decorator.js';

type LimitsConfig = Pick<
  ServerConfig,
  'attestationRatePerSecond' | 'attestationBurst' | 'publicReadRatePerSecond' | 'publicReadBurst'
>;

/**
 * Whose bucket an open route's request is charged to: its source address's (the key of {@link addressKey}), or, for
 * an attestation presenting an active agent's SVID, that agent's (its SPIFFE ID; the two kinds of key never meet).
 */
interface Payer {
  readonly key: string;
  readonly kind: 'address' | 'agent';
}

/**
 * The per-source-address budgets of the routes open without credentials ({@link Public}), so that one client cannot
 * spend the server's CPU or database on requests that need no credential (the x509pop chain check, join token
 * lookups, the bundle, readiness). One token bucket per address per budget (`attestation`, `read`).
 *
 * - {@link onRequest} runs as a Fastify `onRequest` hook, before the request body is read: over its budget, the
 *   caller gets 429 `resource_exhausted` with `Retry-After`, and the route does no work at all.
 * - The key is the TCP peer address, never a header: an IPv4 address as is, an IPv6 address by its /64 (one host
 *   usually holds a whole /64). Behind a proxy or NAT every client of that address shares one bucket.
 * - Except for an agent attesting again: an attestation (challenge and answer) whose TLS client presents the current
 *   SVID of an active agent of this trust domain ({@link AgentSvidAuthenticator.activeAgentOf}, the agent API's own
 *   rule) is charged to that agent's own attestation budget (same rate and burst, keyed by its SPIFFE ID), so that
 *   whoever shares its address (a NAT, a load balancer hiding client addresses) cannot starve its re-attestation
 *   with refused attempts. The SVID only chooses who pays: the attested identity comes from the evidence alone. No
 *   certificate, or one that does not pass (another trust domain, a workload SVID, an outdated serial, a banned or
 *   evicted agent), and the address pays, as for a first attestation.
 * - A refused attestation (403) costs {@link ATTESTATION_REFUSAL_COST} tokens in all: the rest is charged when the
 *   refusal is known ({@link chargeRefusedAttestation}, from `PublicRateLimitInterceptor`).
 * - A connection that ignores its Retry-After gets its next 429 late and closed, as every 429 of the TLS port
 *   ({@link IgnoredRetryAfter}).
 * - The local admin socket is not limited (its file permissions are the credential).
 * - Buckets live in this replica's memory: N replicas behind a load balancer allow N times the rate.
 */
/** What the request's route took from its budget up front ({@link Public}'s cost; 1 unless it says otherwise). */
function costOf(request: FastifyRequest): number {
  const config = request.routeOptions.config as unknown as Partial<Record<string, unknown>>;
  const cost = config[PUBLIC_COST_CONFIG];
  if (typeof cost === 'function') return (cost as (request: FastifyRequest) => number)(request);
  return typeof cost === 'number' ? cost : 1;
}

@Injectable()
export class PublicRateLimits implements OnModuleDestroy {
  private readonly limiters: Readonly<Record<PublicBudget, TokenBucketRateLimiter>>;
  // A refused caller repeats at will: a few lines per budget per interval, then a count of the rest.
  private readonly refusals: RateLimitedLog;
  /** Who pays for each attestation request admitted: the bucket key its refusal is charged to as well. */
  private readonly payers = new WeakMap<IncomingMessage, Payer>();

  constructor(
    private readonly adminSockets: AdminSocketConnections,
    private readonly agents: AgentSvidAuthenticator,
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
    this.refusals = new RateLimitedLog(new Logger(PublicRateLimits.name), { now: () => clock.now().getTime() });
  }

  onModuleDestroy(): void {
    this.refusals.close();
  }

  /** The Fastify `onRequest` hook: counts an open route's request, or answers 429 before the body is read. */
  readonly onRequest = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    const config = request.routeOptions.config as unknown as Partial<Record<string, OpenRouteBudget>>;
    const budget = config[PUBLIC_BUDGET_CONFIG];
    const socket = request.raw.socket;
    if (budget === undefined || budget === 'none' || this.adminSockets.has(socket)) return done();
    const byAddress: Payer = { key: addressKey(socket.remoteAddress), kind: 'address' };
    if (budget !== 'attestation' || !(socket instanceof TLSSocket))
      return this.take(request, reply, done, budget, byAddress);
    this.agents.activeAgentOf(socket).then(
      (agentId) => {
        const payer: Payer = agentId === undefined ? byAddress : { key: agentId, kind: 'agent' };
        this.payers.set(request.raw, payer);
        this.take(request, reply, done, budget, payer);
      },
      (error: unknown) => done(error as Error),
    );
  };

  /** Charges the rest of {@link ATTESTATION_REFUSAL_COST} to whoever paid for a refused attestation. */
  chargeRefusedAttestation(request: FastifyRequest): void {
    if (this.adminSockets.has(request.raw.socket)) return;
    const key = this.payers.get(request.raw)?.key ?? addressKey(request.raw.socket.remoteAddress);
    this.limiters.attestation.charge(key, ATTESTATION_REFUSAL_COST - costOf(request));
  }

  private take(
    request: FastifyRequest,
    reply: FastifyReply,
    done: HookHandlerDoneFunction,
    budget: PublicBudget,
    payer: Payer,
  ): void {
    const cost = costOf(request);
    const limiter = this.limiters[budget];
    // A route of cost 0 (the x509pop answer, bounded by the challenges) passes unless its payer is in debt.
    if (limiter.tryTake(payer.key, cost)) return done();
    const retryAfter = Math.max(1, limiter.retryAfterSeconds(payer.key, cost));
    this.refusals.warn(`${budget} ${payer.kind}`, {
      msg:
        payer.kind === 'agent'
          ? 'attestation refused: the agent presenting its SVID is over its own attestation rate limit'
          : 'unauthenticated request refused: source address over its rate limit',
      budget,
      ...(payer.kind === 'agent' ? { agentId: payer.key } : { address: payer.key }),
      path: logPath(request.url),
    });
    const who = payer.kind === 'agent' ? `agent ${payer.key}` : `source address ${payer.key}`;
    const body: ErrorBody = {
      error: 'resource_exhausted',
      message: `${who}: over its ${this.describe(budget)}; retry in ${retryAfter} s`,
    };
    void reply.code(429).header('retry-after', String(retryAfter)).send(body);
  }

  private describe(budget: PublicBudget): string {
    return budget === 'attestation'
      ? `attestation rate limit (${this.config.attestationRatePerSecond}/s, burst ${this.config.attestationBurst}; ` +
          `a refused attestation counts ${ATTESTATION_REFUSAL_COST})`
      : `rate limit for bundle, health and metrics requests (${this.config.publicReadRatePerSecond}/s, burst ` +
          `${this.config.publicReadBurst})`;
  }
}
