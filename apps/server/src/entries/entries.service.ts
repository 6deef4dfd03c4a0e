import { randomUUID } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { compareSelectors, formatSelector, selectorSetKey } from '@sigil/runtime';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { decodePageToken, encodePageToken } from '../common/page-token.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import type { Transaction } from '../database/transaction.js';
import { EntriesRepository, type EntryRow } from './entries.repository.js';
import { EntryChangeLogService } from './entry-change-log.service.js';
import { validateEntry, type ValidEntryFields } from './entry-rules.js';
import {
  MAX_BATCH_SIZE,
  SELECTOR_MATCHES,
  type Entry,
  type EntryCreateResult,
  type EntryFilter,
  type EntryInput,
  type EntryPage,
  type EntryPatch,
  type Selector,
  type SelectorMatch,
} from './entry.js';

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/**
 * Entries of a batch written per transaction (a whole API batch): each chunk is a fixed number of multi-row
 * statements, so even a 500-entry one holds the connection for tens of milliseconds (row at a time, it held the
 * embedded database's only connection for seconds, and chunks were 50). Larger inputs (only from inside the server)
 * are still cut, so that no transaction grows without bound and other queries get the connection in between.
 */
export const WRITE_CHUNK = MAX_BATCH_SIZE;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The registry's rules: validation, duplicate refusal and entry CRUD. Every write takes its revisions from the change
 * log (EntryChangeLogService: gap-safe revisions, change notification) in the same transaction.
 */
