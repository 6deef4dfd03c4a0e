import { Injectable } from '@nestjs/common';
import { DataSource, type EntityManager, type SelectQueryBuilder } from 'typeorm';
import type { EntryFilter, Selector } from './entry.js';
import { EntryEventEntity, RevisionCounterEntity, type EntryEventOp } from './entry-event.entity.js';
import { DnsNameEntity, EntryEntity, FederatedTrustDomainEntity, SelectorEntity } from './entry.entity.js';

/** The registry's row of `revision_counters`. */
const COUNTER = 'entries';

/** The registry revision counter: head revision and the last revision pruned from the change log. */
export interface RevisionCounter {
  revision: number;
  prunedThrough: number;
}

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

export interface NewEntryEvent {
  revision: number;
  entryId: string;
  op: EntryEventOp;
  changedAt: Date;
}

/** Registry I/O only: the rules live in EntriesService. Methods taking `tx` run inside the caller's transaction. */
@Injectable()
export class EntriesRepository {
  /** The end of the last write queued in this replica. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(private readonly dataSource: DataSource) {}

  /**
   * Runs `work` in a READ COMMITTED transaction; every query inside must go through `tx`. This replica's writes run
   * one at a time: they would wait on the counter row lock anyway (see lockCounter), but queued here a waiting write
   * holds no pooled connection, so concurrent 500-entry batches leave the pool to agent and probe queries (on the
   * embedded database, its only connection) instead of queueing there past the pool timeout. Must not be called
   * from inside `work` (it would wait for itself).
   */
  write<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    return this.inTurn(() => this.transaction(work));
  }

  /**
   * Several write transactions in a row (a batch written in chunks), with no other write of this replica in between;
   * between two of them the connection serves other queries. Queued like {@link write}.
   */
  writeInTurn<T>(work: (write: <U>(chunk: (tx: EntityManager) => Promise<U>) => Promise<U>) => Promise<T>): Promise<T> {
    return this.inTurn(() => work((chunk) => this.transaction(chunk)));
  }

  private transaction<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    return this.dataSource.transaction('READ COMMITTED', work);
  }

  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.writes.then(work);
    this.writes = run.catch(() => undefined);
    return run;
  }

  /** Runs `work` in a REPEATABLE READ transaction: every query inside sees the same snapshot. */
  readSnapshot<T>(work: (tx: EntityManager) => Promise<T>): Promise<T> {
    return this.dataSource.transaction('REPEATABLE READ', work);
  }

  /**
   * Locks the registry's counter row until `tx` ends and returns it. Every writer takes this lock first, so writers
   * run one at a time and commit in revision order.
   */
  async lockCounter(tx: EntityManager): Promise<RevisionCounter> {
    const counter = await tx
      .createQueryBuilder(RevisionCounterEntity, 'c')
      .setLock('pessimistic_write')
      .where('c.name = :name', { name: COUNTER })
      .getOneOrFail();
    return { revision: counter.revision, prunedThrough: counter.prunedThrough };
  }

  async readCounter(tx: EntityManager = this.dataSource.manager): Promise<RevisionCounter> {
    const counter = await tx.findOneByOrFail(RevisionCounterEntity, { name: COUNTER });
    return { revision: counter.revision, prunedThrough: counter.prunedThrough };
  }

  async updateCounter(tx: EntityManager, counter: Partial<RevisionCounter>): Promise<void> {
    await tx.update(RevisionCounterEntity, { name: COUNTER }, counter);
  }

  async recordEvents(tx: EntityManager, events: readonly NewEntryEvent[]): Promise<void> {
    if (events.length > 0) await tx.insert(EntryEventEntity, [...events]);
  }

  /** Events with `after < revision <= through`, oldest first. */
  async listEvents(tx: EntityManager, after: number, through: number): Promise<EntryEventEntity[]> {
    return tx
      .createQueryBuilder(EntryEventEntity, 'ev')
      .where('ev.revision > :after AND ev.revision <= :through', { after, through })
      .orderBy('ev.revision', 'ASC')
      .getMany();
  }

  /** Deletes change-log rows older than `before`; returns the highest revision deleted, if any. */
  async deleteEventsBefore(tx: EntityManager, before: Date): Promise<number | undefined> {
    const result = await tx
      .createQueryBuilder()
      .delete()
      .from(EntryEventEntity)
      .where('changed_at < :before', { before })
      .returning(['revision'])
      .execute();
    const revisions = (result.raw as { revision: string }[]).map((row) => Number(row.revision));
    return revisions.length === 0 ? undefined : Math.max(...revisions);
  }

  async insertEntry(tx: EntityManager, row: EntryRow): Promise<string> {
    const result = await tx.insert(EntryEntity, {
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
    await this.insertChildren(tx, id, row);
    return id;
  }

  /** Rewrites an entry's row and replaces its selectors, DNS names and federated trust domains. */
  async replaceEntry(tx: EntityManager, id: string, row: EntryRow): Promise<void> {
    await tx.update(
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
    await tx.delete(SelectorEntity, { entryId: id });
    await tx.delete(DnsNameEntity, { entryId: id });
    await tx.delete(FederatedTrustDomainEntity, { entryId: id });
    await this.insertChildren(tx, id, row);
  }

  private async insertChildren(tx: EntityManager, entryId: string, row: EntryRow): Promise<void> {
    await tx.insert(
      SelectorEntity,
      row.selectors.map(({ type, value }) => ({ entryId, type, value })),
    );
    if (row.dnsNames.length > 0) {
      await tx.insert(
        DnsNameEntity,
        row.dnsNames.map((value) => ({ entryId, value })),
      );
    }
    if (row.federatesWith.length > 0) {
      await tx.insert(
        FederatedTrustDomainEntity,
        row.federatesWith.map((trustDomain) => ({ entryId, trustDomain })),
      );
    }
  }

  /** Deletes the entry (its children cascade); false when there was none. */
  async deleteEntry(tx: EntityManager, id: string): Promise<boolean> {
    const result = await tx.delete(EntryEntity, { id });
    return (result.affected ?? 0) > 0;
  }

  /** Deletes every entry with `expires_at <= now` and returns their ids. */
  async deleteExpired(tx: EntityManager, now: Date): Promise<string[]> {
    const result = await tx
      .createQueryBuilder()
      .delete()
      .from(EntryEntity)
      .where('expires_at <= :now', { now })
      .returning(['id'])
      .execute();
    return (result.raw as { id: string }[]).map((row) => row.id).sort();
  }

  /** The id of another entry with the same SPIFFE ID, parent ID and exactly the same selector set. */
  async findDuplicateId(
    tx: EntityManager,
    spiffeId: string,
    parentId: string,
    selectors: readonly Selector[],
    excludeId?: string,
  ): Promise<string | undefined> {
    const query = tx
      .createQueryBuilder(EntryEntity, 'e')
      .select('e.id', 'id')
      .where('e.spiffe_id = :spiffeId AND e.parent_id = :parentId', { spiffeId, parentId });
    if (excludeId !== undefined) query.andWhere('e.id <> :excludeId', { excludeId });
    matchSelectors(query, selectors, 'exact');
    const row = await query.limit(1).getRawOne<{ id: string }>();
    return row?.id;
  }

  async findById(tx: EntityManager, id: string): Promise<EntryEntity | undefined> {
    return (await this.findByIds(tx, [id]))[0];
  }

  /** The entries among `ids` that exist, with their children, ordered by id. */
  async findByIds(tx: EntityManager, ids: readonly string[]): Promise<EntryEntity[]> {
    if (ids.length === 0) return [];
    const entries = await tx
      .createQueryBuilder(EntryEntity, 'e')
      .where('e.id = ANY(:ids)', { ids: [...ids] })
      .orderBy('e.id', 'ASC')
      .getMany();
    return this.withChildren(tx, entries, false);
  }

  /** Up to `limit` entries matching `filter` with ids after `afterId`, ordered by id, with their children. */
  async findPage(
    filter: EntryFilter,
    afterId: string | undefined,
    limit: number,
    tx: EntityManager = this.dataSource.manager,
  ): Promise<EntryEntity[]> {
    const query = filtered(tx.createQueryBuilder(EntryEntity, 'e'), filter);
    if (afterId !== undefined) query.andWhere('e.id > :afterId', { afterId });
    const entries = await query.orderBy('e.id', 'ASC').limit(limit).getMany();
    return this.withChildren(tx, entries, false);
  }

  async count(filter: EntryFilter, tx: EntityManager = this.dataSource.manager): Promise<number> {
    return filtered(tx.createQueryBuilder(EntryEntity, 'e'), filter).getCount();
  }

  /** Every entry with its children (four queries whatever the count). */
  async findAll(tx: EntityManager): Promise<EntryEntity[]> {
    const entries = await tx.createQueryBuilder(EntryEntity, 'e').orderBy('e.id', 'ASC').getMany();
    return this.withChildren(tx, entries, true);
  }

  private async withChildren(tx: EntityManager, entries: EntryEntity[], all: boolean): Promise<EntryEntity[]> {
    const ids = entries.map((entry) => entry.id);
    const load = <T extends { entryId: string }>(target: new () => T, alias: string) => {
      const query = tx.createQueryBuilder(target, alias);
      if (!all) query.where(`${alias}.entry_id = ANY(:ids)`, { ids });
      return query.getMany();
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
    return entries;
  }
}

function filtered(query: SelectQueryBuilder<EntryEntity>, filter: EntryFilter): SelectQueryBuilder<EntryEntity> {
  if (filter.spiffeId !== undefined) query.andWhere('e.spiffe_id = :spiffeId', { spiffeId: filter.spiffeId });
  if (filter.parentId !== undefined) query.andWhere('e.parent_id = :parentId', { parentId: filter.parentId });
  if (filter.hint !== undefined) query.andWhere('e.hint = :hint', { hint: filter.hint });
  if (filter.federatesWith !== undefined) {
    query.andWhere('e.id IN (SELECT f.entry_id FROM federated_trust_domains f WHERE f.trust_domain = :federatesWith)', {
      federatesWith: filter.federatesWith,
    });
  }
  if (filter.selectors !== undefined && filter.selectors.length > 0) {
    matchSelectors(query, filter.selectors, filter.selectorMatch ?? 'superset');
  }
  return query;
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
