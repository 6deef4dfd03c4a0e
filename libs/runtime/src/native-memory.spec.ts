import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  canReleaseFreedNativeMemory,
  releaseFreedNativeMemory,
  releaseFreedNativeMemoryEvery,
} from './native-memory.js';

const glibc = process.platform === 'linux' && Boolean(readFileSync('/proc/self/maps', 'utf8').match(/\/libc\.so\.6$/m));

/** Said in a skipped test's title: why it cannot run here. */
const notGlibc = glibc ? '' : ' (skipped: this libc is not glibc, the only one with malloc_trim)';

function residentMiB(): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
}

/**
 * Leaves ~48 MiB free inside glibc's arena: 96 MiB of 48 KiB buffers (each malloc'ed, below the mmap threshold),
 * touched, every other one then freed, so the free ones are holes glibc does not return by itself (it trims only the
 * top of a heap). Returns the kept half.
 */
async function freeHolesInTheArena(): Promise<Buffer[]> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let buffers: Buffer[] = Array.from({ length: 2048 }, () => Buffer.allocUnsafeSlow(48 * 1024).fill(1));
  const kept = buffers.filter((_, index) => index % 2 === 0);
  buffers = [];
  gc();
  // ArrayBuffer backing stores are freed by a sweeper after the collection.
  await new Promise((resolve) => setTimeout(resolve, 200));
  gc();
  return kept;
}

describe('releaseFreedNativeMemory (glibc malloc_trim)', () => {
  it.runIf(glibc)(`gives the allocator’s free pages back: the RSS falls by what was freed${notGlibc}`, async () => {
    expect(canReleaseFreedNativeMemory()).toBe(true);
    releaseFreedNativeMemory();
    const kept = await freeHolesInTheArena();
    const before = residentMiB();
    expect(releaseFreedNativeMemory()).toBe(true);
    const after = residentMiB();
    expect(before - after).toBeGreaterThan(24);
    expect(kept.every((buffer) => buffer.length === 48 * 1024 && buffer[0] === 1)).toBe(true);
  });

  it.runIf(glibc)(`releaseFreedNativeMemoryEvery does the same at once, on a worker thread${notGlibc}`, async () => {
    releaseFreedNativeMemory();
    const kept = await freeHolesInTheArena();
    const before = residentMiB();
    const stop = releaseFreedNativeMemoryEvery(60_000);
    try {
      let after = residentMiB();
      for (let waited = 0; before - after <= 24 && waited < 5_000; waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        after = residentMiB();
      }
      expect(before - after).toBeGreaterThan(24);
    } finally {
      stop();
    }
    expect(kept.every((buffer) => buffer.length === 48 * 1024 && buffer[0] === 1)).toBe(true);
  });

  it.runIf(glibc)(
    'with a warm-up, again every warm-up interval while it lasts, then only at the interval',
    async () => {
      releaseFreedNativeMemory();
      const stop = releaseFreedNativeMemoryEvery(60_000, { intervalMs: 1_500, forMs: 4_000 });
      try {
        // Holes made after the first call (at once, done within 100 ms) and before the next, 1.5 s later: only that
        // one gives them back.
        await new Promise((resolve) => setTimeout(resolve, 100));
        const kept = await freeHolesInTheArena();
        const before = residentMiB();
        let after = residentMiB();
        for (let waited = 0; before - after <= 24 && waited < 2_500; waited += 50) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          after = residentMiB();
        }
        expect(before - after).toBeGreaterThan(24);
        expect(kept.every((buffer) => buffer.length === 48 * 1024 && buffer[0] === 1)).toBe(true);
        // Past the warm-up, holes stay until the 60 s interval: none given back within two warm-up intervals.
        await new Promise((resolve) => setTimeout(resolve, 4_000));
        const laterKept = await freeHolesInTheArena();
        const laterBefore = residentMiB();
        await new Promise((resolve) => setTimeout(resolve, 3_000));
        expect(laterBefore - residentMiB()).toBeLessThan(24);
        expect(laterKept.every((buffer) => buffer[0] === 1)).toBe(true);
      } finally {
        stop();
      }
    },
  );

  it('repeats on timers that keep no process alive, until stopped (with a warm-up too)', () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    const before = timers();
    const stopWarm = releaseFreedNativeMemoryEvery(60_000, { intervalMs: 1_000, forMs: 60_000 });
    expect(timers()).toBe(before);
    stopWarm();
    stopWarm();
  });

  it('repeats on a timer that keeps no process alive, until stopped', () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length;
    const before = timers();
    const stop = releaseFreedNativeMemoryEvery(60_000);
    expect(timers()).toBe(before);
    stop();
    stop();
  });
});
