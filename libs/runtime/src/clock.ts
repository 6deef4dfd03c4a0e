/**
 * The time source of the server's services and the agent's schedulers, injected so that tests can move time without
 * sleeping (test/support/fake-clock.ts).
 */
export interface Clock {
  now(): Date;
}

/** The real clock. */
export const systemClock: Clock = { now: () => new Date() };

/**
 * An expiry that a jump of the wall clock cannot push back: it has passed when the wall clock says so, or when the
 * time that was left at {@link ExpiryDeadline.start} has elapsed on the monotonic clock. An SVID received with 30 s
 * to live is therefore not served 30 s later even if the wall clock was set back an hour meanwhile; a forward jump
 * ends it at once by the wall-clock test.
 */
export class ExpiryDeadline {
  private constructor(
    readonly at: Date,
    private readonly monotonicAtMs: number,
  ) {}

  /** The deadline `at`, counted from `clock.now()` on the monotonic clock too. */
  static start(at: Date, clock: Clock): ExpiryDeadline {
    return new ExpiryDeadline(at, performance.now() + (at.getTime() - clock.now().getTime()));
  }

  passed(clock: Clock): boolean {
    return this.remainingMs(clock) <= 0;
  }

  /** Milliseconds left by the earlier of the two clocks (≤ 0 once passed). */
  remainingMs(clock: Clock): number {
    return Math.min(this.at.getTime() - clock.now().getTime(), this.monotonicAtMs - performance.now());
  }
}
