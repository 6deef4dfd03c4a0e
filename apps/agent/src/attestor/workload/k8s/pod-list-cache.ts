import { type KubeletPod } from './pods.js';

/** One pod list read from the kubelet; a later read has a greater version. */
export interface PodListSnapshot {
  readonly version: number;
  readonly pods: ReadonlyMap<string, KubeletPod>;
}

export interface PodListCacheOptions {
  /**
   * How long a read answers callers after it started (`poll_retry_interval`), and the least time between the starts
   * of two reads: however many callers poll, the kubelet sees at most one request per interval.
   */
  readonly intervalMs: number;
  /** Milliseconds of a monotonic clock (default `performance.now`). */
  readonly now?: () => number;
}

interface Outcome {
  readonly startedAt: number;
  readonly snapshot?: PodListSnapshot;
  readonly error?: unknown;
}

/** Rejects with the signal's reason when it aborts first. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error as Error);
      },
    );
  });
}

/**
 * The kubelet's pod list, shared by every attestation (SPIRE's podListFetcher): one list (or one failure) answers all
 * callers for an interval after its read started; concurrent callers share one read; a caller that has seen a list
 * and wants a newer one (its container was not in it yet) waits for the next read, which starts no earlier than an
 * interval after the previous one. It holds one list at a time, whoever asks: nothing in it is keyed by pid.
 *
 * A read is never cancelled by a caller that stops waiting (another may be waiting for it, and the next caller gets
 * its answer); the read bounds its own time (the kubelet client's timeout).
 */
export class PodListCache {
  private readonly intervalMs: number;
  private readonly now: () => number;
  private last: Outcome | undefined;
  private pending: Promise<PodListSnapshot> | undefined;
  private lastStart = Number.NEGATIVE_INFINITY;
  private version = 0;

  constructor(
    private readonly read: () => Promise<ReadonlyMap<string, KubeletPod>>,
    options: PodListCacheOptions,
  ) {
    this.intervalMs = options.intervalMs;
    this.now = options.now ?? (() => performance.now());
  }

  /**
   * A pod list newer than version `after` (0: any): the last one while it is fresh, else the next read's. Rejects
   * with the last read's error while that failure is fresh (the kubelet is not asked again within the interval),
   * with the next read's error, or with `signal`'s reason when it aborts first.
   */
  next(after: number, signal: AbortSignal): Promise<PodListSnapshot> {
    const last = this.last;
    if (last !== undefined && this.now() < last.startedAt + this.intervalMs) {
      if (last.error !== undefined) return Promise.reject(last.error as Error);
      if (last.snapshot !== undefined && last.snapshot.version > after) return Promise.resolve(last.snapshot);
    }
    return untilAborted(this.nextRead(), signal);
  }

  /** The read in progress or scheduled, or a new one (started once an interval has passed since the last start). */
  private nextRead(): Promise<PodListSnapshot> {
    if (this.pending !== undefined) return this.pending;
    const delay = this.lastStart + this.intervalMs - this.now();
    const started =
      delay > 0 ? new Promise<void>((resolve) => setTimeout(resolve, Math.ceil(delay))) : Promise.resolve();
    const pending = started.then(() => this.readOnce());
    this.pending = pending;
    const clear = (): void => {
      if (this.pending === pending) this.pending = undefined;
    };
    pending.then(clear, clear);
    return pending;
  }

  private async readOnce(): Promise<PodListSnapshot> {
    const startedAt = this.now();
    this.lastStart = startedAt;
    const version = ++this.version;
    try {
      const snapshot = { version, pods: await this.read() };
      this.last = { startedAt, snapshot };
      return snapshot;
    } catch (error) {
      this.last = { startedAt, error };
      throw error;
    }
  }
}
