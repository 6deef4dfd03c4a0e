import { Check, Column, Entity, Index, PrimaryColumn } from 'typeorm';
import type { AgentSelector } from '../../agents/agent.js';

/**
 * An outstanding x509pop challenge (migration X509popChallenges1764000700000): answerable once, on any replica,
 * until `expiresAt`.
 */
@Entity({ name: 'x509pop_challenges' })
@Check('x509pop_challenges_selectors_check', "jsonb_typeof(selectors) = 'array'")
@Index('x509pop_challenges_expires_at_idx', ['expiresAt'])
export class X509popChallengeEntity {
  @PrimaryColumn({ name: 'id', type: 'uuid', primaryKeyConstraintName: 'x509pop_challenges_pkey' })
  id!: string;

  @Column({ name: 'nonce', type: 'bytea' })
  nonce!: Buffer;

  /** Lowercase hex SHA-1 of the leaf certificate's DER. */
  @Column({ name: 'fingerprint', type: 'text' })
  fingerprint!: string;

  /** The leaf's SubjectPublicKeyInfo, DER: the key the answer must sign the nonce with. */
  @Column({ name: 'public_key_der', type: 'bytea' })
  publicKeyDer!: Buffer;

  /** The selectors of the chain verified when the challenge was issued. */
  @Column({ name: 'selectors', type: 'jsonb' })
  selectors!: AgentSelector[];

  @Column({ name: 'expires_at', type: 'timestamptz' })
  expiresAt!: Date;
}
