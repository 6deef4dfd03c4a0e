import { describe, expect, it } from 'vitest';
import {
  DurationError,
  formatDuration,
  parseDurationMs,
  parseDurationNanoseconds,
  durationSeconds,
  durationSecondsWithin,
} from './duration.js';

describe('parseDurationNanoseconds (Go time.ParseDuration syntax)', () => {
  it.each([
    ['0', 0],
    ['0s', 0],
    ['1ns', 1],
    ['1us', 1e3],
    ['1µs', 1e3],
    ['1μs', 1e3],
    ['1.5ms', 1.5e6],
    ['90s', 90e9],
    ['15m', 900e9],
    ['1h30m', 5400e9],
    ['1.5h', 5400e9],
    ['.5s', 0.5e9],
    ['1h0m0s', 3600e9],
    ['2h45m30.5s', (2 * 3600 + 45 * 60 + 30.5) * 1e9],
    ['7d', 7 * 86400e9],
    ['3600', 3600e9],
    ['0.5', 0.5e9],
    [' 5m ', 300e9],
  ])('%s', (text, expected) => {
    expect(parseDurationNanoseconds(text)).toBe(expected);
  });

  it('takes a JSON number as seconds', () => {
    expect(parseDurationNanoseconds(90)).toBe(90e9);
  });

  it.each(['', '-1s', '+1s', '1x', 'h', '1 h', '1h 30m', '1hour', '1e3s', 'NaN', '1.s.', '∞', 'x'.repeat(65)])(
    'refuses %j with the syntax in the message',
    (text) => {
      expect(() => parseDurationNanoseconds(text)).toThrow(DurationError);
      expect(() => parseDurationNanoseconds(text)).toThrow(/such as 90s, 15m or 1h30m/);
    },
  );

  it('refuses negative and non-finite numbers', () => {
    for (const value of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => parseDurationNanoseconds(value)).toThrow(DurationError);
    }
  });

  it('refuses what overflows Go int64 nanoseconds (about 292 years)', () => {
    expect(() => parseDurationNanoseconds('3000000h')).toThrow(/too long/);
    expect(parseDurationNanoseconds('2000000h')).toBe(2000000 * 3600e9);
  });

  it('shows at most 64 characters of a long bad value', () => {
    let error: Error | undefined;
    try {
      parseDurationNanoseconds('y'.repeat(10_000));
    } catch (caught) {
      error = caught as Error;
    }
    expect(error?.message.length).toBeLessThan(200);
  });
});

describe('durationSeconds', () => {
  it('gives whole seconds', () => {
    expect(durationSeconds('1h30m')).toBe(5400);
    expect(durationSeconds('3600')).toBe(3600);
    expect(durationSeconds(' 7d')).toBe(7 * 86400);
  });

  it('refuses a fraction of a second rather than cutting it', () => {
    expect(() => durationSeconds('1500ms')).toThrow(/whole number of seconds/);
    expect(() => durationSeconds(1.5)).toThrow(/whole number of seconds/);
  });

  it('checks bounds in the operator units', () => {
    expect(durationSecondsWithin('1h', 60, 86400)).toBe(3600);
    expect(() => durationSecondsWithin('30s', 60, 86400)).toThrow('must be from 1m to 24h, got "30s"');
  });
});

describe('parseDurationMs', () => {
  it('rounds down to milliseconds', () => {
    expect(parseDurationMs('1.9999ms')).toBe(1);
    expect(parseDurationMs('2.5')).toBe(2500);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [59, '59s'],
    [90, '1m30s'],
    [3600, '1h'],
    [86400, '24h'],
    [315360000, '87600h'],
  ])('%d → %s, read back the same', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
    expect(durationSeconds(text)).toBe(seconds);
  });
});
