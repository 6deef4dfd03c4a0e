import { Injectable } from '@nestjs/common';
import { compareSelectors } from '@sigil/runtime';
import { DataSource, type EntityManager, type SelectQueryBuilder } from 'typeorm';
import { managerOf, runInTransaction, type Transaction } from '../database/transaction.js';
import type { Entry, EntryFilter, Selector } from './entry.js';
import { DnsNameEntity, EntryEntity, FederatedTrustDomainEntity, SelectorEntity } from './entry.entity.js';

/** An entry row with its children, as written. */
export interface EntryRow {
  spiffeId: string;
  parentId: string;
  selectors: readonly Selector[];
  x509SvidTtl: number;
  jwtSvidTtl: number;
  dnsNames: readonly string[];
  federatesWith: readonly string[];
  admin: boolean;
  downstream: boolean;
  hint: string;
  expiresAt: Date | null;
  revisionNumber: number;
  createdAt: Date;
  updatedAt: Date;
}

/**
 * Registry I/O only: the rules live in EntriesService, the change log in EntryChangeLogService. Methods taking `tx`
 * run inside the caller's transaction; entries come out as the service's `Entry`, never the ORM entity.
 */
@Injectable()
export class EntriesRepository {
  /** The end of the last write queued in this replica. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(private readonly dataSource: DataSource) {}

  /**
   * Runs `work` in a READ COMMITTED transaction; every query inside must go through `tx`. This replica's writes run
   * one at a time: they would wait on the counter row lock anyway (see EntryChangeLogRepository.lockCounter), but queued here a waiting write
   * holds no pooled connection, so concurrent 500-entry batches leave the pool to agent and probe queries (on the
   * embedded database, its only connection) instead of queueing there past the pool timeout. Must not be called
   * from inside `work` (it would wait for itself).
   */
  write<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.inTurn(() => this.transaction(work));
  }

  /**
   * Several write transactions in a row (a batch written in chunks), with no other write of this replica in between;
   * between two of them the connection serves other queries. Queued like {@link write}.
   */
  writeInTurn<T>(work: (write: <U>(chunk: (tx: Transaction) => Promise<U>) => Promise<U>) => Promise<T>): Promise<T> {
    return this.inTurn(() => work((chunk) => this.transaction(chunk)));
  }

  private transaction<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return runInTransaction(this.dataSource, 'READ COMMITTED', work);
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.writes.then(work);
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** Runs `work` in a REPEATABLE READ transaction: every query inside sees the same snapshot. */
  readSnapshot<T>(work: (tx: Transaction) => Promise<T>): Promise<T> {
    return runInTransaction(this.dataSource, 'REPEATABLE READ', work);
  }

  /** Inserts an entry under `id` when given, else under a generated one; returns the id. */
  async insertEntry(tx: Transaction, row: EntryRow, requestedId?: string): Promise<string> {
    const manager = managerOf(tx);
    const result = await manager.insert(EntryEntity, {
      ...(requestedId !== undefined && { id: requestedId }),
      spiffeId: row.spiffeId,
      parentId: row.parentId,
      x509SvidTtl: row.x509SvidTtl,
      jwtSvidTtl: row.jwtSvidTtl,
      admin: row.admin,
      downstream: row.downstream,
      hint: row.hint,
      expiresAt: row.expiresAt,
      revisionNumber: row.revisionNumber,
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    });
    const id = (result.identifiers[0] as { id: string }).id;
    await insertChildren(manager, id, row);
    return id;
  }

  /**
   * Inserts `rows` (each under its given id) with their selectors, DNS names and federated trust domains: one
   * multi-row statement per table, whatever the count (the columns go as arrays, so the statement's parameter count
   * stays fixed, far from PostgreSQL's 65,535 limit).
   */
  async insertEntries(tx: Transaction, rows: readonly (EntryRow & { id: string })[]): Promise<void> {
    if (rows.length === 0) return;
    const manager = managerOf(tx);
    const column = <T>(pick: (row: EntryRow & { id: string }) => T): T[] => rows.map(pick);
    await manager.query(
      `INSERT INTO registered_entries
         (id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, downstream, hint, expires_at,
          revision_number, created_at, updated_at)
       SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::varchar[], $4::integer[], $5::integer[], $6::boolean[],
                            $7::boolean[], $8::varchar[], $9::timestamptz[], $10::bigint[], $11::timestamptz[],
                            $12::timestamptz[])`,
      [
        column((row) => row.id),
        column((row) => row.spiffeId),
        column((row) => row.parentId),
        column((row) => row.x509SvidTtl),
        column((row) => row.jwtSvidTtl),
        column((row) => row.admin),
        column((row) => row.downstream),
        column((row) => row.hint),
        column((row) => row.expiresAt?.toISOString() ?? null),
        column((row) => String(row.revisionNumber)),
        column((row) => row.createdAt.toISOString()),
        column((row) => row.updatedAt.toISOString()),
      ],
    );
    const children = <T>(pick: (row: EntryRow) => readonly T[]) =>
      rows.flatMap((row) => pick(row).map((child) => [row.id, child] as const));
    const selectors = children((row) => row.selectors);
    await manager.query(
      `INSERT INTO selectors (entry_id, type, value) SELECT * FROM unnest($1::uuid[], $2::varchar[], $3::varchar[])`,
      [selectors.map(([id]) => id), selectors.map(([, s]) => s.type), selectors.map(([, s]) => s.value)],
    );
    const dnsNames = children((row) => row.dnsNames);
    if (dnsNames.length > 0) {
      await manager.query(`INSERT INTO dns_names (entry_id, value) SELECT * FROM unnest($1::uuid[], $2::varchar[])`, [
        dnsNames.map(([id]) => id),
        dnsNames.map(([, value]) => value),
      ]);
    }
    const federated = children((row) => row.federatesWith);
    if (federated.length > 0) {
      await manager.query(
        `INSERT INTO federated_trust_domains (entry_id, trust_domain) SELECT * FROM unnest($1::uuid[], $2::varchar[])`,
        [federated.map(([id]) => id), federated.map(([, trustDomain]) => trustDomain)],
      );
    }
  }

  /**
   * The existing entries with one of the given (SPIFFE ID, parent ID) pairs, each with its selectors: what a batch's
   * duplicate check compares against. One index look-up per distinct pair, whatever the registry's size (a join the
   * planner may turn into a scan of every entry, or a per-entry subquery, costs time in proportion to the registry).
   */
  async findEntriesSharingIds(
    tx: Transaction,
    pairs: readonly { spiffeId: string; parentId: string }[],
  ): Promise<{ id: string; spiffeId: string; parentId: string; selectors: Selector[] }[]> {
    const distinct = new Map(pairs.map((pair) => [JSON.stringify([pair.spiffeId, pair.parentId]), pair]));
    if (distinct.size === 0) return [];
    // OFFSET 0 keeps the lateral subquery a subquery: run once per pair on the (spiffe_id, parent_id) index, never
    // flattened into a join over the whole table.
    const rows = (await managerOf(tx).query(
      `SELECT m.id, m.spiffe_id, m.parent_id, m.type, m.value
         FROM unnest($1::varchar[], $2::varchar[]) AS p(spiffe_id, parent_id)
        CROSS JOIN LATERAL (
              SELECT e.id::text AS id, e.spiffe_id, e.parent_id, s.type, s.value
                FROM registered_entries e JOIN selectors s ON s.entry_id = e.id
               WHERE e.spiffe_id = p.spiffe_id AND e.parent_id = p.parent_id
              OFFSET 0) AS m`,
      [[...distinct.values()].map((pair) => pair.spiffeId), [...distinct.values()].map((pair) => pair.parentId)],
    )) as { id: string; spiffe_id: string; parent_id: string; type: string; value: string }[];
    const found = new Map<string, { id: string; spiffeId: string; parentId: string; selectors: Selector[] }>();
    for (const row of rows) {
      let entry = found.get(row.id);
      if (entry === undefined) {
        entry = { id: row.id, spiffeId: row.spiffe_id, parentId: row.parent_id, selectors: [] };
        found.set(row.id, entry);
      }
      entry.selectors.push({ type: row.type, value: row.value });
    }
    return [...found.values()];
  }

  /** Those of `ids` that are ids of existing entries. */
  async findExistingIds(tx: Transaction, ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = (await managerOf(tx).query(`SELECT id FROM registered_entries WHERE id = ANY($1::uuid[])`, [
      [...ids],
    ])) as { id: string }[];
    return new Set(rows.map((row) => row.id));
  }

  /** Rewrites an entry's row and replaces its selectors, DNS names and federated trust domains. */
  async replaceEntry(tx: Transaction, id: string, row: EntryRow): Promise<void> {
    const manager = managerOf(tx);
    await manager.update(
      EntryEntity,
      { id },
      {
        spiffeId: row.spiffeId,
        parentId: row.parentId,
        x509SvidTtl: row.x509SvidTtl,
        jwtSvidTtl: row.jwtSvidTtl,
        admin: row.admin,
        downstream: row.downstream,
        hint: row.hint,
        expiresAt: row.expiresAt,
        revisionNumber: row.revisionNumber,
        updatedAt: row.updatedAt,
      },
    );
    await manager.delete(SelectorEntity, { entryId: id });
    await manager.delete(DnsNameEntity, { entryId: id });
    await manager.delete(FederatedTrustDomainEntity, { entryId: id });
    await insertChildren(manager, id, row);
  }

  /** Deletes the entry (its children cascade); false when there was none. */
  async deleteEntry(tx: Transaction, id: string): Promise<boolean> {
    const result = await managerOf(tx).delete(EntryEntity, { id });
    return (result.affected ?? 0) > 0;
  }

  /** The ids of the entries whose `federates_with` lists `trustDomain`, sorted. */
  async findIdsFederatingWith(tx: Transaction, trustDomain: string): Promise<string[]> {
    const rows = await managerOf(tx).find(FederatedTrustDomainEntity, {
      select: { entryId: true },
      where: { trustDomain },
      order: { entryId: 'ASC' },
    });
    return rows.map((row) => row.entryId);
  }

  /** Removes `trustDomain` from the entry's `federates_with`, recording the change's revision and time on the entry. */
  async removeFederatedTrustDomain(
    tx: Transaction,
    id: string,
    trustDomain: string,
    revisionNumber: number,
    updatedAt: Date,
  ): Promise<void> {
    const manager = managerOf(tx);
    await manager.delete(FederatedTrustDomainEntity, { entryId: id, trustDomain });
    await manager.update(EntryEntity, { id }, { revisionNumber, updatedAt });
  }

  /** Deletes every entry with `expires_at <= now` and returns their ids. */
  async deleteExpired(tx: Transaction, now: Date): Promise<string[]> {
    const result = await managerOf(tx)
      .createQueryBuilder()
      .delete()
      .from(EntryEntity)
      .where('expires_at <= :now', { now })
      .returning(['id'])
      .execute();
    return (result.raw as { id: string }[]).map((row) => row.id).sort();
  }

  async findById(tx: Transaction, id: string): Promise<Entry | undefined> {
    return (await this.findByIds(tx, [id]))[0];
  }

  /** The entries among `ids` that exist, with their children, ordered by id. */
  async findByIds(tx: Transaction, ids: readonly string[]): Promise<Entry[]> {
    if (ids.length === 0) return [];
    const manager = managerOf(tx);
    const rows = (await manager.query(
      `${ENTRY_COLUMNS} FROM registered_entries WHERE id = ANY($1::uuid[]) ORDER BY id`,
      [[...ids]],
    )) as EntryRawRow[];
    if (rows.length === 0) return [];
    const assembler = new EntryAssembler(NOT_INTERNED);
    for (const row of rows) assembler.addEntry(row);
    const found = [rows.map((row) => row.id)];
    // Sent at once (queued on the transaction's one connection): PostgreSQL goes from one to the next.
    await Promise.all(
      CHILD_TABLES.map((table) =>
        manager.query(`${table.select} WHERE entry_id = ANY($1::uuid[])`, found).then((childRows: ChildRow[]) => {
          const attach = assembler.attacher(table);
          for (const child of childRows) attach(child);
        }),
      ),
    );
    return assembler.finish().stored;
  }

  /** Up to `limit` entries matching `filter` with ids after `afterId`, ordered by id, with their children. */
  async findPage(filter: EntryFilter, afterId: string | undefined, limit: number, tx: Transaction): Promise<Entry[]> {
    const manager = managerOf(tx);
    const query = filtered(manager.createQueryBuilder(EntryEntity, 'e'), filter);
    if (afterId !== undefined) query.andWhere('e.id > :afterId', { afterId });
    const entries = await query.orderBy('e.id', 'ASC').limit(limit).getMany();
    return withChildren(manager, entries);
  }

  async count(filter: EntryFilter): Promise<number> {
    return filtered(this.dataSource.manager.createQueryBuilder(EntryEntity, 'e'), filter).getCount();
  }

  /**
   * Every entry with its children, by id, in no particular order (a replica's index load at start and on resync; the
   * caller takes the map over). Each table is read whole in the order PostgreSQL stores it, through a cursor fetched
   * `pageSize` rows at a time, and children are joined to their entries here ({@link EntryAssembler}): with a million entries, reading
   * in id order (an index scan visiting the table's pages at random) was ~1.1 s of PostgreSQL's time for the entries
   * and ~0.9 s for the selectors, against ~0.35 s each for the table as stored. Plain queries are mapped straight to
   * entries: the ORM's entity building and date parsing, and holding every row of a table at once, were most of a
   * restart's time and memory.
   */
  async findAll(tx: Transaction, pageSize = FIND_ALL_PAGE): Promise<Map<string, Entry>> {
    if (!Number.isSafeInteger(pageSize) || pageSize < 1) throw new RangeError(`findAll: bad page size ${pageSize}`);
    const manager = managerOf(tx);
    // Every scan from the table's first page: with synchronized scans PostgreSQL may start one where another scan of
    // the same table is, and the children would no longer come in their entries' order (still right, only slower).
    await manager.query('SET LOCAL synchronize_seqscans = off');
    const assembler = new EntryAssembler(interner());
    await readWhole<EntryRawRow>(manager, `${ENTRY_COLUMNS} FROM registered_entries`, pageSize, (row) =>
      assembler.addEntry(row),
    );
    // Read after the entries, in the same snapshot: every child's entry is there (foreign keys).
    for (const table of CHILD_TABLES) await readWhole(manager, table.select, pageSize, assembler.attacher(table));
    return assembler.finish().entries;
  }
}

