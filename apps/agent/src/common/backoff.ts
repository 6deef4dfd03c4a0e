/**
 * Exponential backoff with full jitter (the delay is drawn between half and all of the current step), so agents
 * that lost the same server do not come back in lockstep.
 */
export class Backoff {
  private step: number;

  constructor(
    private readonly initialMs = 500,
    private readonly maxMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {
    this.step = initialMs;
  }

  /** The next delay, in milliseconds; each call doubles the step up to the maximum. */
  next(): number {
    const delay = Math.round(this.step / 2 + (this.step / 2) * this.random());
    this.step = Math.min(this.step * 2, this.maxMs);
    return delay;
  }

  /** Back to the initial step, after a success. */
  reset(): void {
    this.step = this.initialMs;
  }
}

/** Resolves after `ms`, or rejects with the abort reason as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