@Injectable()
export class EntriesService {
  constructor(
    private readonly repository: EntriesRepository,
    private readonly changeLog: EntryChangeLogService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Creates each entry independently (SPIRE's BatchCreateEntry): one result per input, in order. Invalid entries and
   * duplicates (same SPIFFE ID, parent ID and selector set as an existing entry or an earlier one of the batch) fail
   * alone; the valid ones are written in transactions of {@link WRITE_CHUNK} entries (an API batch in one), each
   * entry with its own revision, as a fixed number of multi-row statements (see writeChunk), so that a 500-entry
   * batch never holds the database (the embedded database's only connection) for long.
   * A database failure part-way leaves the earlier chunks written (each entry stands alone, as in SPIRE's
   * BatchCreateEntry): repeating the batch reports those as already existing.
   */
  async createEntries(inputs: readonly EntryInput[]): Promise<EntryCreateResult[]> {
    const now = this.clock.now();
    const requestedIds = new Map<ValidEntryFields, string>();
    const checked = inputs.map((input) => {
      try {
        if (input.id !== undefined) checkId(input.id, 'id');
        const fields = validateEntry(input, { trustDomain: this.config.trustDomain, now, checkExpiry: true });
        if (input.id !== undefined) requestedIds.set(fields, input.id);
        return fields;
      } catch (error) {
        if (error instanceof AppError) return error;
        throw error;
      }
    });
    const toWrite = checked.filter((fields): fields is ValidEntryFields => !(fields instanceof AppError));
    if (toWrite.length === 0) return checked.map((error) => ({ ok: false, error: error as AppError }));

    const outcomes = new Map<ValidEntryFields, WriteOutcome>();
    const written = new Map<string, Entry>();
    // The whole batch in turn (concurrent batches finish one after the other), one transaction per chunk.
    await this.repository.writeInTurn(async (write) => {
      for (let start = 0; start < toWrite.length; start += WRITE_CHUNK) {
        await this.writeChunk(write, toWrite.slice(start, start + WRITE_CHUNK), now, requestedIds, outcomes, written);
      }
    });
    return checked.map((fields): EntryCreateResult => {
      if (fields instanceof AppError) return { ok: false, error: fields };
      const outcome = outcomes.get(fields)!;
      if ('id' in outcome) return { ok: true, entry: written.get(outcome.id)! };
      if ('idTaken' in outcome) {
        return {
          ok: false,
          error: new AppError(
            'already_exists',
            `id: an entry with id ${JSON.stringify(outcome.idTaken)} already exists`,
          ),
          existing: written.get(outcome.idTaken),
        };
      }
      return {
        ok: false,
        error: duplicateError(fields, outcome.duplicateOf),
        existing: written.get(outcome.duplicateOf),
      };
    });
  }

  /**
   * Writes one chunk of a batch in one transaction, recording each entry's outcome, then announces it. Whatever the
   * chunk's size, a fixed number of statements: one query for the duplicates among existing entries, one for the
   * requested ids in use, one multi-row insert per table, and the chunk's entries get one range of revisions (in
   * input order). Duplicates within the chunk are found here in memory, in input order, exactly as if each entry had
   * been written before the next was checked: the first one is written, the later ones are its duplicates.
   */
  private async writeChunk(
    write: <U>(chunk: (tx: Transaction) => Promise<U>) => Promise<U>,
    chunk: readonly ValidEntryFields[],
    now: Date,
    requestedIds: ReadonlyMap<ValidEntryFields, string>,
    outcomes: Map<ValidEntryFields, WriteOutcome>,
    written: Map<string, Entry>,
  ): Promise<void> {
    const revision = await write(async (tx) => {
      const revisions = await this.changeLog.open(tx, now);
      // Earlier chunks are committed: a duplicate of an entry of this batch is found like any other.
      const known = await this.existingByDuplicateKey(tx, chunk);
      const requested = [...new Set(chunk.flatMap((fields) => requestedIds.get(fields) ?? []))];
      const takenIds = await this.repository.findExistingIds(tx, requested);
      const rows: (EntryRow & { id: string })[] = [];
      const ids: string[] = [];
      chunk.forEach((fields) => {
        const key = duplicateKey(fields);
        const duplicateOf = known.get(key);
        if (duplicateOf !== undefined) {
          outcomes.set(fields, { duplicateOf });
          ids.push(duplicateOf);
          return;
        }
        const requestedId = requestedIds.get(fields);
        if (requestedId !== undefined && takenIds.has(requestedId)) {
          outcomes.set(fields, { idTaken: requestedId });
          ids.push(requestedId);
          return;
        }
        const id = requestedId ?? randomUUID();
        const revision = revisions.next();
        rows.push(Object.assign(row(fields, revision, now, now), { id }));
        revisions.record(revision, id, 'created');
        known.set(key, id);
        takenIds.add(id);
        outcomes.set(fields, { id });
        ids.push(id);
      });
      await this.repository.insertEntries(tx, rows);
      const head = await revisions.commit();
      // The entries written here are what was just inserted (as a read would give them, see toWrittenEntry); only
      // the existing ones the others refer to (duplicates, ids in use) are read back.
      for (const inserted of rows) written.set(inserted.id, toWrittenEntry(inserted));
      const others = [...new Set(ids)].filter((id) => !written.has(id));
      for (const entry of await this.repository.findByIds(tx, others)) written.set(entry.id, entry);
      return head;
    });
    await this.changeLog.announce(revision);
  }

  /**
   * The existing entries (but `exceptId`) that `candidates` could duplicate, by {@link duplicateKey}: the smallest id
   * when several share a key (as an older registry may hold).
   */
  private async existingByDuplicateKey(
    tx: Transaction,
    candidates: readonly ValidEntryFields[],
    exceptId?: string,
  ): Promise<Map<string, string>> {
    const known = new Map<string, string>();
    for (const entry of await this.repository.findEntriesSharingIds(tx, candidates)) {
      if (entry.id === exceptId) continue;
      const key = duplicateKey(entry);
      const id = known.get(key);
      if (id === undefined || entry.id < id) known.set(key, entry.id);
    }
    return known;
  }

  /** Creates one entry; throws the failure (invalid_argument, already_exists) instead of returning it. */
  async createEntry(input: EntryInput): Promise<Entry> {
    const [result] = await this.createEntries([input]);
    if (!result!.ok) throw result!.error;
    return result!.entry;
  }

  async getEntry(id: string): Promise<Entry> {
    checkId(id);
    const entry = await this.repository.readSnapshot((tx) => this.repository.findById(tx, id));
    if (!entry) throw notFound(id);
    return entry;
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
    const afterId =
      page.pageToken === undefined || page.pageToken === ''
        ? undefined
        : decodePageToken(page.pageToken, (key) => UUID.test(key));
    const normalised = normaliseFilter(filter);
    const found = await this.repository.readSnapshot((tx) =>
      this.repository.findPage(normalised, afterId, pageSize + 1, tx),
    );
    const entries = found.slice(0, pageSize);
    const nextPageToken = found.length > pageSize ? encodePageToken(entries[entries.length - 1]!.id) : null;
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
      const revisions = await this.changeLog.open(tx, now);
      const current = await this.repository.findById(tx, id);
      if (!current) throw notFound(id);
      const fields = validateEntry(
        { ...current, ...definedFields(patch) },
        { trustDomain: this.config.trustDomain, now, checkExpiry: patch.expiresAt !== undefined },
      );
      const duplicateOf = (await this.existingByDuplicateKey(tx, [fields], id)).get(duplicateKey(fields));
      if (duplicateOf !== undefined) throw duplicateError(fields, duplicateOf);
      const revision = revisions.next();
      await this.repository.replaceEntry(tx, id, row(fields, revision, current.createdAt, now));
      revisions.record(revision, id, 'updated');
      const head = await revisions.commit();
      return { entry: (await this.repository.findById(tx, id))!, revision: head };
    });
    await this.changeLog.announce(revision);
    return entry;
  }

  async deleteEntry(id: string): Promise<void> {
    checkId(id);
    const now = this.clock.now();
    const revision = await this.repository.write(async (tx) => {
      const revisions = await this.changeLog.open(tx, now);
      if (!(await this.repository.deleteEntry(tx, id))) throw notFound(id);
      revisions.record(revisions.next(), id, 'deleted');
      return revisions.commit();
    });
    await this.changeLog.announce(revision);
  }

  /**
   * Runs `work` (a change of `trustDomain`'s federated bundle) in one registry write transaction with its effect on
   * the entries that federate with that trust domain, so that agents holding them see the change through the same
   * revisions as an entry change:
   * - `announce`: each gets an `updated` revision (the entry itself is unchanged), so every agent authorised for one
   *   syncs again and receives the bundle as it now is;
   * - `restrict`: refused (`failed_precondition`) while any exists (SPIRE's `bundle delete -mode restrict`);
   * - `delete`: they are deleted (`-mode delete`);
   * - `dissociate`: the trust domain is removed from their `federates_with` (`-mode dissociate`).
   *
   * @returns what `work` returned, and the ids of the entries affected.
   */
  async writeWithFederatingEntries<T>(
    trustDomain: string,
    effect: FederatingEntriesEffect,
    work: (tx: Transaction) => Promise<T>,
  ): Promise<{ result: T; entryIds: string[] }> {
    const now = this.clock.now();
    const { result, entryIds, revision } = await this.repository.write(async (tx) => {
      const revisions = await this.changeLog.open(tx, now);
      const entryIds = await this.repository.findIdsFederatingWith(tx, trustDomain);
      if (effect === 'restrict' && entryIds.length > 0) {
        throw new AppError(
          'failed_precondition',
          `trust domain ${trustDomain}: ${entryIds.length} entr${entryIds.length === 1 ? 'y federates' : 'ies federate'} with it (first: ${entryIds[0]}); use mode dissociate or delete, or change those entries first`,
        );
      }
      const result = await work(tx);
      for (const id of entryIds) {
        const next = revisions.next();
        if (effect === 'delete') await this.repository.deleteEntry(tx, id);
        if (effect === 'dissociate') await this.repository.removeFederatedTrustDomain(tx, id, trustDomain, next, now);
        revisions.record(next, id, effect === 'delete' ? 'deleted' : 'updated');
      }
      return { result, entryIds, revision: await revisions.commit() };
    });
    await this.changeLog.announce(revision);
    return { result, entryIds };
  }

  /** Deletes every entry whose `expires_at` is at or before `now`, each with its revision; returns their ids. */
  async pruneExpired(now: Date = this.clock.now()): Promise<string[]> {
    const { ids, revision } = await this.repository.write(async (tx) => {
      const revisions = await this.changeLog.open(tx, now);
      const ids = await this.repository.deleteExpired(tx, now);
      for (const entryId of ids) revisions.record(revisions.next(), entryId, 'deleted');
      return { ids, revision: await revisions.commit() };
    });
    await this.changeLog.announce(revision);
    return ids;
  }
}

/** What a change of a federated bundle does to the entries that federate with its trust domain. */
export type FederatingEntriesEffect = 'announce' | 'restrict' | 'delete' | 'dissociate';

/** What became of one valid entry of a batch: written under `id`, a duplicate of another, or its id in use. */
type WriteOutcome = { id: string } | { duplicateOf: string } | { idTaken: string };

/** What makes two entries duplicates: the same SPIFFE ID, parent ID and selector set (in any order). */
function duplicateKey(entry: { spiffeId: string; parentId: string; selectors: readonly Selector[] }): string {
  return JSON.stringify([entry.spiffeId, entry.parentId, selectorSetKey(entry.selectors)]);
}

function row(fields: ValidEntryFields, revisionNumber: number, createdAt: Date, updatedAt: Date): EntryRow {
  return {
    spiffeId: fields.spiffeId,
    parentId: fields.parentId,
    selectors: fields.selectors,
    x509SvidTtl: fields.x509SvidTtl,
    jwtSvidTtl: fields.jwtSvidTtl,
    dnsNames: fields.dnsNames,
    federatesWith: fields.federatesWith,
    admin: fields.admin,
    downstream: fields.downstream,
    hint: fields.hint,
    expiresAt: fields.expiresAt,
    revisionNumber,
    createdAt,
    updatedAt,
  };
}

/** The entry a row just inserted under `id` is: its fields only, as the repository reads them. */
function toWrittenEntry(inserted: EntryRow & { id: string }): Entry {
  return {
    id: inserted.id,
    spiffeId: inserted.spiffeId,
    parentId: inserted.parentId,
    selectors: inserted.selectors,
    x509SvidTtl: inserted.x509SvidTtl,
    jwtSvidTtl: inserted.jwtSvidTtl,
    // Stored in the given order; a read gives them sorted (selectors and trust domains leave validation sorted).
    dnsNames: inserted.dnsNames.length > 1 ? [...inserted.dnsNames].sort() : inserted.dnsNames,
    federatesWith: inserted.federatesWith,
    admin: inserted.admin,
    downstream: inserted.downstream,
    hint: inserted.hint,
    expiresAt: inserted.expiresAt,
    revisionNumber: inserted.revisionNumber,
    createdAt: inserted.createdAt,
    updatedAt: inserted.updatedAt,
  };
}

function definedFields(patch: EntryPatch): EntryPatch {
  return Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined)) as EntryPatch;
}

