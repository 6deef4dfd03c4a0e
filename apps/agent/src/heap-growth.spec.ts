import { describe, expect, it } from 'vitest';
import {
  AGENT_HEAP_GROWING_PERCENT,
  AGENT_SEMI_SPACE_GROWTH_FACTOR,
  heapGrowthFlag,
  semiSpaceGrowthFlag,
} from './heap-growth.js';

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

describe('semiSpaceGrowthFlag', () => {
  it("keeps the young generation's semi-spaces at their first size unless the operator sized them", () => {
    expect(AGENT_SEMI_SPACE_GROWTH_FACTOR).toBe(1);
    expect(semiSpaceGrowthFlag([], undefined)).toBe('--semi-space-growth-factor=1');
    expect(semiSpaceGrowthFlag(['--heap-growing-percent=100'], '--trace-gc')).toBe('--semi-space-growth-factor=1');
  });

  it('keeps a growth factor or a largest semi-space size given as a node option or in NODE_OPTIONS', () => {
    expect(semiSpaceGrowthFlag(['--semi-space-growth-factor=2'], undefined)).toBeUndefined();
    expect(semiSpaceGrowthFlag([], '--max_semi_space_size=8')).toBeUndefined();
    expect(semiSpaceGrowthFlag(['--max-semi-space-size', '16'], '')).toBeUndefined();
  });
});
