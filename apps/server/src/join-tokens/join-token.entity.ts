import { Column, Entity, Index, PrimaryGeneratedColumn, Unique } from 'typeorm';

/** A single-use join token for node attestation; only its SHA-256 is stored (SPIRE `join_tokens`). */
@Entity({ name: 'join_tokens' })
@Unique('join_tokens_token_hash_key', ['tokenHash'])
@Index('join_tokens_expires_at_idx', ['expiresAt'])
export class JoinTokenEntity {
  @PrimaryGeneratedColumn('uuid', { name: 'id', primaryKeyConstraintName: 'join_tokens_pkey' })
  id!: string;

  @Column({ name: 'token_hash', type: 'text', select: false })
  tokenHash!: string;

  /** Optional SPIFFE ID the attested agent is also known by (an alias), as in `spire-server token generate -spiffeID`. */
  @Column({ name: 'spiffe_id', type: 'text', nullable: true })
  spiffeId!: string | null;

  @Column({ name: 'created_at', type: 'timestamptz', default: () => 'now()' })
  createdAt!: Date;

  @Column({ name: 'expires_at', type: 'timestamptz' })
  expiresAt!: Date;
}
