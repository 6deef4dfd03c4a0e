import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { formatSelector, type Selector } from '@sigil/runtime';
import { PidFd } from '../../endpoints/pidfd.js';
import { readStartTime } from './unix/proc.js';
import { UnixWorkloadAttestor } from './unix/unix-attestor.js';
import {
  CompositeWorkloadAttestor,
  DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS,
  WorkloadAttestationError,
  type WorkloadAttestor,
  type WorkloadCaller,
} from './workload-attestor.js';

const quiet = { debug: () => undefined, warn: () => undefined };
const pins: PidFd[] = [];
const children: ChildProcess[] = [];

afterEach(() => children.splice(0).forEach((child) => child.kill('SIGKILL')));
afterAll(() => pins.splice(0).forEach((pin) => pin.close()));

/** `pid` as the Workload API server hands it over: pinned by a real pidfd, with its start time and ids. */
async function caller(pid: number): Promise<WorkloadCaller> {
  const pin = PidFd.open(pid);
  pins.push(pin);
  return { pid, uid: process.geteuid!(), gid: process.getegid!(), startTime: await readStartTime(pid), process: pin };
}

async function startSleeper(): Promise<ChildProcess & { pid: number }> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(child);
  await once(child, 'spawn');
  return child as ChildProcess & { pid: number };
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** An attestor run by the test: `answer` decides what it returns; every call's signal is kept. */
class ScriptedAttestor implements WorkloadAttestor {
  readonly signals: AbortSignal[] = [];
  constructor(
    readonly type: string,
    private readonly answer: (caller: WorkloadCaller, signal: AbortSignal) => Promise<readonly Selector[]>,
  ) {}
  attest(caller: WorkloadCaller, signal: AbortSignal): Promise<readonly Selector[]> {
    this.signals.push(signal);
    return this.answer(caller, signal);
  }
}

const fixed = (type: string, ...values: string[]) =>
  new ScriptedAttestor(type, async () => values.map((value) => ({ type, value })));

/** Never answers until its signal aborts, then rejects with the signal's reason (as a well-behaved attestor does). */
const hanging = (type: string) =>
  new ScriptedAttestor(
    type,
    (_caller, signal) =>
      new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error))),
  );

