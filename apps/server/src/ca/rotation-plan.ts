import type { AuthorityKind, CaKeyState } from './ca-key.js';

/** What the rotation plan needs to know about one journal key. */
export interface PlannedKey {
  readonly id: string;
  readonly kind: AuthorityKind;
  readonly state: CaKeyState;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** One step towards the journal SPIRE's timings ask for at a given time. */
export type RotationStep =
  | { readonly op: 'create'; readonly kind: AuthorityKind; readonly state: 'prepared' | 'active' }
  | { readonly op: 'activate'; readonly kind: AuthorityKind; readonly id: string | 'created' }
  | { readonly op: 'prune'; readonly kind: AuthorityKind; readonly id: string };

const DAY_MS = 24 * 3600 * 1000;
// SPIRE (pkg/server/ca/manager): the next key is prepared when half the active key's lifetime is left, at most 14
// days before it expires, and activated when a sixth is left, at most 7 days before it expires.
const PREPARATION_DIVISOR = 2;
const PREPARATION_CAP_MS = 14 * DAY_MS;
const ACTIVATION_DIVISOR = 6;
const ACTIVATION_CAP_MS = 7 * DAY_MS;

/** When the key after `active` is prepared (and published in the bundle): half-way through its lifetime. */
export function preparationTime(active: Pick<PlannedKey, 'notBefore' | 'notAfter'>): Date {
  return thresholdBeforeExpiry(active, PREPARATION_DIVISOR, PREPARATION_CAP_MS);
}

/** When the prepared key replaces `active` for signing: five sixths through its lifetime. */
export function activationTime(active: Pick<PlannedKey, 'notBefore' | 'notAfter'>): Date {
  return thresholdBeforeExpiry(active, ACTIVATION_DIVISOR, ACTIVATION_CAP_MS);
}

function thresholdBeforeExpiry(key: Pick<PlannedKey, 'notBefore' | 'notAfter'>, divisor: number, capMs: number): Date {
  const lifetime = key.notAfter.getTime() - key.notBefore.getTime();
  return new Date(key.notAfter.getTime() - Math.min(capMs, Math.floor(lifetime / divisor)));
}

const isExpired = (key: PlannedKey, now: Date): boolean => now.getTime() >= key.notAfter.getTime();

/**
 * The steps that bring one kind's journal up to date at `now`, in order: with no usable active key, activate the
 * prepared one or create an active key (first start); past the preparation time, create the prepared key; past the
 * activation time, activate it (the active key becomes old). Expired old and prepared keys are pruned first. A pure function,
 * so the timings are tested without a database.
 */
export function planRotation(kind: AuthorityKind, keys: readonly PlannedKey[], now: Date): RotationStep[] {
  const own = keys.filter((key) => key.kind === kind);
  const active = own.find((key) => key.state === 'active');
  const livePrepared = own.find((key) => key.state === 'prepared' && !isExpired(key, now));
  // Pruning goes first: an expired prepared key must leave its slot before a new one is created.
  const steps: RotationStep[] = own
    .filter((key) => key.state !== 'active' && isExpired(key, now))
    .map((key) => ({ op: 'prune', kind, id: key.id }));

  if (active === undefined || isExpired(active, now)) {
    if (livePrepared !== undefined) {
      steps.push({ op: 'activate', kind, id: livePrepared.id });
    } else {
      steps.push({ op: 'create', kind, state: 'active' });
    }
  } else {
    const prepare = now.getTime() >= preparationTime(active).getTime();
    const activate = now.getTime() >= activationTime(active).getTime();
    if (livePrepared === undefined && (prepare || activate)) {
      steps.push({ op: 'create', kind, state: 'prepared' });
    }
    if (activate) {
      steps.push({ op: 'activate', kind, id: livePrepared?.id ?? 'created' });
    }
  }
  return steps;
}
