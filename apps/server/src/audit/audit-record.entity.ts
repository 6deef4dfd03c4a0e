import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

/** One audited mutation: who did what to which target, when, and how it ended. */
@Entity({ name: 'audit_log' })
@Index('audit_log_at_idx', ['at'])
export class AuditRecordEntity {
  /** pg hands bigint over as a string. */
  @PrimaryGeneratedColumn('identity', {
    name: 'id',
    type: 'bigint',
    generatedIdentity: 'ALWAYS',
    primaryKeyConstraintName: 'audit_log_pkey',
  })
  id!: string;

  @Column({ name: 'at', type: 'timestamptz', default: () => 'now()' })
  at!: Date;

  /** `local-admin` (admin socket) or `admin-token:<name>`. */
  @Column({ name: 'actor', type: 'text' })
  actor!: string;

  /** `<resource>.<operation>`, e.g. `entry.create`, `agent.ban`. */
  @Column({ name: 'action', type: 'text' })
  action!: string;

  /** Ids of what was acted on, comma-separated; null when the request failed before naming one. */
  @Column({ name: 'target', type: 'text', nullable: true })
  target!: string | null;

  /** `ok`, or the error kind (`invalid_argument`, `not_found`, …, `internal`). */
  @Column({ name: 'result', type: 'text' })
  result!: string;

  @Column({ name: 'status_code', type: 'integer' })
  statusCode!: number;
}
