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

  it('reserves the next token for a key that ran out, once: the wait is until it refills; a second is refused', () => {
    const clock = new FakeClock();
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 5, burst: 2 }, clock);
    expect([limiter.reserve('a'), limiter.reserve('a')]).toEqual([0, 0]);
    clock.advance(40); // 0.2 tokens: the next one is 160 ms away
    expect(limiter.reserve('a')).toBe(160);
    // In debt until then: nothing more is reserved, and nothing can be taken either.
    expect(limiter.reserve('a')).toBeUndefined();
    expect(limiter.tryTake('a')).toBe(false);
    expect(limiter.reserve('b')).toBe(0);
    clock.advance(159);
    expect(limiter.reserve('a')).toBeUndefined();
    clock.advance(1); // the reservation is paid: the bucket is at 0, so the next one waits a whole token
    expect(limiter.reserve('a')).toBe(200);
    clock.advance(10_000);
    expect(limiter.reserve('a', 2)).toBe(0);
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

  it('beyond its capacity, replaces a bucket that is full again; new keys share one overflow bucket meanwhile', () => {
    const clock = new FakeClock();
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 1, burst: 1 }, clock, 2);
    expect(limiter.tryTake('a')).toBe(true);
    expect(limiter.tryTake('b')).toBe(true);
    // Neither a nor b is full: c and d share the overflow bucket, and a and b keep their (empty) buckets.
    expect(limiter.tryTake('c')).toBe(true);
    expect(limiter.tryTake('d')).toBe(false);
    expect(limiter.tryTake('a')).toBe(false);
    expect(limiter.tryTake('b')).toBe(false);
    expect(limiter.size).toBe(2);
    clock.advance(1_000);
    // a is full again: e replaces it.
    expect(limiter.tryTake('e')).toBe(true);
    expect(limiter.tryTake('e')).toBe(false);
    expect(limiter.size).toBe(2);
  });

  it('never forgets a key in debt before it has refilled, however many other keys are seen (an IPv6 /48)', () => {
    const clock = new FakeClock();
    const limiter = new TokenBucketRateLimiter({ ratePerSecond: 10, burst: 100 }, clock, 1_000);
    for (let i = 0; i < 10; i++) {
      limiter.tryTake('attacker');
      limiter.charge('attacker', 9);
    }
    limiter.charge('attacker', 50);
    expect(limiter.tryTake('attacker')).toBe(false);
    let allowed = 0;
    for (let subnet = 0; subnet < 65_536; subnet++)
      if (limiter.tryTake(`2001:db8:1:${subnet.toString(16)}::/64`)) allowed++;
    expect(limiter.tryTake('attacker')).toBe(false);
    expect(limiter.retryAfterSeconds('attacker')).toBe(6);
    // 999 keys of their own (one token each), then the overflow bucket's 100: not 65,536.
    expect(allowed).toBe(999 + 100);
    expect(limiter.size).toBe(1_000);
  });

  it('rejects a limit that could never allow anything', () => {
    expect(() => new TokenBucketRateLimiter({ ratePerSecond: 0, burst: 1 }, new FakeClock())).toThrow(
      'rate limit: rate must be > 0 and burst >= 1, got 0/s, 1',
    );
  });
});
