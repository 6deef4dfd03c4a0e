import { Inject, Injectable, Logger } from '@nestjs/common';
import { RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';

/**
 * The agent API's per-agent limit on syncs, from the config's `agent_sync_rate` and `agent_sync_burst`. Taken by
 * {@link AgentAuthGuard} once the SVID verified and before the agent's status is looked up, so a refused sync costs
 * no database query. Refusals are logged through a {@link RateLimitedLog}, never one line each.
 */
@Injectable()
export class AgentSyncRateLimiter {
  private readonly buckets: TokenBucketRateLimiter;
  private readonly refusals: RateLimitedLog;

  constructor(
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'agentSyncRatePerSecond' | 'agentSyncBurst'>,
    @Inject(CLOCK) clock: Clock,
  ) {
    this.buckets = new TokenBucketRateLimiter(
      { ratePerSecond: config.agentSyncRatePerSecond, burst: config.agentSyncBurst },
      clock,
    );
    this.refusals = new RateLimitedLog(new Logger(AgentSyncRateLimiter.name), { now: () => clock.now().getTime() });
  }

  /** @throws AppError `resource_exhausted` when the agent is over its limit. */
  take(agentId: string): void {
    if (this.buckets.tryTake(agentId)) return;
    this.refusals.warn('sync-rate', { msg: 'agent sync refused: over its sync rate limit', agentId });
    const retryAfterSeconds = Math.max(1, this.buckets.retryAfterSeconds(agentId));
    throw new AppError(
      'resource_exhausted',
      `agent ${agentId}: over its sync rate limit (agent_sync_rate ${this.config.agentSyncRatePerSecond}/s, ` +
        `agent_sync_burst ${this.config.agentSyncBurst}), retry in ${retryAfterSeconds} s`,
      { retryAfterSeconds },
    );
  }
}
