import { describe, expect, it } from 'vitest';
import { type CheckedChain, CheckedChains } from './checked-chains.js';

const chainOf = (...bytes: number[]): Uint8Array[] => bytes.map((byte) => new Uint8Array([0x30, 1, byte]));

/** A check that counts its calls and passes, valid from 1,000 to 2,000 (ms). */
function countingCheck(value: string) {
  let calls = 0;
  const check = (): CheckedChain<string> => {
    calls++;
    return { value, validFromMs: 1_000, validUntilMs: 2_000 };
  };
  return { check, calls: () => calls };
}

describe('CheckedChains', () => {
  it('checks the same chain once, and a chain with other bytes again', () => {
    const chains = new CheckedChains<string>(10);
    const { check, calls } = countingCheck('agent a');
    for (let i = 0; i < 5; i++) expect(chains.get(chainOf(1, 2), 1_500, check)).toBe('agent a');
    expect(calls()).toBe(1);
    chains.get(chainOf(1, 3), 1_500, check);
    chains.get(chainOf(1), 1_500, check);
    expect(calls()).toBe(3);
  });

  it('checks again in another scope, and outside the validity of every certificate', () => {
    const chains = new CheckedChains<string>(10);
    const first = countingCheck('bundle 1');
    chains.get(chainOf(1), 1_500, first.check, '1');
    const second = countingCheck('bundle 2');
    expect(chains.get(chainOf(1), 1_500, second.check, '2')).toBe('bundle 2');
    expect(chains.get(chainOf(1), 1_500, first.check, '1')).toBe('bundle 1');
    expect([first.calls(), second.calls()]).toEqual([1, 1]);
    // Past the chain's validity (an intermediate expired before the leaf): checked again, which throws.
    const expired = () => {
      throw new Error('intermediate expired');
    };
    expect(() => chains.get(chainOf(1), 2_001, expired, '2')).toThrow('intermediate expired');
    expect(() => chains.get(chainOf(1), 999, expired, '2')).toThrow('intermediate expired');
    // A failure is not remembered: the next check runs.
    const third = countingCheck('bundle 2 again');
    chains.get(chainOf(1), 1_500, third.check, '2');
    chains.get(chainOf(1), 1_500, third.check, '2');
    expect(third.calls()).toBe(1);
  });

  it('finds a remembered outcome without checking, and nothing for a chain unknown, in another scope or out of its validity', () => {
    const chains = new CheckedChains<string>(10);
    expect(chains.find(chainOf(1), 1_500, 's')).toBeUndefined();
    const { check, calls } = countingCheck('agent a');
    chains.get(chainOf(1), 1_500, check, 's');
    expect(chains.find(chainOf(1), 1_600, 's')).toBe('agent a');
    expect(chains.find(chainOf(1), 1_600, 'other scope')).toBeUndefined();
    expect(chains.find(chainOf(1, 2), 1_600, 's')).toBeUndefined();
    expect(chains.find(chainOf(1), 2_001, 's')).toBeUndefined();
    expect(calls()).toBe(1);
  });

  it('does not remember an outcome its check marks remember: false, and returns it all the same', () => {
    const chains = new CheckedChains<string>(10);
    let calls = 0;
    const check = () => {
      calls++;
      return { value: 'padded', validFromMs: 1_000, validUntilMs: 2_000, remember: false };
    };
    expect(chains.get(chainOf(1), 1_500, check)).toBe('padded');
    expect(chains.get(chainOf(1), 1_500, check)).toBe('padded');
    expect(calls).toBe(2);
    expect(chains.size).toBe(0);
  });

  it('keeps at most maxEntries chains, forgetting the least recently used first', () => {
    const chains = new CheckedChains<string>(2);
    const { check, calls } = countingCheck('agent a');
    chains.get(chainOf(1), 1_500, check);
    chains.get(chainOf(2), 1_500, check);
    chains.get(chainOf(1), 1_500, check); // used again: 2 is now the least recently used
    chains.get(chainOf(3), 1_500, check);
    expect(chains.size).toBe(2);
    expect(calls()).toBe(3);
    chains.get(chainOf(1), 1_500, check);
    expect(calls()).toBe(3);
    chains.get(chainOf(2), 1_500, check);
    expect(calls()).toBe(4);
  });
});
