import { describe, expect, it } from 'vitest';
import { ExponentialBackoff } from './backoff.js';

describe('ExponentialBackoff', () => {
  it('doubles from 1 s up to 30 s by default and starts over after a reset (go-spiffe schedule)', () => {
    const backoff = new ExponentialBackoff();
    const delays = Array.from({ length: 8 }, () => backoff.next());
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    backoff.reset();
    expect(backoff.next()).toBe(1000);
  });

  it('takes its own schedule', () => {
    const backoff = new ExponentialBackoff({ initialDelayMs: 10, maxDelayMs: 50, multiplier: 3 });
    expect([backoff.next(), backoff.next(), backoff.next()]).toEqual([10, 30, 50]);
  });

  it.each([
    [{ initialDelayMs: 0 }, 'initialDelayMs must be a positive number, got 0'],
    [{ maxDelayMs: -1 }, 'maxDelayMs must be a positive number, got -1'],
    [{ initialDelayMs: 100, maxDelayMs: 10 }, 'maxDelayMs must not be less than initialDelayMs'],
    [{ multiplier: 0.5 }, 'multiplier must be at least 1, got 0.5'],
  ])('refuses %j', (options, message) => {
    expect(() => new ExponentialBackoff(options)).toThrow(message);
  });
});
