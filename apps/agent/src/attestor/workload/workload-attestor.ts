import { SelectorError, type Selector, checkSelector, formatDuration, selectorKey } from '@sigil/runtime';

/** A handle on one process (not a pid number), such as a pidfd; see `PidFd`. */
export interface ProcessPin {
  /** False once the pinned process has exited, even if its pid now names another process. */
  isAlive(): boolean;
}

/** The caller as the kernel identified it when it connected (SO_PEERCRED), pinned to its process. */
export interface WorkloadCaller {
  readonly pid: number;
  /** Effective uid at connect time. */
  readonly uid: number;
  /** Effective gid at connect time. */
  readonly gid: number;
  /** Start time of `pid` read when the connection was accepted. */
  readonly startTime: bigint;
  /** The process that connected, pinned when the connection was accepted. */
  readonly process: ProcessPin;
}

/** Why a process could not be attested; the message says which check failed. */
export class WorkloadAttestationError extends Error {
  override readonly name = 'WorkloadAttestationError';
  /** The type of the attestor that failed, when one did (for logs: the message is the attestor's own). */
  readonly attestor: string | undefined;

  constructor(message: string, options: ErrorOptions & { attestor?: string } = {}) {
    super(message, options);
    this.attestor = options.attestor;
  }
}

/**
 * A workload attestor plug-in (SPIRE's `WorkloadAttestor`): given the caller (pid, uid, gid and its pinned
 * process), which selectors? Everything else (which attestors run, their deadline, merging, the pin check once they
 * are all done, registration and config) is the composite's and the registry's.
 *
 * Rules for an attestor:
 * - every selector it returns has its own {@link type} (a `docker` attestor can never claim `unix:uid:0`) and
 *   passes `checkSelector` (skip values that cannot be selectors); the composite fails the call otherwise;
 * - a caller that is not the kind of workload it knows (a process in no container, for `docker`) gets no selectors
 *   and no error; an error fails the whole call, so reject only when it cannot tell;
 * - read `/proc/<caller.pid>/…` freely, but never keep anything by pid across calls: the composite proves that what
 *   was read belonged to the caller by checking its pin after every attestor has answered;
 * - stop when `signal` aborts (the call was cancelled, its deadline passed or another attestor failed): the call is
 *   answered without waiting, so work that goes on runs outside the per-uid attestation limit.
 */
export interface WorkloadAttestor {
  /** SPIRE's plug-in name (`unix`): its name in `--workload-attestor` and the type of every selector it returns. */
  readonly type: string;
  /** Runs once when the agent starts, before it attests its node: a rejection stops the agent with its message. */
  prepare?(): Promise<void>;
  /** The caller's selectors; rejects (ideally with {@link WorkloadAttestationError}) when it cannot tell. */
  attest(caller: WorkloadCaller, signal: AbortSignal): Promise<readonly Selector[]>;
}

/**
 * How long one call may wait for its attestors. SPIRE's agent has no such setting (a call is bounded by its client's
 * deadline, and its k8s attestor polls the kubelet for up to 60 × 500 ms): a client without a deadline would hold
 * its attestation slot for as long as an attestor hangs. 10 s leaves room for a kubelet poll of a starting container.
 */
export const DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS = 10_000;

export interface CompositeWorkloadAttestorOptions {
  /** Per-call deadline for all attestors together (default {@link DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS}). */
  readonly timeoutMs?: number;
}

const quote = (text: string): string => JSON.stringify(text);

function showTimeout(ms: number): string {
  return ms % 1000 === 0 ? formatDuration(ms / 1000) : `${ms}ms`;
}

/**
 * Runs the enabled workload attestors for each call, all at once, under one deadline, and merges their selectors
 * (in the order the attestors were configured, each attestor's in its own order, duplicates dropped). The call fails
 * with the first attestor error (its message as the attestor wrote it), when the deadline passes (naming the
 * attestors that had not answered) or when the call is cancelled; the other attestors' signal aborts then.
 *
 * Once every attestor has answered, the caller's pinned process must still be alive: attestors read
 * `/proc/<pid>` at different times, and only a pin that is alive after the last read proves they all read the
 * process that connected, not one that took its pid after it exited (the unix attestor checks its own reads too,
 * but it may finish before a slower attestor reads).
 */
export class CompositeWorkloadAttestor {
  private readonly timeoutMs: number;

