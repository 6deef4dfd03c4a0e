import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { FairQueue, FairQueueFullError } from './fair-queue.js';

/** Lets `n` turns of the event loop pass (the queue starts at most one chunk per turn). */
async function loopTurns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Work whose chunks finish only when the test says so, recording the order in which chunks started. */
function gatedWork() {
  const started: string[] = [];
  const gates: (() => void)[] = [];
  const work =
    (caller: string) =>
    (chunk: readonly number[], offset: number): Promise<readonly string[]> => {
      started.push(`${caller}@${offset}`);
      return new Promise((resolve) => gates.push(() => resolve(chunk.map((item) => `${caller}:${item}`))));
    };
  /** Finishes the oldest running chunk and lets the queue start the next one. */
  const finishOne = async (): Promise<void> => {
    gates.shift()!();
    // The queue starts the next chunk in a later event loop turn.
    await loopTurns(3);
  };
  return { started, work, finishOne, running: () => gates.length };
}

describe('FairQueue', () => {
  it('serves callers in turn, one chunk each: a late single item waits for one chunk, not the backlog', async () => {
    const queue = new FairQueue({ chunkSize: 10, concurrency: 1, maxQueuedItems: 1_000 });
    const { started, work, finishOne } = gatedWork();
    const big = queue.run(
      'big',
      Array.from({ length: 50 }, (_, i) => i),
      work('big'),
    );
    const other = queue.run('other', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], work('other'));
    const small = queue.run('small', [7], work('small'));
    expect(queue.queued).toBe(50 + 12 + 1 - 10);
    while (started.length < 8) await finishOne();
    // big was already in line when the others came: one chunk of it, then each of them in turn.
    expect(started).toEqual(['big@0', 'big@10', 'other@0', 'small@0', 'big@20', 'other@10', 'big@30', 'big@40']);
    await finishOne();
    expect(await small).toEqual(['small:7']);
    expect(await other).toHaveLength(12);
    const results = await big;
    expect(results).toEqual(Array.from({ length: 50 }, (_, i) => `big:${i}`));
    expect(queue.queued).toBe(0);
    expect(queue.callers).toBe(0);
  });

  it('yields to the event loop between chunks, even when the work resolves without I/O', async () => {
    const queue = new FairQueue({ chunkSize: 1, concurrency: 1, maxQueuedItems: 100 });
    let started = 0;
    let seenByOtherWork: number | undefined;
    setImmediate(() => (seenByOtherWork = started));
    const all = queue.run(
      'a',
      Array.from({ length: 10 }, (_, i) => i),
      (chunk) => {
        started++;
        return Promise.resolve(chunk);
      },
    );
    expect(await all).toHaveLength(10);
    // A request arriving meanwhile (here: work queued on the event loop) ran before the backlog was done.
    expect(seenByOtherWork).toBeLessThan(10);
  });

  it('starts at most one chunk per turn of the event loop, however many slots are free', async () => {
    // Synchronous work, as X.509 signing is: each chunk runs to its end in the microtasks after it starts. Starting
    // a chunk for each free slot, from each finished chunk, ran 4, then 16, then 64 chunks in one turn of the loop.
    const queue = new FairQueue({ chunkSize: 1, concurrency: 4, maxQueuedItems: 1_000 });
    let started = 0;
    const startsPerTurn: number[] = [];
    let observing = true;
    let seen = 0;
    const observe = (): void => {
      startsPerTurn.push(started - seen);
      seen = started;
      if (observing) setImmediate(observe);
    };
    setImmediate(observe);
    const all = queue.run(
      'a',
      Array.from({ length: 200 }, (_, i) => i),
      (chunk) => {
        started++;
        return Promise.resolve(chunk);
      },
    );
    expect(await all).toHaveLength(200);
    observing = false;
    await loopTurns(1);
    expect(started).toBe(200);
    expect(Math.max(...startsPerTurn)).toBe(1);
  });

  it('with startAtOnce false, starts even the first chunk in a later turn: the requests of one turn run one per turn', async () => {
    const queue = new FairQueue({ chunkSize: 1, concurrency: 1, maxQueuedItems: 100, startAtOnce: false });
    let started = 0;
    const work = (chunk: readonly number[]) => {
      started++;
      return Promise.resolve(chunk);
    };
    // Five requests read in one turn of the event loop, each with one item of synchronous work.
    const all = Promise.all([0, 1, 2, 3, 4].map((item) => queue.run(`caller ${item}`, [item], work)));
    await Promise.resolve();
    expect(started).toBe(0);
    const startsPerTurn: number[] = [];
    for (let turn = 0; turn < 8; turn++) {
      const before = started;
      await loopTurns(1);
      startsPerTurn.push(started - before);
    }
    expect(await all).toEqual([[0], [1], [2], [3], [4]]);
    expect(Math.max(...startsPerTurn)).toBe(1);
    expect(started).toBe(5);
  });

  it('runs at most `concurrency` chunks at once', async () => {
    const queue = new FairQueue({ chunkSize: 1, concurrency: 3, maxQueuedItems: 100 });
    const { work, finishOne, running } = gatedWork();
    const all = queue.run('a', [1, 2, 3, 4, 5, 6, 7], work('a'));
    // One chunk starts at once, the others one per turn of the event loop.
    expect(running()).toBe(1);
    await loopTurns(5);
    expect(running()).toBe(3);
    expect(queue.queued).toBe(4);
    await finishOne();
    expect(running()).toBe(3);
    while (running() > 0) await finishOne();
    expect(await all).toHaveLength(7);
  });

  it('refuses a request that would take it past maxQueuedItems, queueing none of it', async () => {
    const queue = new FairQueue({ chunkSize: 5, concurrency: 1, maxQueuedItems: 15 });
    const { work, finishOne, running } = gatedWork();
    const first = queue.run(
      'a',
      Array.from({ length: 15 }, (_, i) => i),
      work('a'),
    );
    expect(queue.queued).toBe(10);
    await expect(queue.run('b', [1, 2, 3, 4, 5, 6], work('b'))).rejects.toThrow(
      new FairQueueFullError('signing queue full: 10 items waiting, at most 15'),
    );
    expect(queue.queued).toBe(10);
    const second = queue.run('b', [1, 2, 3, 4, 5], work('b'));
    expect(queue.queued).toBe(15);
    while (running() > 0) await finishOne();
    expect(await first).toHaveLength(15);
    expect(await second).toHaveLength(5);
  });

  it('refuses a caller over maxQueuedItemsPerCaller, and only that caller', async () => {
    const queue = new FairQueue({ chunkSize: 1, concurrency: 1, maxQueuedItems: 100, maxQueuedItemsPerCaller: 3 });
    const { work, finishOne, running } = gatedWork();
    // The first item starts at once; three more wait.
    const accepted = [queue.run('a', [0], work('a')), queue.run('a', [1, 2, 3], work('a'))];
    await expect(queue.run('a', [4], work('a'))).rejects.toMatchObject({
      name: 'FairQueueFullError',
      cap: 'caller',
      message: '3 items of this caller waiting, at most 3',
    });
    const other = queue.run('b', [0, 1, 2], work('b'));
    expect(queue.queued).toBe(6);
    while (running() > 0) await finishOne();
    await Promise.all([...accepted, other]);
    expect(queue.queued).toBe(0);
  });

  it('rejects the caller whose work failed and goes on with the others', async () => {
    const queue = new FairQueue({ chunkSize: 2, concurrency: 1, maxQueuedItems: 100 });
    const failing = queue.run('a', [1, 2, 3], () => {
      throw new Error('boom');
    });
    const fine = queue.run('b', [1, 2, 3], (chunk) => Promise.resolve(chunk.map((item) => item * 2)));
    await expect(failing).rejects.toThrow('boom');
    expect(await fine).toEqual([2, 4, 6]);
  });

  it('with a busy share, starts the next turn only after a pause in proportion to the time the last one took', async () => {
    // The queue's clock is the test's: a turn "takes" 10 ms by moving it; nothing else moves it.
    let now = 0;
    const queue = new FairQueue({
      chunkSize: 1,
      concurrency: 1,
      maxQueuedItems: 100,
      startAtOnce: false,
      maxBusyShare: 0.25,
      now: () => now,
    });
    const startedAt: number[] = [];
    const work = (chunk: readonly number[]) => {
      startedAt.push(now);
      now += 10;
      return Promise.resolve(chunk);
    };
    const all = Promise.all(['a', 'b', 'c'].map((caller, item) => queue.run(caller, [item], work)));
    await loopTurns(3);
    expect(startedAt).toEqual([0]);
    // A share of 1/4: 10 ms of work, then 30 ms of pause. However long the event loop runs meanwhile, the queue
    // waits for its clock.
    await sleep(50);
    await loopTurns(3);
    expect(startedAt).toEqual([0]);
    now = 39;
    await sleep(10);
    expect(startedAt).toEqual([0]);
    now = 40;
    await vi.waitFor(() => expect(startedAt).toEqual([0, 40]));
    now = 80;
    expect(await all).toEqual([[0], [1], [2]]);
    expect(startedAt).toEqual([0, 40, 80]);
  });

  it('refuses a busy share outside (0, 1]', () => {
    for (const maxBusyShare of [0, -0.5, 1.5, Number.NaN]) {
      expect(() => new FairQueue({ chunkSize: 1, concurrency: 1, maxQueuedItems: 1, maxBusyShare })).toThrow(
        'fair queue: maxBusyShare must be over 0 and at most 1',
      );
    }
  });
});