describe('CompositeWorkloadAttestor', () => {
  it('merges the selectors of every attestor in configured order, dropping duplicates', async () => {
    // b answers first, yet a's selectors come first: the order is the configuration's, not the race's.
    const aMayAnswer = deferred();
    const a = new ScriptedAttestor('a', async () => {
      await aMayAnswer.promise;
      return [
        { type: 'a', value: 'x' },
        { type: 'a', value: 'y' },
        { type: 'a', value: 'x' },
      ];
    });
    const b = new ScriptedAttestor('b', async () => {
      aMayAnswer.resolve();
      return [
        { type: 'b', value: 'x' },
        { type: 'b', value: 'z' },
      ];
    });
    const composite = new CompositeWorkloadAttestor([a, b]);
    const selectors = await composite.attest(await caller(process.pid));
    expect(selectors.map(formatSelector)).toEqual(['a:x', 'a:y', 'b:x', 'b:z']);
    expect(composite.types).toEqual(['a', 'b']);
  });

  it('runs the attestors at once: each waits for the other to have started', async () => {
    const started = { a: deferred(), b: deferred() };
    const meet = (self: 'a' | 'b', other: 'a' | 'b') =>
      new ScriptedAttestor(self, async () => {
        started[self].resolve();
        // Run one after the other, the first would wait here for ever (and the deadline would fail the call).
        await started[other].promise;
        return [{ type: self, value: 'met' }];
      });
    const composite = new CompositeWorkloadAttestor([meet('a', 'b'), meet('b', 'a')], { timeoutMs: 60_000 });
    const selectors = await composite.attest(await caller(process.pid));
    expect(selectors.map(formatSelector)).toEqual(['a:met', 'b:met']);
  });

  it('fails the call when the deadline passes, naming the attestors that did not answer, and aborts them', async () => {
    const fast = fixed('unix', 'uid:0');
    const slow = hanging('k8s');
    const composite = new CompositeWorkloadAttestor([fast, slow], { timeoutMs: 50 });
    const attempt = composite.attest(await caller(process.pid));
    await expect(attempt).rejects.toThrow(
      new WorkloadAttestationError('workload attestor "k8s" did not answer within 50ms'),
    );
    expect(slow.signals[0]!.aborted).toBe(true);

    const two = new CompositeWorkloadAttestor([hanging('k8s'), hanging('docker')], { timeoutMs: 1000 });
    await expect(two.attest(await caller(process.pid))).rejects.toThrow(
      'workload attestors "k8s", "docker" did not answer within 1s',
    );
  });

  it('answers at the deadline even when an attestor ignores its signal', async () => {
    const deaf = new ScriptedAttestor('deaf', () => new Promise(() => undefined));
    const composite = new CompositeWorkloadAttestor([deaf], { timeoutMs: 20 });
    await expect(composite.attest(await caller(process.pid))).rejects.toThrow(
      'workload attestor "deaf" did not answer within 20ms',
    );
  });

  it("fails the call with a failing attestor's own message and aborts the others", async () => {
    const other = hanging('k8s');
    const failing = new ScriptedAttestor('docker', async () => {
      throw new Error('cannot reach the Docker Engine at /run/docker.sock: ECONNREFUSED');
    });
    const composite = new CompositeWorkloadAttestor([other, failing]);
    const error = (await composite.attest(await caller(process.pid)).catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(WorkloadAttestationError);
    expect(error.message).toBe('cannot reach the Docker Engine at /run/docker.sock: ECONNREFUSED');
    expect((error as WorkloadAttestationError).attestor).toBe('docker');
    expect(other.signals[0]!.aborted).toBe(true);
  });

  it('fails the call when an attestor throws synchronously', async () => {
    const broken: WorkloadAttestor = {
      type: 'broken',
      attest: () => {
        throw new TypeError('broken is broken');
      },
    };
    await expect(new CompositeWorkloadAttestor([broken]).attest(await caller(process.pid))).rejects.toMatchObject({
      name: 'WorkloadAttestationError',
      message: 'broken is broken',
      attestor: 'broken',
    });
  });

  it('gives no selectors and no error for a caller an attestor does not know', async () => {
    const composite = new CompositeWorkloadAttestor([fixed('unix', 'uid:0'), fixed('docker')]);
    expect((await composite.attest(await caller(process.pid))).map(formatSelector)).toEqual(['unix:uid:0']);
  });

  it('refuses selectors of another type than the attestor, and invalid ones', async () => {
    const impostor = new ScriptedAttestor('docker', async () => [{ type: 'unix', value: 'uid:0' }]);
    await expect(new CompositeWorkloadAttestor([impostor]).attest(await caller(process.pid))).rejects.toThrow(
      'workload attestor "docker" returned a selector of type "unix": an attestor may only return selectors of its own type',
    );
    const invalid = new ScriptedAttestor('docker', async () => [{ type: 'docker', value: 'env:A=\n' }]);
    await expect(new CompositeWorkloadAttestor([invalid]).attest(await caller(process.pid))).rejects.toThrow(
      'workload attestor "docker" returned an invalid selector: value: must not contain control characters',
    );
  });

  it('stops when the call is cancelled, and passes the cancellation down to the attestors', async () => {
    const slow = hanging('k8s');
    const call = new AbortController();
    const attempt = new CompositeWorkloadAttestor([slow]).attest(await caller(process.pid), call.signal);
    await new Promise((resolve) => setImmediate(resolve));
    expect(slow.signals[0]!.aborted).toBe(false);
    call.abort(new Error('client cancelled'));
    await expect(attempt).rejects.toThrow('the call was cancelled during workload attestation');
    expect(slow.signals[0]!.aborted).toBe(true);

    // Already cancelled: no attestor runs.
    const unused = fixed('unix', 'uid:0');
    await expect(
      new CompositeWorkloadAttestor([unused]).attest(await caller(process.pid), call.signal),
    ).rejects.toThrow('client cancelled');
    expect(unused.signals).toEqual([]);
  });

  it(
    'refuses a caller that exits after one attestor checked it and before a slower one answered ' +
      '(the slower one read whatever holds the pid by then)',
    async () => {
      const child = await startSleeper();
      const unixDone = deferred();
      const unix = new UnixWorkloadAttestor({ logger: quiet, needsDigest: () => false });
      // The unix attestor checks its own reads against the pin, and passes: the caller is alive until it is done.
      const checked = new ScriptedAttestor('unix', async (c, signal) => {
        const selectors = await unix.attest(c, signal);
        unixDone.resolve();
        return selectors;
      });
      // A slower attestor that trusts the pid: by the time it reads, the process that connected is gone.
      const slower = new ScriptedAttestor('slow', async () => {
        await unixDone.promise;
        child.kill('SIGKILL');
        await once(child, 'exit');
        return [{ type: 'slow', value: 'read-from-another-process' }];
      });
      const composite = new CompositeWorkloadAttestor([checked, slower]);
      await expect(composite.attest(await caller(child.pid))).rejects.toThrow(
        new WorkloadAttestationError(`process ${child.pid}: the process that connected has exited during attestation`),
      );
    },
  );

  it('checks its construction: at least one attestor, each type once, a positive deadline', () => {
    expect(() => new CompositeWorkloadAttestor([])).toThrow('workload attestors: at least one must be enabled');
    expect(() => new CompositeWorkloadAttestor([fixed('unix'), fixed('unix')])).toThrow(
      'workload attestors: "unix" is enabled twice',
    );
    expect(() => new CompositeWorkloadAttestor([fixed('unix')], { timeoutMs: 0 })).toThrow(
      'workload attestation timeout: must be a positive number of milliseconds, got 0',
    );
    expect(DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS).toBe(10_000);
  });

  it("runs each attestor's start-up check", async () => {
    const checks: string[] = [];
    const withCheck = (type: string): WorkloadAttestor => ({
      type,
      prepare: async () => void checks.push(type),
      attest: async () => [],
    });
    await new CompositeWorkloadAttestor([withCheck('a'), fixed('b'), withCheck('c')]).prepare();
    expect(checks).toEqual(['a', 'c']);
  });
});
