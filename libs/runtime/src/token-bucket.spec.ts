import { describe, expect, it } from 'vitest';
import { TokenBucketRateLimiter } from './token-bucket.js';

class FakeClock {
  private ms = Date.parse('2026-01-01T00:00:00Z');
  now(): Date {
    return new Date(this.ms);
  }
  advance(ms: number): void {
    this.ms += ms;
  }
}

describe('TokenBucketRateLimiter', () => {
  it('charges a cost after the fact, below zero if need be, and says when the bucket holds enough again', () => {
    const clock = new FakeClock();
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 2, burst: 4 }, clock);
    expect(limiter.retryAfterSeconds('a')).toBe(0);
    expect(limiter.tryTake('a')).toBe(true);
    limiter.charge('a', 9); // 4 - 1 - 9 = -6
    expect(limiter.tryTake('a')).toBe(false);
    expect(limiter.retryAfterSeconds('a')).toBe(4); // 7 tokens missing at 2/s
    expect(limiter.retryAfterSeconds('a', 4)).toBe(5);
    clock.advance(3_000);
    expect(limiter.tryTake('a')).toBe(false);
    clock.advance(500);
    expect(limiter.tryTake('a')).toBe(true);
    expect(limiter.retryAfterSeconds('b', 5)).toBe(1);
  });

  it('allows a burst, then refills at the rate, per key', () => {
    const clock = new FakeClock();
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 2, burst: 3 }, clock);
    expect([1, 2, 3, 4].map(() => limiter.tryTake('a'))).toEqual([true, true, true, false]);
    expect(limiter.tryTake('b')).toBe(true);
    clock.advance(499);
    expect(limiter.tryTake('a')).toBe(false);
    clock.advance(1);
    expect(limiter.tryTake('a')).toBe(true);
    clock.advance(60_000);
    expect([1, 2, 3, 4].map(() => limiter.tryTake('a'))).toEqual([true, true, true, false]);
  });

  it('takes nothing when a request costs more than the bucket holds', () => {
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 1, burst: 5 }, new FakeClock());
    expect(limiter.tryTake('a', 6)).toBe(false);
    expect(limiter.tryTake('a', 5)).toBe(true);
  });

  it('forgets the least recently used key beyond its capacity (which gets a full bucket again)', () => {
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 1, burst: 1 }, new FakeClock(), 2);
    expect(limiter.tryTake('a')).toBe(true);
    expect(limiter.tryTake('b')).toBe(true);
    expect(limiter.tryTake('b')).toBe(false);
    expect(limiter.tryTake('c')).toBe(true);
    expect(limiter.tryTake('b')).toBe(false);
    expect(limiter.tryTake('a')).toBe(true);
  });

  it('rejects a limit that could never allow anything', () => {
    expect(() => new TokenBucketRateLimiter({ ratePerSecond: 0, burst: 1 }, new FakeClock())).toThrow(
      'rate limit: rate must be > 0 and burst >= 1, got 0/s, 1',
    );
  });
});
