import { describe, expect, it } from 'vitest';
import { choosesV8Flag, defaultV8Flags, type DefaultV8Flag } from './v8-flags.js';

const TIERING = /--(no-)?wasm[-_]tier[-_]up\b/;
const DEFAULTS: readonly DefaultV8Flag[] = [
  { flag: '--no-wasm-tier-up', chosenBy: TIERING },
  { flag: '--heap-growing-percent=50', chosenBy: /--heap[-_]growing[-_]percent\b/ },
];

describe('defaultV8Flags', () => {
  it('gives every default flag when the operator chose none of their settings', () => {
    expect(defaultV8Flags(DEFAULTS, [], undefined)).toEqual(['--no-wasm-tier-up', '--heap-growing-percent=50']);
    expect(defaultV8Flags(DEFAULTS, ['--enable-source-maps'], '--max-old-space-size=512')).toEqual([
      '--no-wasm-tier-up',
      '--heap-growing-percent=50',
    ]);
  });

  it('leaves out each one whose setting the operator chose, as a node option or in NODE_OPTIONS, in any spelling', () => {
    expect(defaultV8Flags(DEFAULTS, ['--wasm-tier-up'], undefined)).toEqual(['--heap-growing-percent=50']);
    expect(defaultV8Flags(DEFAULTS, ['--no-wasm_tier_up'], '')).toEqual(['--heap-growing-percent=50']);
    expect(defaultV8Flags(DEFAULTS, [], '--trace-gc --heap_growing_percent=20')).toEqual(['--no-wasm-tier-up']);
    expect(defaultV8Flags(DEFAULTS, ['--heap-growing-percent', '30', '--wasm-tier-up'], '')).toEqual([]);
    // NODE_OPTIONS is read one option at a time, as node splits it.
    expect(defaultV8Flags([{ flag: '--x', chosenBy: /^--y$/ }], [], '--trace-gc  --y')).toEqual([]);
  });

  it('reads a pattern with the global flag the same for every option (no lastIndex carried over)', () => {
    const flag: DefaultV8Flag = { flag: '--x', chosenBy: /--y/g };
    expect([choosesV8Flag(flag, '--y'), choosesV8Flag(flag, '--y'), choosesV8Flag(flag, '--z')]).toEqual([
      true,
      true,
      false,
    ]);
  });
});
