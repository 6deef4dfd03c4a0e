/**
 * How long to wait before each retry of a Workload API watch. `next()` is called after each failure and returns
 * the delay in milliseconds; `reset()` is called after every message received, so the next failure starts over.
 */
export interface Backoff {
  next(): number;
  reset(): void;
}

/** Parameters of {@link ExponentialBackoff}. */
export interface ExponentialBackoffOptions {
  /** The first delay, in milliseconds (default 1000, as go-spiffe). */
  readonly initialDelayMs?: number;
  /** The largest delay, in milliseconds (default 30000, as go-spiffe). */
  readonly maxDelayMs?: number;
  /** The factor between two delays (default 2). */
  readonly multiplier?: number;
}

function positive(value: number, field: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${field} must be a positive number, got ${value}`);
  return value;
}

/**
 * Exponential backoff without jitter: 1 s, 2 s, 4 s, … capped at 30 s by default, back to the first delay after a
 * reset (the schedule of go-spiffe's `workloadapi` backoff). Jitter is unnecessary here: each workload talks to its
 * own local agent, so there is no shared server for retries to stampede.
 */
export class ExponentialBackoff implements Backoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly multiplier: number;
  private current: number | undefined;

  constructor(options: ExponentialBackoffOptions = {}) {
    this.initialDelayMs = positive(options.initialDelayMs ?? 1000, 'initialDelayMs');
    this.maxDelayMs = positive(options.maxDelayMs ?? 30_000, 'maxDelayMs');
    this.multiplier = positive(options.multiplier ?? 2, 'multiplier');
    if (this.maxDelayMs < this.initialDelayMs) throw new RangeError('maxDelayMs must not be less than initialDelayMs');
    if (this.multiplier < 1) throw new RangeError(`multiplier must be at least 1, got ${this.multiplier}`);
  }

  next(): number {
    this.current =
      this.current === undefined ? this.initialDelayMs : Math.min(this.current * this.multiplier, this.maxDelayMs);
    return this.current;
  }

  reset(): void {
    this.current = undefined;
  }
}
