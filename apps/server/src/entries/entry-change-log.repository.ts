import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { managerOf, type Transaction } from '../database/transaction.js';
import type { EntryEvent } from './entry.js';
import { EntryEventEntity, RevisionCounterEntity } from './entry-event.entity.js';

/** The registry's row of `revision_counters`. */
const COUNTER = 'entries';

/** The registry revision counter: head revision and the last revision pruned from the change log. */
export interface RevisionCounter {
  readonly revision: number;
  readonly prunedThrough: number;
}

/** A change-log row to write. */
export interface NewEntryEvent extends EntryEvent {
  readonly changedAt: Date;
}

/** I/O of the change log (`entry_events`) and its counter (`revision_counters`). */
@Injectable()
export class EntryChangeLogRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Locks the registry's counter row until `tx` ends and returns it. Every writer takes this lock first, so writers
   * run one at a time and commit in revision order.
   */
  async lockCounter(tx: Transaction): Promise<RevisionCounter> {
    const counter = await managerOf(tx)
      .createQueryBuilder(RevisionCounterEntity, 'c')
      .setLock('pessimistic_write')
      .where('c.name = :name', { name: COUNTER })
      .getOneOrFail();
    return { revision: counter.revision, prunedThrough: counter.prunedThrough };
  }

  /** The counter, read in `tx` or on its own. */
  async readCounter(tx?: Transaction): Promise<RevisionCounter> {
    const manager = tx === undefined ? this.dataSource.manager : managerOf(tx);
    const counter = await manager.findOneByOrFail(RevisionCounterEntity, { name: COUNTER });
    return { revision: counter.revision, prunedThrough: counter.prunedThrough };
  }

  async updateCounter(tx: Transaction, counter: Partial<RevisionCounter>): Promise<void> {
    await managerOf(tx).update(RevisionCounterEntity, { name: COUNTER }, counter);
  }

  /**
   * One multi-row statement whatever the count: the columns go as arrays, so its parameter count stays fixed (a
   * row-per-parameter-set insert passed PostgreSQL's 65,535-parameter limit past 16,383 events).
   */
  async recordEvents(tx: Transaction, events: readonly NewEntryEvent[]): Promise<void> {
    if (events.length === 0) return;
    await managerOf(tx).query(
      `INSERT INTO entry_events (revision, entry_id, op, changed_at)
       SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::varchar[], $4::timestamptz[])`,
      [
        events.map((event) => String(event.revision)),
        events.map((event) => event.entryId),
        events.map((event) => event.op),
        events.map((event) => event.changedAt.toISOString()),
      ],
    );
  }

  /** Events with `after < revision <= through`, oldest first. */
  async listEvents(tx: Transaction, after: number, through: number): Promise<EntryEvent[]> {
    const events = await managerOf(tx)
      .createQueryBuilder(EntryEventEntity, 'ev')
      .where('ev.revision > :after AND ev.revision <= :through', { after, through })
      .orderBy('ev.revision', 'ASC')
      .getMany();
    return events.map(({ revision, entryId, op }) => ({ revision, entryId, op }));
  }

  /** Deletes change-log rows older than `before`; returns the highest revision deleted, if any. */
  async deleteEventsBefore(tx: Transaction, before: Date): Promise<number | undefined> {
    const result = await managerOf(tx)
      .createQueryBuilder()
      .delete()
      .from(EntryEventEntity)
      .where('changed_at < :before', { before })
      .returning(['revision'])
      .execute();
    const revisions = (result.raw as { revision: string }[]).map((row) => Number(row.revision));
    return revisions.length === 0 ? undefined : Math.max(...revisions);
  }
}
