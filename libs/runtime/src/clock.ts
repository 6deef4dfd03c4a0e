/**
 * The time source of the server's services and the agent's schedulers, injected so that tests can move time without
 * sleeping (test/support/fake-clock.ts).
 */
export interface Clock {
  now(): Date;
}

/** The real clock. */
export const systemClock: Clock = { now: () => new Date() };
