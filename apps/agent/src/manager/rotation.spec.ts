import { describe, expect, it } from 'vitest';
import { ROTATION_JITTER, jwtReuseDeadline, rotationTime } from './rotation.js';

const t0 = Date.UTC(2030, 0, 1);
const at = (seconds: number): Date => new Date(t0 + seconds * 1000);

describe('rotationTime', () => {
  const validity = { notBefore: at(0), notAfter: at(3600) };

  it.each([
    [0.5, 1800],
    [0, 1620],
    [0.999_999, 1980],
    [0.25, 1710],
  ])('with random %d rotates at %d s of a one-hour SVID', (random, seconds) => {
    expect(rotationTime(validity, at(0), () => random).getTime()).toBeCloseTo(at(seconds).getTime(), -1);
  });

  it('stays within half life ± 10 % for any random value', () => {
    for (let i = 0; i <= 100; i++) {
      const due = rotationTime(validity, at(0), () => i / 101).getTime();
      expect(due).toBeGreaterThanOrEqual(at(1800 * (1 - ROTATION_JITTER)).getTime());
      expect(due).toBeLessThanOrEqual(at(1800 * (1 + ROTATION_JITTER)).getTime());
    }
  });

  it('counts the lifetime from receipt, not from a backdated not-before', () => {
    // A 6 s SVID backdated by 10 s: half of notBefore..notAfter would already be past when it arrives.
    const short = { notBefore: at(-10), notAfter: at(6) };
    expect(rotationTime(short, at(0), () => 0.5)).toEqual(at(3));
  });

  it('uses not-before when the SVID is received before it starts (a stored SVID read at start-up)', () => {
    expect(rotationTime(validity, at(-100), () => 0.5)).toEqual(at(1800));
  });

  it('rotates at once an SVID that has already expired', () => {
    expect(rotationTime(validity, at(4000), () => 0.5)).toEqual(at(4000));
  });
});

describe('jwtReuseDeadline', () => {
  it('is half the lifetime after issuance', () => {
    expect(jwtReuseDeadline(at(0), at(300))).toEqual(at(150));
    expect(jwtReuseDeadline(at(10), at(5))).toEqual(at(10));
  });
});
