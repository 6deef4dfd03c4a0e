import { Inject, Injectable } from '@nestjs/common';
import { compareSelectors, formatSelector } from '@sigil/runtime';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import type { EntityManager } from 'typeorm';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { EntriesRepository, type EntryRow, type NewEntryEvent } from './entries.repository.js';
import { EntryChangeNotifier, type EntryChangeListener } from './entry-change-notifier.js';
import type { EntryEntity } from './entry.entity.js';
import { validateEntry, type ValidEntryFields } from './entry-rules.js';
import {
  SELECTOR_MATCHES,
  type Entry,
  type EntryChanges,
  type EntryCreateResult,
  type EntryFilter,
  type EntryInput,
  type EntryPage,
  type EntryPatch,
  type EntrySnapshot,
  type Selector,
} from './entry.js';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
export const DEFAULT_CHANGES_LIMIT = 5000;
export const MAX_CHANGES_LIMIT = 100_000;

/**
 * Entries of a batch written per transaction: between two, the connection serves other queries (agent status reads,
 * readiness pings), which a 500-entry transaction kept waiting for seconds on a busy embedded database.
 */
export const WRITE_CHUNK = 50;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The registry's rules: validation, duplicate refusal, gap-safe revisions and change notification.
 *
 * Gap-safe revisions: every write transaction first locks the one `revision_counters` row (`SELECT ... FOR UPDATE`)
 * and, before committing, stores the revisions it used there and one `entry_events` row per revision. A second
 * writer waits on that lock until the first commits or rolls back, and then reads the counter as the first left it.
 * So revisions are handed out in commit order with no holes (a rolled-back writer releases its numbers to the next
 * one): once a reader sees revision N committed, every revision below N is committed too, and "changes since R" can
 * never skip a change that commits later. The price is one writer at a time, which registry writes can afford; on
 * the embedded database PGlite serialises transactions anyway.
 */
