import type { Clock } from './clock.js';

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
 * One token bucket per key (an agent's SPIFFE ID on the server, a caller's uid on the agent). Buckets start full;
 * the least recently used ones are forgotten beyond `maxKeys`, which only ever hands a quiet caller a full bucket
 * again. Time comes from `clock` (each app's `Clock`, or a fake in tests).
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
    const tokens = this.tokensAt(key, now);
    const allowed = tokens >= cost;
    // Re-inserted so the map's order stays least recently used first.
    this.buckets.delete(key);
    this.buckets.set(key, { tokens: allowed ? tokens - cost : tokens, updatedAtMs: now });
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return allowed;
  }

  /**
   * Takes `cost` tokens from the key's bucket whatever it holds: the bucket may go below zero, and the key then waits
   * until it has refilled. For work whose price is known only once it is done (a refused attempt that costs more).
   */
  charge(key: string, cost: number): void {
    const now = this.clock.now().getTime();
    const tokens = this.tokensAt(key, now);
    this.buckets.delete(key);
    this.buckets.set(key, { tokens: tokens - cost, updatedAtMs: now });
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
  }

  /** Whole seconds until the key's bucket holds `cost` tokens (0 when it does now); for a Retry-After header. */
  retryAfterSeconds(key: string, cost = 1): number {
    const missing = cost - this.tokensAt(key, this.clock.now().getTime());
    return missing <= 0 ? 0 : Math.ceil(missing / this.limit.ratePerSecond);
  }

  private tokensAt(key: string, nowMs: number): number {
    const bucket = this.buckets.get(key);
    if (!bucket) return this.limit.burst;
    const elapsedSeconds = Math.max(0, nowMs - bucket.updatedAtMs) / 1000;
    return Math.min(this.limit.burst, bucket.tokens + elapsedSeconds * this.limit.ratePerSecond);
  }
}
