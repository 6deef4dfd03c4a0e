import { Inject, Injectable } from '@nestjs/common';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';

/**
 * The agent API's per-agent limit on signing requests (renew, X.509-SVID batches, JWT-SVIDs), from the config's
 * `agent_sign_rate` and `agent_sign_burst`.
 */
@Injectable()
export class AgentSignRateLimiter {
  private readonly buckets: TokenBucketRateLimiter;

  constructor(
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'agentSignRatePerSecond' | 'agentSignBurst'>,
    @Inject(CLOCK) clock: Clock,
  ) {
    this.buckets = new TokenBucketRateLimiter(
      { ratePerSecond: config.agentSignRatePerSecond, burst: config.agentSignBurst },
      clock,
    );
  }

  /** @throws AppError `resource_exhausted` when the agent is over its limit. */
  take(agentId: string): void {
    if (!this.buckets.tryTake(agentId)) {
      throw new AppError('resource_exhausted', `agent ${agentId}: over its signing rate limit, retry later`);
    }
  }
}
