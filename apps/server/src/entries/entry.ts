import type { Selector, SelectorMatch } from '@sigil/runtime';
import type { AppError } from '../common/errors.js';

export { SELECTOR_MATCHES, type Selector, type SelectorMatch } from '@sigil/runtime';

/** Most entries one batch create takes (the admin API's limit; `entry create --data` sends batches of this size). */
export const MAX_BATCH_SIZE = 500;

/** A registration entry as the service hands it out (never the ORM entity). */
export interface Entry {
  readonly id: string;
  readonly spiffeId: string;
  readonly parentId: string;
  /** Sorted by type, then value. */
  readonly selectors: readonly Selector[];
  /** Seconds; 0 means the server default. */
  readonly x509SvidTtl: number;
  /** Seconds; 0 means the server default. */
  readonly jwtSvidTtl: number;
  readonly dnsNames: readonly string[];
  /** Trust domain names, sorted. */
  readonly federatesWith: readonly string[];
  readonly admin: boolean;
  readonly downstream: boolean;
  /** Empty when unset. */
  readonly hint: string;
  /** Never changed in place: the index load shares one Date among entries with the same time (as its strings). */
  readonly expiresAt: Date | null;
  /** Registry revision of the entry's last change. */
  readonly revisionNumber: number;
  /** Shared like `expiresAt`: read it, never change it. */
  readonly createdAt: Date;
  /** Shared like `expiresAt`: read it, never change it. */
  readonly updatedAt: Date;
}

/** What a caller gives to create an entry; omitted optional fields take their defaults (0, [], false, ''). */
export interface EntryInput {
  /** Create only: the entry ID to use (a lowercase UUID) instead of a generated one (SPIRE's `-entryID`). */
  id?: string;
  spiffeId: string;
  parentId: string;
  selectors: readonly Selector[];
  x509SvidTtl?: number;
  jwtSvidTtl?: number;
  dnsNames?: readonly string[];
  federatesWith?: readonly string[];
  admin?: boolean;
  downstream?: boolean;
  hint?: string;
  expiresAt?: Date | null;
}

/** Fields to change on an entry; absent fields keep their value, `expiresAt: null` removes the expiry. */
export type EntryPatch = Partial<Omit<EntryInput, 'id'>>;

/** Filters of entry listings; all given filters must hold. */
export interface EntryFilter {
  spiffeId?: string;
  parentId?: string;
  /** With `selectorMatch`: `superset` (default) the entry has all of them, `exact` exactly them, `subset` only
   * some of them (what a workload with these selectors is entitled to), `any` at least one. */
  selectors?: readonly Selector[];
  selectorMatch?: SelectorMatch;
  /** With `federatesWithMatch` (default superset), as `selectors` with `selectorMatch`, over trust domain names. */
  federatesWith?: readonly string[];
  federatesWithMatch?: SelectorMatch;
  downstream?: boolean;
  hint?: string;
}

/** One page of a listing; `nextPageToken` is null on the last page. */
export interface EntryPage {
  readonly entries: readonly Entry[];
  readonly nextPageToken: string | null;
}

/** What happened to an entry at a revision. */
export type EntryEventOp = 'created' | 'updated' | 'deleted';

/** One change of the registry: exactly one per revision. */
export interface EntryEvent {
  readonly revision: number;
  readonly entryId: string;
  readonly op: EntryEventOp;
}

/**
 * What changed after `fromRevision`, up to and including `toRevision`. `entries` holds the current state of every
 * changed entry that still exists and `deletedIds` those that do not. When `more` is set, call again from
 * `toRevision`. `resyncRequired` means the change log no longer reaches back to `fromRevision` (or the caller is
 * ahead of the registry): reload everything with `snapshot()`.
 */
export type EntryChanges =
  | {
      readonly resyncRequired: false;
      readonly fromRevision: number;
      readonly toRevision: number;
      readonly events: readonly EntryEvent[];
      readonly entries: readonly Entry[];
      readonly deletedIds: readonly string[];
      readonly more: boolean;
    }
  | { readonly resyncRequired: true; readonly fromRevision: number; readonly toRevision: number };

/** Every entry, consistent with `revision`: continue with `listChangesSince(revision)`. */
export interface EntrySnapshot {
  readonly revision: number;
  /** Every entry by id, in no particular order; the one reader that loads the snapshot takes the map over (once). */
  readonly entries: Map<string, Entry>;
}

/** Result of one entry of a batch create, as SPIRE's BatchCreateEntry reports it. */
export type EntryCreateResult =
  | { readonly ok: true; readonly entry: Entry }
  | {
      readonly ok: false;
      readonly error: AppError;
      /** For `already_exists`: the entry that is already there. */
      readonly existing?: Entry;
    };