/** Cursors of {@link readWhole}, numbered: each read has its own, whatever else the transaction has open. */
let cursors = 0;

/**
 * Reads every row `sql` selects through a cursor of the transaction, `pageSize` rows per fetch, and gives each to
 * `each` (PostgreSQL holds the rest: memory for one page of rows). The cursor is closed when the read ends or fails
 * (a failed transaction closes it anyway).
 */
async function readWhole<T>(
  manager: EntityManager,
  sql: string,
  pageSize: number,
  each: (row: T) => void,
): Promise<void> {
  const cursor = `sigil_read_whole_${(cursors = (cursors + 1) % Number.MAX_SAFE_INTEGER)}`;
  await manager.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR ${sql}`);
  try {
    for (;;) {
      const rows = (await manager.query(`FETCH FORWARD ${pageSize} FROM ${cursor}`)) as T[];
      for (const row of rows) each(row);
      if (rows.length < pageSize) break;
    }
  } finally {
    await manager.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}

/**
 * The numbers of an entry row, in the order of its `numbers` column, each an SQL expression of a decimal integer:
 * TTLs, the flags as 0 or 1, the revision, the times in epoch milliseconds (`updated_at` empty when it equals
 * `created_at`, sparing PostgreSQL its conversion; `expires_at` empty when NULL).
 */
const NUMBER_FIELDS = [
  ['x509SvidTtl', 'x509_svid_ttl'],
  ['jwtSvidTtl', 'jwt_svid_ttl'],
  ['admin', 'admin::integer'],
  ['downstream', 'downstream::integer'],
  ['revisionNumber', 'revision_number'],
  ['createdAt', epochMs('created_at')],
  ['updatedAt', `CASE WHEN updated_at = created_at THEN '' ELSE ${epochMs('updated_at')}::text END`],
  ['expiresAt', `coalesce(${epochMs('expires_at')}::text, '')`],
] as const;

/** Where each of {@link NUMBER_FIELDS} is in the `numbers` column. */
const AT = Object.fromEntries(NUMBER_FIELDS.map(([name], index) => [name, index])) as Record<
  (typeof NUMBER_FIELDS)[number][0],
  number
>;

/**
 * The columns of an entry row as {@link EntryRawRow} reads them: the texts as they are, and every number of the row
 * in one column, {@link NUMBER_FIELDS} separated by spaces. The driver's cost is per column (a string and a type
 * parser each): with a million entries, eight columns of numbers took ~1 s more of the server's CPU to read than one
 * (bench/README.md, issue 13).
 */
const ENTRY_COLUMNS = `SELECT id, spiffe_id, parent_id, hint,
  concat_ws(' ', ${NUMBER_FIELDS.map(([, sql]) => sql).join(', ')}) AS numbers`;

/**
 * Shares equal values across entries: strings (parent IDs, selector types, trust domains) and times (a batch create
 * stamps its 500 entries with one time), one string or Date each, up to INTERNED_MAX of each, instead of one per entry
 * (a Date is ~100 bytes of heap: ~90 MiB for a million entries). Entries are read-only, their Dates included.
 */
interface Interner {
  text(text: string): string;
  /** The Date of epoch milliseconds given as decimal text (as `epochMs` columns read). */
  time(epochMs: string): Date;
}

function interner(): Interner {
  return { text: sharing(NOT_INTERNED.text), time: sharing(NOT_INTERNED.time) };
}

/** The value `make` gives for a key, one per distinct key while fewer than INTERNED_MAX are held, fresh after that. */
function sharing<T>(make: (key: string) => T): (key: string) => T {
  const known = new Map<string, T>();
  return (key) => {
    const held = known.get(key);
    if (held !== undefined) return held;
    const value = make(key);
    if (known.size < INTERNED_MAX) known.set(key, value);
    return value;
  };
}

/** What an {@link EntryAssembler} does without sharing: a string as it is, a fresh Date. */
const NOT_INTERNED: Interner = { text: (text) => text, time: (epochMs) => new Date(Number(epochMs)) };

/** The lists of an entry that its child tables hold. */
type ChildField = 'selectors' | 'dnsNames' | 'federatesWith';

/** A row of a child table: its entry's id and what it holds. */
interface ChildRow {
  readonly entry_id: string;
}

/** A child table: how its rows are read (plus a WHERE, or none for all), and which list of its entry each goes in. */
interface ChildTable<R extends ChildRow = ChildRow> {
  readonly name: string;
  readonly select: string;
  readonly field: ChildField;
  value(row: R, intern: Interner): unknown;
}

const childTable = <R extends ChildRow>(table: ChildTable<R>): ChildTable => table as unknown as ChildTable;

/** Every child table of an entry, as {@link EntriesRepository.findAll} and {@link EntriesRepository.findByIds} read them. */
const CHILD_TABLES: readonly ChildTable[] = [
  childTable<ChildRow & { type: string; value: string }>({
    name: 'selectors',
    select: 'SELECT entry_id, type, value FROM selectors',
    field: 'selectors',
    value: (row, intern): Selector => ({ type: intern.text(row.type), value: row.value }),
  }),
  childTable<ChildRow & { value: string }>({
    name: 'dns_names',
    select: 'SELECT entry_id, value FROM dns_names',
    field: 'dnsNames',
    value: (row) => row.value,
  }),
  childTable<ChildRow & { trust_domain: string }>({
    name: 'federated_trust_domains',
    select: 'SELECT entry_id, trust_domain FROM federated_trust_domains',
    field: 'federatesWith',
    value: (row, intern) => intern.text(row.trust_domain),
  }),
];

/** How many entries past the last child's an attacher looks for the next child's entry before it looks it up by id. */
const LOOK_AHEAD = 16;

/**
 * Builds entries from the rows of the entry table and then of each child table, in whatever order they come:
 * straight from the driver's rows (the ORM's entity building and text date parsing cost more than the reads).
 */
class EntryAssembler {
  /** Every entry by id. */
  readonly entries = new Map<string, Entry>();
  /** The entries in the order their rows came. */
  readonly stored: Entry[] = [];

  constructor(private readonly intern: Interner) {}

  addEntry(row: EntryRawRow): void {
    const entry = rawToEntry(row, this.intern);
    this.entries.set(entry.id, entry);
    this.stored.push(entry);
  }

  /**
   * A function that puts a row of `table` in its entry's list. Children are mostly stored in the order of their
   * entries (a create writes an entry's children after it, batch by batch): each child's entry is looked for from where
   * the last child's was, up to {@link LOOK_AHEAD} entries on, and by id only when not there (a look-up in a map of a
   * million misses the cache: 1.5-2 s of a restart with a million entries when every child took one). A child whose
   * entry was not read is an error: the reads are of one snapshot (foreign keys), or of the entries read.
   */
  attacher(table: ChildTable): (row: ChildRow) => void {
    let last = 0;
    return (row) => {
      const entryId = row.entry_id;
      let entry: Entry | undefined;
      const end = Math.min(last + LOOK_AHEAD, this.stored.length);
      for (let at = last; at < end; at++) {
        if (this.stored[at]!.id === entryId) {
          entry = this.stored[at];
          last = at;
          break;
        }
      }
      entry ??= this.entries.get(entryId);
      if (entry === undefined) {
        throw new Error(`entry read: a ${table.name} row of entry ${entryId}, which is not among the entries read`);
      }
      const lists = entry as unknown as Record<ChildField, readonly unknown[]>;
      // A new list of the exact size each time (`concat`): one grown by `push` keeps ~17 slots, ~135 bytes more per
      // entry with two selectors (~130 MB for a million), where copying it at the end raised the load's peak instead.
      lists[table.field] = lists[table.field].concat([table.value(row, this.intern)]);
    };
  }

  /** Puts every entry's children in order; returns the assembler. */
  finish(): this {
    for (const entry of this.stored) sortChildren(entry);
    return this;
  }
}

/** Children lists in the order every read gives them: selectors by type and value, names sorted (in place). */
function sortChildren(entry: Entry): void {
  if (entry.selectors.length > 1) (entry.selectors as Selector[]).sort(compareSelectors);
  if (entry.dnsNames.length > 1) (entry.dnsNames as string[]).sort();
  if (entry.federatesWith.length > 1) (entry.federatesWith as string[]).sort();
}

/** The error of a row whose numbers column is not {@link NUMBER_FIELDS} as written. */
function unreadable(row: EntryRawRow): never {
  throw new Error(`entry ${row.id}: unreadable numbers column '${row.numbers}'`);
}

/** Decimal integer text as a number; anything else (empty, not an integer, past 2^53) is {@link unreadable}. */
function wholeNumber(text: string | undefined, row: EntryRawRow): number {
  const value = Number(text);
  return text !== '' && Number.isSafeInteger(value) ? value : unreadable(row);
}

/** An entry of a row, its children empty (NONE) until attached. */
function rawToEntry(row: EntryRawRow, intern: Interner): Entry {
  const numbers = row.numbers.split(' ');
  if (numbers.length !== NUMBER_FIELDS.length) unreadable(row);
  const time = (index: number): Date => {
    wholeNumber(numbers[index], row);
    return intern.time(numbers[index]!);
  };
  const flag = (index: number): boolean => {
    const value = wholeNumber(numbers[index], row);
    if (value !== 0 && value !== 1) unreadable(row);
    return value === 1;
  };
  const createdAt = time(AT.createdAt);
  return {
    id: row.id,
    spiffeId: row.spiffe_id,
    parentId: intern.text(row.parent_id),
    selectors: NONE,
    x509SvidTtl: wholeNumber(numbers[AT.x509SvidTtl], row),
    jwtSvidTtl: wholeNumber(numbers[AT.jwtSvidTtl], row),
    dnsNames: NONE,
    federatesWith: NONE,
    admin: flag(AT.admin),
    downstream: flag(AT.downstream),
    hint: row.hint,
    expiresAt: numbers[AT.expiresAt] === '' ? null : time(AT.expiresAt),
    revisionNumber: wholeNumber(numbers[AT.revisionNumber], row),
    createdAt,
    updatedAt: numbers[AT.updatedAt] === '' ? createdAt : time(AT.updatedAt),
  };
}

/** Rows per fetch of {@link EntriesRepository.findAll}, from each table. */
export const FIND_ALL_PAGE = 20_000;

/** Distinct strings (parent IDs, selector types, trust domains), and times, `findAll` shares: at most this many. */
const INTERNED_MAX = 10_000;

/** The one empty list of children `findAll` gives entries without any (entries are read-only). */
const NONE: readonly never[] = Object.freeze([]);

/** An entry row as `findAll` and `findByIds` read it ({@link ENTRY_COLUMNS}). */
interface EntryRawRow {
  id: string;
  spiffe_id: string;
  parent_id: string;
  hint: string;
  /** {@link NUMBER_FIELDS}, decimal integers separated by one space. */
  numbers: string;
}

/** A timestamptz column as whole epoch milliseconds (exactly what `pg` makes of it, without parsing text dates). */
function epochMs(column: string): string {
  return `(extract(epoch FROM date_trunc('milliseconds', ${column})) * 1000)::bigint`;
}

async function insertChildren(manager: EntityManager, entryId: string, row: EntryRow): Promise<void> {
  await manager.insert(
    SelectorEntity,
    row.selectors.map(({ type, value }) => ({ entryId, type, value })),
  );
  if (row.dnsNames.length > 0) {
    await manager.insert(
      DnsNameEntity,
      row.dnsNames.map((value) => ({ entryId, value })),
    );
  }
  if (row.federatesWith.length > 0) {
    await manager.insert(
      FederatedTrustDomainEntity,
      row.federatesWith.map((trustDomain) => ({ entryId, trustDomain })),
    );
  }
}

async function withChildren(manager: EntityManager, entries: EntryEntity[]): Promise<Entry[]> {
  const ids = entries.map((entry) => entry.id);
  const load = <T extends { entryId: string }>(target: new () => T, alias: string) => {
    return manager.createQueryBuilder(target, alias).where(`${alias}.entry_id = ANY(:ids)`, { ids }).getMany();
  };
  // One after the other: inside a transaction they share one connection.
  const selectors = await load(SelectorEntity, 's');
  const dnsNames = await load(DnsNameEntity, 'd');
  const federated = await load(FederatedTrustDomainEntity, 'f');
  const byId = new Map(entries.map((entry) => [entry.id, entry]));
  for (const entry of entries) {
    entry.selectors = [];
    entry.dnsNames = [];
    entry.federatesWith = [];
  }
  for (const selector of selectors) byId.get(selector.entryId)?.selectors.push(selector);
  for (const dnsName of dnsNames) byId.get(dnsName.entryId)?.dnsNames.push(dnsName);
  for (const trustDomain of federated) byId.get(trustDomain.entryId)?.federatesWith.push(trustDomain);
  return entries.map(toEntry);
}

/** Maps the ORM entity to the service's Entry; entities stop here. */
function toEntry(entity: EntryEntity): Entry {
  const entry: Entry = {
    id: entity.id,
    spiffeId: entity.spiffeId,
    parentId: entity.parentId,
    selectors: entity.selectors.map(({ type, value }): Selector => ({ type, value })),
    x509SvidTtl: entity.x509SvidTtl,
    jwtSvidTtl: entity.jwtSvidTtl,
    dnsNames: entity.dnsNames.map((dnsName) => dnsName.value),
    federatesWith: entity.federatesWith.map((federated) => federated.trustDomain),
    admin: entity.admin,
    downstream: entity.downstream,
    hint: entity.hint,
    expiresAt: entity.expiresAt,
    revisionNumber: entity.revisionNumber,
    createdAt: entity.createdAt,
    updatedAt: entity.updatedAt,
  };
  sortChildren(entry);
  return entry;
}

function filtered(query: SelectQueryBuilder<EntryEntity>, filter: EntryFilter): SelectQueryBuilder<EntryEntity> {
  if (filter.spiffeId !== undefined) query.andWhere('e.spiffe_id = :spiffeId', { spiffeId: filter.spiffeId });
  if (filter.parentId !== undefined) query.andWhere('e.parent_id = :parentId', { parentId: filter.parentId });
  if (filter.hint !== undefined) query.andWhere('e.hint = :hint', { hint: filter.hint });
  if (filter.downstream !== undefined) query.andWhere('e.downstream = :downstream', { downstream: filter.downstream });
  if (filter.federatesWith !== undefined && filter.federatesWith.length > 0) {
    matchFederatesWith(query, filter.federatesWith, filter.federatesWithMatch ?? 'superset');
  }
  if (filter.selectors !== undefined && filter.selectors.length > 0) {
    matchSelectors(query, filter.selectors, filter.selectorMatch ?? 'superset');
  }
  return query;
}

/** Adds the condition that the entry `e`'s federated trust domains relate to `trustDomains` (distinct) as `match` says. */
function matchFederatesWith<T extends object>(
  query: SelectQueryBuilder<T>,
  trustDomains: readonly string[],
  match: NonNullable<EntryFilter['federatesWithMatch']>,
): void {
  query.setParameters({ federatesWith: trustDomains, federatesWithCount: trustDomains.length });
  const given = 'f.trust_domain = ANY(CAST(:federatesWith AS text[]))';
  const hasAll = `e.id IN (SELECT f.entry_id FROM federated_trust_domains f WHERE ${given} GROUP BY f.entry_id HAVING count(*) = :federatesWithCount)`;
  switch (match) {
    case 'superset':
      query.andWhere(hasAll);
      return;
    case 'exact':
      query.andWhere(hasAll);
      query.andWhere('(SELECT count(*) FROM federated_trust_domains f WHERE f.entry_id = e.id) = :federatesWithCount');
      return;
    case 'subset':
      query.andWhere(`NOT EXISTS (SELECT 1 FROM federated_trust_domains f WHERE f.entry_id = e.id AND NOT (${given}))`);
      return;
    case 'any':
      query.andWhere(`e.id IN (SELECT f.entry_id FROM federated_trust_domains f WHERE ${given})`);
      return;
  }
}

/** Adds the condition that the entry `e`'s selector set relates to `selectors` (distinct) as `match` says. */
function matchSelectors<T extends object>(
  query: SelectQueryBuilder<T>,
  selectors: readonly Selector[],
  match: NonNullable<EntryFilter['selectorMatch']>,
): void {
  const given = 'unnest(CAST(:selectorTypes AS text[]), CAST(:selectorValues AS text[])) AS q(type, value)';
  const withGiven = 'JOIN ' + given + ' ON s.type = q.type AND s.value = q.value';
  query.setParameters({
    selectorTypes: selectors.map((selector) => selector.type),
    selectorValues: selectors.map((selector) => selector.value),
    selectorCount: selectors.length,
  });
  const hasAll = `e.id IN (SELECT s.entry_id FROM selectors s ${withGiven} GROUP BY s.entry_id HAVING count(*) = :selectorCount)`;
  switch (match) {
    case 'superset':
      query.andWhere(hasAll);
      return;
    case 'exact':
      query.andWhere(hasAll);
      query.andWhere('(SELECT count(*) FROM selectors s WHERE s.entry_id = e.id) = :selectorCount');
      return;
    case 'subset':
      query.andWhere(
        `NOT EXISTS (SELECT 1 FROM selectors s WHERE s.entry_id = e.id AND NOT EXISTS (SELECT 1 FROM ${given} WHERE q.type = s.type AND q.value = s.value))`,
      );
      return;
    case 'any':
      query.andWhere(`e.id IN (SELECT s.entry_id FROM selectors s ${withGiven})`);
      return;
  }
}
