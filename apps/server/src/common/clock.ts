export { type Clock, systemClock } from '@sigil/runtime';

/** Nest injection token of the server's {@link Clock}. */
export const CLOCK = Symbol('CLOCK');
