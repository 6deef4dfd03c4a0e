/** Spread of the rotation time around half life: ±10 % of it, so a fleet's agents do not renew in lockstep. */
export const ROTATION_JITTER = 0.1;

/** The validity of a certificate. */
export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * When to rotate an SVID: at half its lifetime, moved by up to ±10 % of that half at random so that the SVIDs of
 * many workloads and agents signed together are not all renewed at the same instant (SPIRE rotates at half life;
 * the jitter is ours against herds). The lifetime counts from when the agent received the SVID, not from its
 * not-before: the server backdates not-before by a few seconds for clock skew, which with very short TTLs would
 * otherwise put half life in the past and rotate in a loop.
 *
 * @param random a number in [0, 1), e.g. `Math.random`.
 */
export function rotationTime(validity: Validity, receivedAt: Date, random: () => number = Math.random): Date {
  const start = Math.max(validity.notBefore.getTime(), receivedAt.getTime());
  const lifetime = Math.max(0, validity.notAfter.getTime() - start);
  const fraction = 0.5 * (1 + ROTATION_JITTER * (2 * random() - 1));
  return new Date(start + Math.round(lifetime * fraction));
}

/**
 * Until when a cached JWT-SVID is handed out again: half of its lifetime, as SPIRE's agent does, so a workload
 * never receives a token that is close to expiry.
 */
export function jwtReuseDeadline(issuedAt: Date, expiresAt: Date): Date {
  const lifetime = Math.max(0, expiresAt.getTime() - issuedAt.getTime());
  return new Date(issuedAt.getTime() + Math.floor(lifetime / 2));
}
