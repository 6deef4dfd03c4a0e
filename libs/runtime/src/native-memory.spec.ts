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
    `with a warm-up, again every warm-up interval while it lasts, then only at the interval${notGlibc}`,
    async () => {
      releaseFreedNativeMemory();
      const started = performance.now();
      const warmUp = { intervalMs: 1_000, forMs: 6_000 };
      const stop = releaseFreedNativeMemoryEvery(60_000, warmUp);
      try {
        // Holes made after the first call (at once): only a warm-up call gives them back. Several warm-up calls fall in
        // the wait, so a slow machine that takes a while to make the holes still sees one after them.
        await new Promise((resolve) => setTimeout(resolve, 100));
        const kept = await freeHolesInTheArena();
        const before = residentMiB();
        let after = residentMiB();
        for (let waited = 0; before - after <= 24 && waited < 3 * warmUp.intervalMs; waited += 50) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          after = residentMiB();
        }
        expect(before - after).toBeGreaterThan(24);
        expect(kept.every((buffer) => buffer.length === 48 * 1024 && buffer[0] === 1)).toBe(true);
        // Past the warm-up (with a margin), holes stay until the 60 s interval: the 96 MiB made (half of it holes)
        // are all still resident three warm-up intervals later. (Read against the RSS before they were made: a call
        // while they were being made would give some back before any reading after them.)
        const pastWarmUp = started + warmUp.forMs + warmUp.intervalMs;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, pastWarmUp - performance.now())));
        const beforeHoles = residentMiB();
        const laterKept = await freeHolesInTheArena();
        await new Promise((resolve) => setTimeout(resolve, 3 * warmUp.intervalMs));
        expect(residentMiB() - beforeHoles).toBeGreaterThan(72);
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
