import { setTimeout as sleep } from 'node:timers/promises';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';

/**
 * The agent API's per-agent limit on syncs, from the config's `agent_sync_rate` and `agent_sync_burst`. Taken by
 * {@link AgentAuthGuard} once the SVID verified and before the agent's status is looked up, so a refused sync costs
 * no database query.
 *
 * It shapes before it refuses: a sync that finds the agent's burst used up waits for its token (at most
 * 1 / `agent_sync_rate` s, 200 ms at the default 5/s) and is then served, so an agent that follows a quick run of
 * entry changes is paced to the rate, each answer carrying what changed meanwhile, instead of being refused and
 * backing off (bench/README.md, "Two replicas": refusals made every third write of a run wait ~0.5 s). Only one sync
 * per agent waits at a time: one arriving while another waits is refused with 429 and a Retry-After, as is any
 * beyond that. Refusals are logged through a {@link RateLimitedLog}, never one line each.
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

  /**
   * Resolves when the agent may sync: at once, or after waiting for its next token. `key` names the bucket (the
   * agent SVID: its ID and serial); `agentId` is for messages.
   *
   * @throws AppError `resource_exhausted` when the agent is over its limit with a sync already waiting.
   */
  async admit(key: string, agentId: string): Promise<void> {
    const waitMs = this.buckets.reserve(key);
    if (waitMs === 0) return;
    if (waitMs !== undefined) {
      await sleep(waitMs);
      return;
    }
    this.refusals.warn('sync-rate', { msg: 'agent sync refused: over its sync rate limit', agentId });
    const retryAfterSeconds = Math.max(1, this.buckets.retryAfterSeconds(key));
    throw new AppError(
      'resource_exhausted',
      `agent ${agentId}: over its sync rate limit (agent_sync_rate ${this.config.agentSyncRatePerSecond}/s, ` +
        `agent_sync_burst ${this.config.agentSyncBurst}), retry in ${retryAfterSeconds} s`,
      { retryAfterSeconds },
    );
  }
}
