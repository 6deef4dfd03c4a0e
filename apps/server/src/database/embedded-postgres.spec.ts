import { defaultV8Flags } from '@sigil/runtime/v8-flags';
import { describe, expect, it } from 'vitest';
import { EMBEDDED_WASM_FLAGS } from './embedded-postgres.js';

describe('EMBEDDED_WASM_FLAGS', () => {
  it('turns both kinds of WebAssembly tier-up off by default', () => {
    expect(defaultV8Flags(EMBEDDED_WASM_FLAGS, [], undefined)).toEqual([
      '--no-wasm-dynamic-tiering',
      '--no-wasm-tier-up',
    ]);
  });

  it('sets neither when the operator chose how WebAssembly tiers up, in any of its flags and spellings', () => {
    const options = ['--liftoff-only', '--no-liftoff', '--noliftoff', '--wasm-dynamic-tiering', '--wasm-tier-up'];
    options.push('--no-wasm_tier_up', '--nowasm-dynamic-tiering', '--no_wasm_dynamic_tiering');
    options.push('--wasm-tiering-budget=9', '-liftoff-only', '--wasm-tier-up=false');
    for (const option of options) {
      expect(defaultV8Flags(EMBEDDED_WASM_FLAGS, [option], undefined), option).toEqual([]);
    }
  });

  it('keeps them beside other node options, even ones whose names or values contain a tiering flag', () => {
    const others = ['--max-old-space-size=512', '--wasm-max-mem-pages=100', '--liftoff', '--wasm-tier-up-filter=3'];
    others.push('--require=/opt/--liftoff-only.js', '--trace-wasm-compilation-times');
    expect(defaultV8Flags(EMBEDDED_WASM_FLAGS, others, '')).toEqual(['--no-wasm-dynamic-tiering', '--no-wasm-tier-up']);
  });
});
