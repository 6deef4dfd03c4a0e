import { Inject, Injectable } from '@nestjs/common';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';

/** A token bucket's shape: refilled at `ratePerSecond`, holding at most `burst` tokens. */
export interface RateLimit {
  readonly ratePerSecond: number;
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  updatedAtMs: number;
}

/**
 * One token bucket per key (an agent's SPIFFE ID). Buckets start full; the least recently used ones are forgotten
 * beyond `maxKeys`, which only ever hands a quiet caller a full bucket again.
 */
export class TokenBucketRateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: RateLimit,
    private readonly clock: Clock,
    private readonly maxKeys = 100_000,
  ) {
    if (!(limit.ratePerSecond > 0) || !(limit.burst >= 1)) {
      throw new Error(`rate limit: rate must be > 0 and burst >= 1, got ${limit.ratePerSecond}/s, ${limit.burst}`);
    }
  }

  /** Takes `cost` tokens from the key's bucket: true if it held enough, false (taking nothing) if not. */
  tryTake(key: string, cost = 1): boolean {
    const now = this.clock.now().getTime();
    const bucket = this.buckets.get(key);
    const elapsedSeconds = bucket ? Math.max(0, now - bucket.updatedAtMs) / 1000 : 0;
    const tokens = bucket
      ? Math.min(this.limit.burst, bucket.tokens + elapsedSeconds * this.limit.ratePerSecond)
      : this.limit.burst;
    const allowed = tokens >= cost;
    // Re-inserted so the map's order stays least recently used first.
    this.buckets.delete(key);
    this.buckets.set(key, { tokens: allowed ? tokens - cost : tokens, updatedAtMs: now });
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return allowed;
  }
}

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