function normaliseFilter(filter: EntryFilter): EntryFilter {
  checkMatch('selector_match', filter.selectorMatch);
  checkMatch('federates_with_match', filter.federatesWithMatch);
  const selectors = filter.selectors?.filter(
    (selector, index, all) => all.findIndex((other) => compareSelectors(other, selector) === 0) === index,
  );
  return {
    ...filter,
    spiffeId: canonicalId(filter.spiffeId),
    parentId: canonicalId(filter.parentId),
    federatesWith: filter.federatesWith
      ?.map(canonicalTrustDomain)
      .filter((domain, index, all) => all.indexOf(domain) === index),
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

function canonicalTrustDomain(value: string): string {
  try {
    return TrustDomain.parse(value).name;
  } catch {
    return value;
  }
}

function checkMatch(field: string, match: string | undefined): void {
  if (match !== undefined && !SELECTOR_MATCHES.includes(match as SelectorMatch)) {
    throw new AppError(
      'invalid_argument',
      `${field}: must be one of ${SELECTOR_MATCHES.join(', ')}, got ${JSON.stringify(match)}`,
    );
  }
}

function checkId(id: string, field = 'id'): void {
  if (typeof id !== 'string' || !UUID.test(id)) {
    throw new AppError(
      'invalid_argument',
      `${field}: must be an entry id (a lowercase uuid), got ${JSON.stringify(id)}`,
    );
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
