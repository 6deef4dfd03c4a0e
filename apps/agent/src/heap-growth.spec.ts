import { describe, expect, it } from 'vitest';
import { AGENT_HEAP_GROWING_PERCENT, heapGrowthFlag } from './heap-growth.js';

describe('heapGrowthFlag', () => {
  it("bounds the heap's growth between full collections unless the operator chose a factor", () => {
    expect(AGENT_HEAP_GROWING_PERCENT).toBe(50);
    expect(heapGrowthFlag([], undefined)).toBe('--heap-growing-percent=50');
    expect(heapGrowthFlag(['--enable-source-maps'], '--max-old-space-size=512')).toBe('--heap-growing-percent=50');
  });

  it('keeps a growing factor given as a node option or in NODE_OPTIONS, in either spelling', () => {
    expect(heapGrowthFlag(['--heap-growing-percent=100'], undefined)).toBeUndefined();
    expect(heapGrowthFlag([], '--trace-gc --heap_growing_percent=20')).toBeUndefined();
    expect(heapGrowthFlag(['--heap-growing-percent', '30'], '')).toBeUndefined();
  });
});
