import { Check, Column, Entity, PrimaryColumn } from 'typeorm';
import type { EntryEventOp } from './entry.js';
import { BIGINT_AS_NUMBER } from './entry.entity.js';

/** The registry change log: exactly one row per revision, so readers can ask for "everything after R". */
@Entity({ name: 'entry_events' })
@Check('entry_events_op_check', `"op" IN ('created', 'updated', 'deleted')`)
export class EntryEventEntity {
  @PrimaryColumn({
    name: 'revision',
    type: 'bigint',
    transformer: BIGINT_AS_NUMBER,
    primaryKeyConstraintName: 'entry_events_pkey',
  })
  revision!: number;

  @Column({ name: 'entry_id', type: 'uuid' })
  entryId!: string;

  @Column({ name: 'op', type: 'varchar', length: 16 })
  op!: EntryEventOp;

  @Column({ name: 'changed_at', type: 'timestamptz' })
  changedAt!: Date;
}

/**
 * A named, monotonically increasing counter (one row, `entries`, for the registry). `pruned_through` is the highest
 * revision whose change-log row was deleted: readers behind it must resynchronise in full.
 */
@Entity({ name: 'revision_counters' })
export class RevisionCounterEntity {
  @PrimaryColumn({ name: 'name', type: 'varchar', length: 64, primaryKeyConstraintName: 'revision_counters_pkey' })
  name!: string;

  @Column({ name: 'revision', type: 'bigint', transformer: BIGINT_AS_NUMBER })
  revision!: number;

  @Column({ name: 'pruned_through', type: 'bigint', transformer: BIGINT_AS_NUMBER })
  prunedThrough!: number;
}
