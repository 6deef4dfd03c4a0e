import { describe, expect, it } from 'vitest';
import { PodListCache } from './pod-list-cache.js';
import { type KubeletPod } from './pods.js';

const never = new AbortController().signal;

/** A read that the test finishes by hand, counting how many were started. */
function manualReads() {
  const started: { resolve: (pods: ReadonlyMap<string, KubeletPod>) => void; reject: (error: Error) => void }[] = [];
  const read = (): Promise<ReadonlyMap<string, KubeletPod>> =>
    new Promise((resolve, reject) => started.push({ resolve, reject }));
  return { started, read };
}

const empty = new Map<string, KubeletPod>();
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('PodListCache', () => {
  it('shares one read between concurrent callers', async () => {
    const { started, read } = manualReads();
    const cache = new PodListCache(read, { intervalMs: 1_000 });
    const answers = Promise.all([cache.next(0, never), cache.next(0, never), cache.next(0, never)]);
    await tick();
    expect(started).toHaveLength(1);
    started[0]!.resolve(empty);
    const [a, b, c] = await answers;
    expect(a.version).toBe(1);
    expect(b).toBe(a);
    expect(c).toBe(a);
  });

  it('answers from the last list while it is fresh, then reads again', async () => {
    let now = 0;
    const { started, read } = manualReads();
    const cache = new PodListCache(read, { intervalMs: 500, now: () => now });
    const first = cache.next(0, never);
    await tick();
    started[0]!.resolve(empty);
    await first;
    now = 499;
    expect((await cache.next(0, never)).version).toBe(1);
    expect(started).toHaveLength(1);
    now = 500;
    const second = cache.next(0, never);
    await tick();
    expect(started).toHaveLength(2);
    started[1]!.resolve(empty);
    expect((await second).version).toBe(2);
  });

  it('makes a caller that has seen the fresh list wait for a read an interval after the last one started', async () => {
    const { started, read } = manualReads();
    const cache = new PodListCache(read, { intervalMs: 150 });
    const first = cache.next(0, never);
    await tick();
    const startedAt = performance.now();
    started[0]!.resolve(empty);
    const seen = await first;
    const newer = cache.next(seen.version, never);
    await tick();
    expect(started).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(started).toHaveLength(2);
    started[1]!.resolve(empty);
    expect((await newer).version).toBe(2);
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(140);
  });

  it('answers a fresh failure without asking the kubelet again', async () => {
    let now = 0;
    const { started, read } = manualReads();
    const cache = new PodListCache(read, { intervalMs: 500, now: () => now });
    const first = cache.next(0, never);
    await tick();
    started[0]!.reject(new Error('connect ECONNREFUSED'));
    await expect(first).rejects.toThrow('ECONNREFUSED');
    now = 100;
    await expect(cache.next(0, never)).rejects.toThrow('ECONNREFUSED');
    expect(started).toHaveLength(1);
  });

  it('stops waiting when the caller aborts, and the read still answers the next caller', async () => {
    const { started, read } = manualReads();
    const cache = new PodListCache(read, { intervalMs: 1_000 });
    const controller = new AbortController();
    const waiting = cache.next(0, controller.signal);
    await tick();
    controller.abort(new Error('deadline'));
    await expect(waiting).rejects.toThrow('deadline');
    const next = cache.next(0, never);
    started[0]!.resolve(empty);
    expect((await next).version).toBe(1);
    expect(started).toHaveLength(1);
  });
});
