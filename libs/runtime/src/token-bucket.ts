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

/** How many of the least recently used buckets a new key looks at for a full one to replace. */
const EVICTION_SCAN = 32;

/**
 * One token bucket per key (an agent's SPIFFE ID on the server, a caller's uid on the agent). Buckets start full.
 * At most `maxKeys` are kept: a new key beyond that replaces a bucket that is full again (forgetting it changes
 * nothing), looked for among the {@link EVICTION_SCAN} least recently used; when none of those is full (a flood of
 * keys, e.g. the 65,536 /64s of one IPv6 /48), new keys share one overflow bucket until some are. So a key in debt
 * is never forgotten before it has refilled, however many other keys are seen. Time comes from `clock` (each app's
 * `Clock`, or a fake in tests).
 */
export class TokenBucketRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** The bucket new keys share while the map is full of buckets that are not. */
  private overflow: Bucket | undefined;

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
    const slot = this.slotOf(key, now);
    const tokens = this.level(this.bucketAt(slot), now);
    const allowed = tokens >= cost;
    this.store(slot, allowed ? tokens - cost : tokens, now);
    return allowed;
  }

  /**
   * Takes `cost` tokens now, or else reserves the next ones: when the bucket holds fewer than `cost` but is not in
   * debt (it holds 0 or more), the tokens are taken ahead (the bucket goes below zero) and the milliseconds until
   * they would have refilled are returned, which the caller waits before doing the work. A bucket already in debt (a
   * reservation is waiting) refuses: `undefined`, taking nothing. So a key waits at most `cost / ratePerSecond`
   * seconds, has at most one reservation at a time, and is served at the configured rate instead of refused.
   */
  reserve(key: string, cost = 1): number | undefined {
    const now = this.clock.now().getTime();
    const slot = this.slotOf(key, now);
    const tokens = this.level(this.bucketAt(slot), now);
    if (tokens < 0) return undefined;
    this.store(slot, tokens - cost, now);
    return tokens >= cost ? 0 : Math.ceil(((cost - tokens) / this.limit.ratePerSecond) * 1000);
  }

  /**
   * Takes `cost` tokens from the key's bucket whatever it holds: the bucket may go below zero, and the key then waits
   * until it has refilled. For work whose price is known only once it is done (a refused attempt that costs more).
   */
  charge(key: string, cost: number): void {
    const now = this.clock.now().getTime();
    const slot = this.slotOf(key, now);
    this.store(slot, this.level(this.bucketAt(slot), now) - cost, now);
  }

  /** Whole seconds until the key's bucket holds `cost` tokens (0 when it does now); for a Retry-After header. */
  retryAfterSeconds(key: string, cost = 1): number {
    const now = this.clock.now().getTime();
    const bucket = this.buckets.get(key) ?? (this.buckets.size >= this.maxKeys ? this.overflow : undefined);
    const missing = cost - this.level(bucket, now);
    return missing <= 0 ? 0 : Math.ceil(missing / this.limit.ratePerSecond);
  }

  /** How many keys have a bucket of their own (for tests). */
  get size(): number {
    return this.buckets.size;
  }

  /** The key itself when it has or may get a bucket of its own, else null: the shared overflow bucket. */
  private slotOf(key: string, nowMs: number): string | null {
    if (this.buckets.has(key) || this.buckets.size < this.maxKeys) return key;
    let scanned = 0;
    for (const [oldKey, bucket] of this.buckets) {
      if (scanned++ >= EVICTION_SCAN) break;
      if (this.level(bucket, nowMs) >= this.limit.burst) {
        this.buckets.delete(oldKey);
        return key;
      }
    }
    return null;
  }

  private bucketAt(slot: string | null): Bucket | undefined {
    return slot === null ? this.overflow : this.buckets.get(slot);
  }

  private store(slot: string | null, tokens: number, nowMs: number): void {
    if (slot === null) {
      this.overflow = { tokens, updatedAtMs: nowMs };
      return;
    }
    // Re-inserted so the map's order stays least recently used first.
    this.buckets.delete(slot);
    this.buckets.set(slot, { tokens, updatedAtMs: nowMs });
  }

  private level(bucket: Bucket | undefined, nowMs: number): number {
    if (!bucket) return this.limit.burst;
    const elapsedSeconds = Math.max(0, nowMs - bucket.updatedAtMs) / 1000;
    return Math.min(this.limit.burst, bucket.tokens + elapsedSeconds * this.limit.ratePerSecond);
  }
}
