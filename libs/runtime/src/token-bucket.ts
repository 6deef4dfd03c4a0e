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
    private readonly clock: { now(): Date },
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
