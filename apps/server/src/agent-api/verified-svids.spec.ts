import { describe, expect, it } from 'vitest';
import { type SvidVerification, VerifiedSvidCache } from './verified-svids.js';

const chainOf = (...bytes: number[]): Uint8Array[] => bytes.map((byte) => new Uint8Array([0x30, 1, byte]));

/** A verifier that counts its calls and returns a verification valid from 1,000 to 2,000 (ms). */
function countingVerifier(spiffeId: string, bundleSequence = 1) {
  let calls = 0;
  const verify = (): SvidVerification => {
    calls++;
    return {
      svid: { spiffeId, serialNumber: '01', notBeforeMs: 1_000, notAfterMs: 3_000, bundleSequence },
      validFromMs: 1_000,
      validUntilMs: 2_000,
    };
  };
  return { verify, calls: () => calls };
}

describe('VerifiedSvidCache', () => {
  it('verifies the same chain once, and a chain with other bytes again', () => {
    const cache = new VerifiedSvidCache(10);
    const { verify, calls } = countingVerifier('spiffe://example.org/sigil/agent/a');
    for (let i = 0; i < 5; i++) {
      expect(cache.verified(chainOf(1, 2), 1, 1_500, verify).spiffeId).toBe('spiffe://example.org/sigil/agent/a');
    }
    expect(calls()).toBe(1);
    cache.verified(chainOf(1, 3), 1, 1_500, verify);
    cache.verified(chainOf(1), 1, 1_500, verify);
    expect(calls()).toBe(3);
  });

  it('verifies again under another bundle sequence, and outside the validity of every certificate', () => {
    const cache = new VerifiedSvidCache(10);
    const first = countingVerifier('spiffe://example.org/sigil/agent/a', 1);
    cache.verified(chainOf(1), 1, 1_500, first.verify);
    const second = countingVerifier('spiffe://example.org/sigil/agent/a', 2);
    cache.verified(chainOf(1), 2, 1_500, second.verify);
    expect(second.calls()).toBe(1);
    // Past the chain's validity (an intermediate expired before the leaf): verified again, which throws.
    const expired = () => {
      throw new Error('intermediate expired');
    };
    expect(() => cache.verified(chainOf(1), 2, 2_001, expired)).toThrow('intermediate expired');
    expect(() => cache.verified(chainOf(1), 2, 999, expired)).toThrow('intermediate expired');
    // A failure is not remembered: the next verification runs.
    const third = countingVerifier('spiffe://example.org/sigil/agent/a', 2);
    cache.verified(chainOf(1), 2, 1_500, third.verify);
    cache.verified(chainOf(1), 2, 1_500, third.verify);
    expect(third.calls()).toBe(1);
  });

  it('keeps at most maxEntries chains, forgetting the least recently used first', () => {
    const cache = new VerifiedSvidCache(2);
    const { verify, calls } = countingVerifier('spiffe://example.org/sigil/agent/a');
    cache.verified(chainOf(1), 1, 1_500, verify);
    cache.verified(chainOf(2), 1, 1_500, verify);
    cache.verified(chainOf(1), 1, 1_500, verify); // used again: 2 is now the least recently used
    cache.verified(chainOf(3), 1, 1_500, verify);
    expect(cache.size).toBe(2);
    expect(calls()).toBe(3);
    cache.verified(chainOf(1), 1, 1_500, verify);
    expect(calls()).toBe(3);
    cache.verified(chainOf(2), 1, 1_500, verify);
    expect(calls()).toBe(4);
  });
});
