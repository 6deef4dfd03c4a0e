import { describe, expect, it } from 'vitest';
import { type Clock, ExpiryDeadline } from './clock.js';

/** A wall clock the test sets forward or back, as an operator (or NTP stepping) would. */
function steppedClock(): Clock & { offsetMs: number } {
  const clock = { offsetMs: 0, now: () => new Date(Date.now() + clock.offsetMs) };
  return clock;
}

describe('ExpiryDeadline', () => {
  it('passes at once when the wall clock jumps forward past it', () => {
    const clock = steppedClock();
    const deadline = ExpiryDeadline.start(new Date(Date.now() + 60_000), clock);
    expect(deadline.passed(clock)).toBe(false);
    clock.offsetMs = 3_600_000;
    expect(deadline.passed(clock)).toBe(true);
  });

  it('still passes when the time left has elapsed, though the wall clock was set back an hour', async () => {
    const clock = steppedClock();
    const deadline = ExpiryDeadline.start(new Date(Date.now() + 100), clock);
    clock.offsetMs = -3_600_000;
    expect(deadline.passed(clock)).toBe(false);
    // By the wall clock alone an hour is left; the monotonic clock ends it after the 100 ms that were left.
    for (let i = 0; i < 1000 && !deadline.passed(clock); i++) await new Promise((done) => setTimeout(done, 10));
    expect(deadline.passed(clock)).toBe(true);
    expect(deadline.at.getTime() - clock.now().getTime()).toBeGreaterThan(3_000_000);
  });
});
