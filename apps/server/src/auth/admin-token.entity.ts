import { Column, Entity, PrimaryGeneratedColumn, Unique } from 'typeorm';

/** A bearer admin token. Only the SHA-256 of the token is stored, and it is never selected by default. */
@Entity({ name: 'admin_tokens' })
@Unique('admin_tokens_name_key', ['name'])
@Unique('admin_tokens_token_hash_key', ['tokenHash'])
export class AdminTokenEntity {
  @PrimaryGeneratedColumn('uuid', { name: 'id', primaryKeyConstraintName: 'admin_tokens_pkey' })
  id!: string;

  @Column({ name: 'name', type: 'text' })
  name!: string;

  /** Hex SHA-256 of the token; a random 256-bit token needs no salt or slow hash. */
  @Column({ name: 'token_hash', type: 'text', select: false })
  tokenHash!: string;

  @Column({ name: 'created_at', type: 'timestamptz', default: () => 'now()' })
  createdAt!: Date;

  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true })
  expiresAt!: Date | null;

  @Column({ name: 'last_used_at', type: 'timestamptz', nullable: true })
  lastUsedAt!: Date | null;
}