@Injectable()
export class EntriesService {
  constructor(
    private readonly repository: EntriesRepository,
    private readonly notifier: EntryChangeNotifier,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Creates each entry independently (SPIRE's BatchCreateEntry): one result per input, in order. Invalid entries and
   * duplicates (same SPIFFE ID, parent ID and selector set as an existing entry or an earlier one of the batch) fail
   * alone; the valid ones are written in transactions of {@link WRITE_CHUNK} entries, each entry with its own
   * revision, so that a 500-entry batch never holds the database (the embedded database's only connection) for long.
   * A database failure part-way leaves the earlier chunks written (each entry stands alone, as in SPIRE's
   * BatchCreateEntry): repeating the batch reports those as already existing.
   */
  async createEntries(inputs: readonly EntryInput[]): Promise<EntryCreateResult[]> {
    const now = this.clock.now();
    const checked = inputs.map((input) => {
      try {
        return validateEntry(input, { trustDomain: this.config.trustDomain, now, checkExpiry: true });
      } catch (error) {
        if (error instanceof AppError) return error;
        throw error;
      }
    });
    const toWrite = checked.filter((fields): fields is ValidEntryFields => !(fields instanceof AppError));
    if (toWrite.length === 0) return checked.map((error) => ({ ok: false, error: error as AppError }));

    const outcomes = new Map<ValidEntryFields, { id: string } | { duplicateOf: string }>();
    const written = new Map<string, Entry>();
    // The whole batch in turn (concurrent batches finish one after the other), one transaction per chunk.
    await this.repository.writeInTurn(async (write) => {
      for (let start = 0; start < toWrite.length; start += WRITE_CHUNK) {
        await this.writeChunk(write, toWrite.slice(start, start + WRITE_CHUNK), now, outcomes, written);
      }
    });
    return checked.map((fields): EntryCreateResult => {
      if (fields instanceof AppError) return { ok: false, error: fields };
      const outcome = outcomes.get(fields)!;
      if ('id' in outcome) return { ok: true, entry: written.get(outcome.id)! };
      return {
        ok: false,
        error: duplicateError(fields, outcome.duplicateOf),
        existing: written.get(outcome.duplicateOf),
      };
    });
  }

  /** Writes one chunk of a batch in one transaction, recording each entry's outcome, then announces it. */
  private async writeChunk(
    write: <U>(chunk: (tx: EntityManager) => Promise<U>) => Promise<U>,
    chunk: readonly ValidEntryFields[],
    now: Date,
    outcomes: Map<ValidEntryFields, { id: string } | { duplicateOf: string }>,
    written: Map<string, Entry>,
  ): Promise<void> {
    const revision = await write(async (tx) => {
      const counter = await this.repository.lockCounter(tx);
      let revision = counter.revision;
      const events: NewEntryEvent[] = [];
      const ids: string[] = [];
      for (const fields of chunk) {
        // Earlier chunks are committed: a duplicate of an entry of this batch is found like any other.
        const duplicateOf = await this.repository.findDuplicateId(
          tx,
          fields.spiffeId,
          fields.parentId,
          fields.selectors,
        );
        if (duplicateOf !== undefined) {
          outcomes.set(fields, { duplicateOf });
          ids.push(duplicateOf);
          continue;
        }
        revision += 1;
        const id = await this.repository.insertEntry(tx, row(fields, revision, now, now));
        events.push({ revision, entryId: id, op: 'created', changedAt: now });
        outcomes.set(fields, { id });
        ids.push(id);
      }
      await this.commitRevisions(tx, counter.revision, revision, events);
      for (const entity of await this.repository.findByIds(tx, ids)) written.set(entity.id, toEntry(entity));
      return revision > counter.revision ? revision : undefined;
    });
    await this.announce(revision);
  }

  /** Creates one entry; throws the failure (invalid_argument, already_exists) instead of returning it. */
  async createEntry(input: EntryInput): Promise<Entry> {
    const [result] = await this.createEntries([input]);
    if (!result!.ok) throw result!.error;
    return result!.entry;
  }

  async getEntry(id: string): Promise<Entry> {
    checkId(id);
    const entity = await this.repository.readSnapshot((tx) => this.repository.findById(tx, id));
    if (!entity) throw notFound(id);
    return toEntry(entity);
  }

  /** Lists entries ordered by id, a page at a time; `pageToken` is the previous page's `nextPageToken`. */
  async listEntries(
    filter: EntryFilter = {},
    page: { pageSize?: number; pageToken?: string } = {},
  ): Promise<EntryPage> {
    const pageSize = page.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
      throw new AppError('invalid_argument', `page_size: must be from 1 to ${MAX_PAGE_SIZE}, got ${pageSize}`);
    }
    const afterId = page.pageToken === undefined || page.pageToken === '' ? undefined : decodePageToken(page.pageToken);
    const normalised = normaliseFilter(filter);
    const entities = await this.repository.readSnapshot((tx) =>
      this.repository.findPage(normalised, afterId, pageSize + 1, tx),
    );
    const entries = entities.slice(0, pageSize).map(toEntry);
    const nextPageToken = entities.length > pageSize ? encodePageToken(entries[entries.length - 1]!.id) : null;
    return { entries, nextPageToken };
  }

  async countEntries(filter: EntryFilter = {}): Promise<number> {
    return this.repository.count(normaliseFilter(filter));
  }

  /** Changes the given fields; the result is validated as a whole, and must not duplicate another entry. */
  async updateEntry(id: string, patch: EntryPatch): Promise<Entry> {
    checkId(id);
    const now = this.clock.now();
    const { entry, revision } = await this.repository.write(async (tx) => {
      const counter = await this.repository.lockCounter(tx);
      const existing = await this.repository.findById(tx, id);
      if (!existing) throw notFound(id);
      const current = toEntry(existing);
      const fields = validateEntry(
        { ...current, ...definedFields(patch) },
        { trustDomain: this.config.trustDomain, now, checkExpiry: patch.expiresAt !== undefined },
      );
      const duplicateOf = await this.repository.findDuplicateId(
        tx,
        fields.spiffeId,
        fields.parentId,
        fields.selectors,
        id,
      );
      if (duplicateOf !== undefined) throw duplicateError(fields, duplicateOf);
      const revision = counter.revision + 1;
      await this.repository.replaceEntry(tx, id, row(fields, revision, current.createdAt, now));
      await this.commitRevisions(tx, counter.revision, revision, [
        { revision, entryId: id, op: 'updated', changedAt: now },
      ]);
      return { entry: toEntry((await this.repository.findById(tx, id))!), revision };
    });
    await this.announce(revision);
    return entry;
  }

  async deleteEntry(id: string): Promise<void> {
    checkId(id);
    const now = this.clock.now();
    const revision = await this.repository.write(async (tx) => {
      const counter = await this.repository.lockCounter(tx);
      if (!(await this.repository.deleteEntry(tx, id))) throw notFound(id);
      const revision = counter.revision + 1;
      await this.commitRevisions(tx, counter.revision, revision, [
        { revision, entryId: id, op: 'deleted', changedAt: now },
      ]);
      return revision;
    });
    await this.announce(revision);
  }

  /** Deletes every entry whose `expires_at` is at or before `now`, each with its revision; returns their ids. */
  async pruneExpired(now: Date = this.clock.now()): Promise<string[]> {
    const { ids, revision } = await this.repository.write(async (tx) => {
      const counter = await this.repository.lockCounter(tx);
      const ids = await this.repository.deleteExpired(tx, now);
      const events = ids.map((entryId, index): NewEntryEvent => {
        return { revision: counter.revision + index + 1, entryId, op: 'deleted', changedAt: now };
      });
      const revision = counter.revision + ids.length;
      await this.commitRevisions(tx, counter.revision, revision, events);
      return { ids, revision: ids.length > 0 ? revision : undefined };
    });
    await this.announce(revision);
    return ids;
  }

  /**
   * Drops change-log rows older than `before`. Readers whose revision is below the newest dropped one get
   * `resyncRequired` from `listChangesSince` and reload with `snapshot()`.
   */
  async pruneChangeLog(before: Date): Promise<number> {
    return this.repository.write(async (tx) => {
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
    return this.repository.readSnapshot(async (tx): Promise<EntryChanges> => {
      const counter = await this.repository.readCounter(tx);
      if (sinceRevision < counter.prunedThrough || sinceRevision > counter.revision) {
        return { resyncRequired: true, fromRevision: sinceRevision, toRevision: counter.revision };
      }
      const toRevision = Math.min(counter.revision, sinceRevision + limit);
      const events = (await this.repository.listEvents(tx, sinceRevision, toRevision)).map((event) => ({
        revision: event.revision,
        entryId: event.entryId,
        op: event.op,
      }));
      const changedIds = [...new Set(events.map((event) => event.entryId))];
      const entities = await this.repository.findByIds(tx, changedIds);
      const present = new Set(entities.map((entity) => entity.id));
      return {
        resyncRequired: false,
        fromRevision: sinceRevision,
        toRevision,
        events,
        entries: entities.map(toEntry),
        deletedIds: changedIds.filter((id) => !present.has(id)).sort(),
        more: toRevision < counter.revision,
      };
    });
  }

  /** Every entry and the revision they are consistent with (for a reader's first load or a resync). */
  async snapshot(): Promise<EntrySnapshot> {
    return this.repository.readSnapshot(async (tx) => {
      const counter = await this.repository.readCounter(tx);
      const entities = await this.repository.findAll(tx);
      return { revision: counter.revision, entries: entities.map(toEntry) };
    });
  }

  /** Calls `listener` with the new revision after registry changes, from any replica; returns the unsubscriber. */
  subscribe(listener: EntryChangeListener): () => void {
    return this.notifier.subscribe(listener);
  }

  private async commitRevisions(
    tx: EntityManager,
    previous: number,
    revision: number,
    events: readonly NewEntryEvent[],
  ): Promise<void> {
    if (revision === previous) return;
    await this.repository.recordEvents(tx, events);
    await this.repository.updateCounter(tx, { revision });
  }

  private async announce(revision: number | undefined): Promise<void> {
    if (revision !== undefined) await this.notifier.notify(revision);
  }
}

function row(fields: ValidEntryFields, revisionNumber: number, createdAt: Date, updatedAt: Date): EntryRow {
  return { ...fields, revisionNumber, createdAt, updatedAt };
}

/** Maps the ORM entity to the service's Entry; entities stop here. */
export function toEntry(entity: EntryEntity): Entry {
  return {
    id: entity.id,
    spiffeId: entity.spiffeId,
    parentId: entity.parentId,
    selectors: entity.selectors.map(({ type, value }): Selector => ({ type, value })).sort(compareSelectors),
    x509SvidTtl: entity.x509SvidTtl,
    jwtSvidTtl: entity.jwtSvidTtl,
    dnsNames: entity.dnsNames.map((dnsName) => dnsName.value).sort(),
    federatesWith: entity.federatesWith.map((federated) => federated.trustDomain).sort(),
    admin: entity.admin,
    downstream: entity.downstream,
    hint: entity.hint,
    expiresAt: entity.expiresAt,
    revisionNumber: entity.revisionNumber,
    createdAt: entity.createdAt,
    updatedAt: entity.updatedAt,
  };
}

function definedFields(patch: EntryPatch): EntryPatch {
  return Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined)) as EntryPatch;
}

function normaliseFilter(filter: EntryFilter): EntryFilter {
  if (filter.selectorMatch !== undefined && !SELECTOR_MATCHES.includes(filter.selectorMatch)) {
    throw new AppError(
      'invalid_argument',
      `selector_match: must be one of ${SELECTOR_MATCHES.join(', ')}, got ${JSON.stringify(filter.selectorMatch)}`,
    );
  }
  const selectors = filter.selectors?.filter(
    (selector, index, all) => all.findIndex((other) => compareSelectors(other, selector) === 0) === index,
  );
  return {
    ...filter,
    spiffeId: canonicalId(filter.spiffeId),
    parentId: canonicalId(filter.parentId),
    federatesWith: canonicalTrustDomain(filter.federatesWith),
    selectors,
  };
}

// IDs and trust domains are stored in canonical (lowercase scheme and trust domain) form; a filter value that does
// not parse cannot match anything and is kept as given.
function canonicalId(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    return SpiffeId.parse(value).toString();
  } catch {
    return value;
  }
}

function canonicalTrustDomain(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  try {
    return TrustDomain.parse(value).name;
  } catch {
    return value;
  }
}

function checkId(id: string): void {
  if (typeof id !== 'string' || !UUID.test(id)) {
    throw new AppError('invalid_argument', `id: must be an entry id (a lowercase uuid), got ${JSON.stringify(id)}`);
  }
}

function notFound(id: string): AppError {
  return new AppError('not_found', `entry ${JSON.stringify(id)} not found`);
}

function duplicateError(fields: ValidEntryFields, existingId?: string): AppError {
  const selectors = fields.selectors.map(formatSelector).join(', ');
  const which = existingId === undefined ? 'an entry' : `entry ${JSON.stringify(existingId)}`;
  return new AppError(
    'already_exists',
    `${which} with spiffe_id ${JSON.stringify(fields.spiffeId)}, parent_id ${JSON.stringify(fields.parentId)} and selectors [${selectors}] already exists`,
  );
}

function encodePageToken(lastId: string): string {
  return Buffer.from(lastId, 'utf8').toString('base64url');
}

function decodePageToken(token: string): string {
  const id = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
  if (!UUID.test(id)) throw new AppError('invalid_argument', 'page_token: not a token from a previous page');
  return id;
}
