import { chainIssuerIds } from '@sigil/spiffe';

/**
 * How long, at most, the agent spreads the forced rotation of the SVIDs a tainted key issued: each one is re-signed
 * at a random instant within this window from when the taint arrives (or at its usual rotation time if that comes
 * sooner), so that a fleet's agents do not all ask the server at once; the rotator's batching, backoff and the
 * server's per-agent limits apply as for any rotation.
 */
export const TAINTED_ROTATION_WINDOW_MS = 15_000;

/** The authority IDs that issued a certificate chain: the one rule, shared with the nested server's CA. */
export { chainIssuerIds };

/** When an SVID issued by a tainted key is re-signed: within the window, unless its rotation comes sooner. */
export function taintedRotationTime(rotateAt: Date, now: Date, random: () => number): Date {
  const forced = now.getTime() + Math.floor(random() * TAINTED_ROTATION_WINDOW_MS);
  return new Date(Math.min(rotateAt.getTime(), forced));
}

/** Adds `until` under `id` when it is later than what `issuers` holds. */
export function addIssuer(issuers: Map<string, Date>, id: string, until: Date): void {
  const known = issuers.get(id);
  if (known === undefined || known.getTime() < until.getTime()) issuers.set(id, until);
}
