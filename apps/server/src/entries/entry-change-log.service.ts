import { Injectable } from '@nestjs/common';
import { AppError } from '../common/errors.js';
import type { Transaction } from '../database/transaction.js';
import { EntriesRepository } from './entries.repository.js';
import { EntryChangeLogRepository, type NewEntryEvent, type RevisionCounter } from './entry-change-log.repository.js';
import { EntryChangeNotifier, type EntryChangeListener } from './entry-change-notifier.js';
import type { EntryChanges, EntryEventOp, EntrySnapshot } from './entry.js';

export const DEFAULT_CHANGES_LIMIT = 5000;
export const MAX_CHANGES_LIMIT = 100_000;

/**
 * The revisions one write transaction hands out and the change-log rows it records for them; see
 * {@link EntryChangeLogService.open}.
 */
export class RevisionWriter {
  private head: number;
  private readonly events: NewEntryEvent[] = [];

  constructor(
    private readonly repository: EntryChangeLogRepository,
    private readonly tx: Transaction,
    private readonly counter: RevisionCounter,
    private readonly changedAt: Date,
  ) {
    this.head = counter.revision;
  }

  /** The next revision, for the change about to be written. */
  next(): number {
    this.head += 1;
    return this.head;
  }

  /** Records that `revision` (from {@link next}) is `op` on `entryId`. */
  record(revision: number, entryId: string, op: EntryEventOp): void {
    this.events.push({ revision, entryId, op, changedAt: this.changedAt });
  }

  /** Stores the recorded events and the new head revision; returns it, or undefined when nothing changed. */
  async commit(): Promise<number | undefined> {
    if (this.head === this.counter.revision) return undefined;
    await this.repository.recordEvents(this.tx, this.events);
    await this.repository.updateCounter(this.tx, { revision: this.head });
    return this.head;
  }
}

/**
 * The registry's change log: gap-safe revisions, reading what changed since a revision, pruning, and notifying
 * readers (every replica) after a change.
 *
 * Gap-safe revisions: every write transaction first locks the one `revision_counters` row (`SELECT ... FOR UPDATE`,
 * {@link open}) and, before committing, stores the revisions it used there and one `entry_events` row per revision
 * ({@link RevisionWriter.commit}). A second writer waits on that lock until the first commits or rolls back, and
 * then reads the counter as the first left it. So revisions are handed out in commit order with no holes (a
 * rolled-back writer releases its numbers to the next one): once a reader sees revision N committed, every revision
 * below N is committed too, and "changes since R" can never skip a change that commits later. The price is one
 * writer at a time, which registry writes can afford; on the embedded database PGlite serialises transactions anyway.
 */
@Injectable()
export class EntryChangeLogService {
  constructor(
    private readonly repository: EntryChangeLogRepository,
    private readonly entries: EntriesRepository,
    private readonly notifier: EntryChangeNotifier,
  ) {}

  /** Takes the writers' lock in `tx` (held until it ends) and returns the writer of its revisions. */
  async open(tx: Transaction, changedAt: Date): Promise<RevisionWriter> {
    return new RevisionWriter(this.repository, tx, await this.repository.lockCounter(tx), changedAt);
  }

  /** Tells readers, on every replica, that the registry reached `revision` (call after the commit). */
  async announce(revision: number | undefined): Promise<void> {
    if (revision !== undefined) await this.notifier.notify(revision);
  }

  /** Calls `listener` with the new revision after registry changes, from any replica; returns the unsubscriber. */
  subscribe(listener: EntryChangeListener): () => void {
    return this.notifier.subscribe(listener);
  }

  /**
   * Drops change-log rows older than `before`. Readers whose revision is below the newest dropped one get
   * `resyncRequired` from `listChangesSince` and reload with `snapshot()`.
   */
  async pruneChangeLog(before: Date): Promise<number> {
    return this.entries.write(async (tx) => {
      const counter = await this.repository.lockCounter(tx);
      const newest = await this.repository.deleteEventsBefore(tx, before);
      if (newest !== undefined && newest > counter.prunedThrough) {
        await this.repository.updateCounter(tx, { prunedThrough: newest });
      }
      return Math.max(newest ?? 0, counter.prunedThrough);
    });
  }

  /** The registry's head revision (0 for an empty, never-written registry). */
  async currentRevision(): Promise<number> {
    return (await this.repository.readCounter()).revision;
  }

  /**
   * What changed after `sinceRevision` (at most `limit` revisions), read in one consistent snapshot: the events in
   * revision order, the current state of the changed entries that exist and the ids of those that no longer do.
   */
  async listChangesSince(sinceRevision: number, options: { limit?: number } = {}): Promise<EntryChanges> {
    if (!Number.isSafeInteger(sinceRevision) || sinceRevision < 0) {
      throw new AppError('invalid_argument', `since_revision: must be a whole number >= 0, got ${sinceRevision}`);
    }
    const limit = options.limit ?? DEFAULT_CHANGES_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_CHANGES_LIMIT) {
      throw new AppError('invalid_argument', `limit: must be from 1 to ${MAX_CHANGES_LIMIT}, got ${limit}`);
    }
    return this.entries.readSnapshot(async (tx): Promise<EntryChanges> => {
      const counter = await this.repository.readCounter(tx);
      if (sinceRevision < counter.prunedThrough || sinceRevision > counter.revision) {
        return { resyncRequired: true, fromRevision: sinceRevision, toRevision: counter.revision };
      }
      const toRevision = Math.min(counter.revision, sinceRevision + limit);
      const events = await this.repository.listEvents(tx, sinceRevision, toRevision);
      const changedIds = [...new Set(events.map((event) => event.entryId))];
      const entries = await this.entries.findByIds(tx, changedIds);
      const present = new Set(entries.map((entry) => entry.id));
      return {
        resyncRequired: false,
        fromRevision: sinceRevision,
        toRevision,
        events,
        entries,
        deletedIds: changedIds.filter((id) => !present.has(id)).sort(),
        more: toRevision < counter.revision,
      };
    });
  }

  /** Every entry and the revision they are consistent with (for a reader's first load or a resync). */
  async snapshot(): Promise<EntrySnapshot> {
    return this.entries.readSnapshot(async (tx) => {
      const counter = await this.repository.readCounter(tx);
      return { revision: counter.revision, entries: await this.entries.findAll(tx) };
    });
  }
}
