import { Check, Column, Entity, PrimaryColumn } from 'typeorm';
import type { StoredJwtAuthority } from './stored-bundle.js';

/** The trust bundle of one trust domain: ours (kept by the key manager) or, later, a federated one. */
@Entity({ name: 'bundles' })
@Check('bundles_x509_authorities_check', "jsonb_typeof(x509_authorities) = 'array'")
@Check('bundles_jwt_authorities_check', "jsonb_typeof(jwt_authorities) = 'array'")
@Check('bundles_refresh_hint_check', 'refresh_hint_seconds IS NULL OR refresh_hint_seconds > 0')
@Check('bundles_sequence_check', 'sequence >= 0')
@Check('bundles_tainted_authorities_check', "jsonb_typeof(tainted_authorities) = 'array'")
export class BundleEntity {
  @PrimaryColumn({ name: 'trust_domain', type: 'text', primaryKeyConstraintName: 'bundles_pkey' })
  trustDomain!: string;

  /** Base64 DER of each X.509 authority (root CA certificate). */
  @Column({ name: 'x509_authorities', type: 'jsonb' })
  x509Authorities!: string[];

  @Column({ name: 'jwt_authorities', type: 'jsonb' })
  jwtAuthorities!: StoredJwtAuthority[];

  /** Authority IDs of the tainted keys among ours (empty for a federated bundle). */
  @Column({ name: 'tainted_authorities', type: 'jsonb', default: () => "'[]'" })
  taintedAuthorities!: string[];

  @Column({ name: 'refresh_hint_seconds', type: 'integer', nullable: true })
  refreshHintSeconds!: number | null;

  /** `spiffe_sequence`: increases by one on every change, never reused; pg hands bigint over as a string. */
  @Column({ name: 'sequence', type: 'bigint' })
  sequence!: string;

  @Column({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