  constructor(
    private readonly attestors: readonly WorkloadAttestor[],
    options: CompositeWorkloadAttestorOptions = {},
  ) {
    if (attestors.length === 0) throw new Error('workload attestors: at least one must be enabled');
    const types = attestors.map((attestor) => attestor.type);
    const twice = types.find((type, index) => types.indexOf(type) !== index);
    if (twice !== undefined) throw new Error(`workload attestors: ${quote(twice)} is enabled twice`);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs < 1) {
      throw new Error(`workload attestation timeout: must be a positive number of milliseconds, got ${this.timeoutMs}`);
    }
  }

  /** The enabled attestors' types, in order. */
  get types(): readonly string[] {
    return this.attestors.map((attestor) => attestor.type);
  }

  /** Each attestor's start-up check, in order. */
  async prepare(): Promise<void> {
    for (const attestor of this.attestors) await attestor.prepare?.();
  }

  /**
   * The caller's selectors from every enabled attestor. Rejects with {@link WorkloadAttestationError} when one
   * fails, the deadline passes, `signal` (the call's: its client cancelled it) aborts, or the caller's process has
   * exited by the time they are done.
   */
  async attest(caller: WorkloadCaller, signal?: AbortSignal): Promise<readonly Selector[]> {
    signal?.throwIfAborted();
    const results = await this.runAll(caller, signal);
    // Last, once every attestor is done: what each read came from the process that connected only if it is still
    // alive now (a pidfd never names the process that later takes the same pid).
    if (!caller.process.isAlive()) {
      throw new WorkloadAttestationError(
        `process ${caller.pid}: the process that connected has exited during attestation`,
      );
    }
    const seen = new Set<string>();
    const merged: Selector[] = [];
    for (const selectors of results) {
      for (const selector of selectors) {
        const key = selectorKey(selector);
        if (seen.has(key)) continue;
        seen.add(key);
        merged.push(selector);
      }
    }
    return merged;
  }

  private runAll(caller: WorkloadCaller, signal: AbortSignal | undefined): Promise<(readonly Selector[])[]> {
    const stop = new AbortController();
    const results: (readonly Selector[])[] = [];
    const pending = new Set(this.types);
    return new Promise<(readonly Selector[])[]>((resolve, reject) => {
      const finish = (error?: WorkloadAttestationError): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onCancel);
        if (error === undefined) return resolve(results);
        // Tells the attestors still running to stop; their answers are no longer wanted.
        stop.abort(error);
        reject(error);
      };
      const timer = setTimeout(() => {
        const names = [...pending].map(quote).join(', ');
        const attestors = pending.size === 1 ? 'workload attestor' : 'workload attestors';
        finish(
          new WorkloadAttestationError(`${attestors} ${names} did not answer within ${showTimeout(this.timeoutMs)}`),
        );
      }, this.timeoutMs);
      const onCancel = (): void =>
        finish(
          new WorkloadAttestationError('the call was cancelled during workload attestation', { cause: signal?.reason }),
        );
      signal?.addEventListener('abort', onCancel, { once: true });
      this.attestors.forEach((attestor, index) => {
        // Called on a later tick, so that an attestor that throws synchronously fails like one that rejects.
        void Promise.resolve()
          .then(() => attestor.attest(caller, stop.signal))
          .then(
            (selectors) => {
              if (stop.signal.aborted) return;
              const problem = selectorProblem(attestor.type, selectors);
              if (problem !== undefined)
                return finish(new WorkloadAttestationError(problem, { attestor: attestor.type }));
              results[index] = selectors;
              pending.delete(attestor.type);
              if (pending.size === 0) finish();
            },
            (error: unknown) => {
              if (stop.signal.aborted) return;
              const message = error instanceof Error ? error.message : String(error);
              finish(new WorkloadAttestationError(message, { cause: error, attestor: attestor.type }));
            },
          );
      });
    });
  }
}

/** Why `selectors` cannot be the answer of attestor `type`, or undefined when they can. */
function selectorProblem(type: string, selectors: unknown): string | undefined {
  if (!Array.isArray(selectors)) return `workload attestor ${quote(type)} returned no selector list`;
  for (const selector of selectors as unknown[]) {
    let checked: Selector;
    try {
      checked = checkSelector(selector);
    } catch (error) {
      const reason = error instanceof SelectorError ? error.message : String(error);
      return `workload attestor ${quote(type)} returned an invalid selector: ${reason}`;
    }
    if (checked.type !== type) {
      return (
        `workload attestor ${quote(type)} returned a selector of type ${quote(checked.type)}: ` +
        'an attestor may only return selectors of its own type'
      );
    }
  }
  return undefined;
}
