import {
  Column,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  OneToMany,
  PrimaryColumn,
  PrimaryGeneratedColumn,
  type ValueTransformer,
} from 'typeorm';

/** `bigint` columns come back from `pg` as strings; revisions stay far below 2^53, so they are plain numbers. */
export const BIGINT_AS_NUMBER: ValueTransformer = {
  to: (value: number | null | undefined) => value,
  from: (value: string | null) => (value === null ? null : Number(value)),
};

/** A registration entry (SPIRE `registered_entries`): who a workload is and which agent may issue it. */
@Entity({ name: 'registered_entries' })
@Index('registered_entries_spiffe_id_idx', ['spiffeId'])
@Index('registered_entries_spiffe_id_parent_id_idx', ['spiffeId', 'parentId'])
@Index('registered_entries_parent_id_idx', ['parentId'])
@Index('registered_entries_expires_at_idx', ['expiresAt'])
export class EntryEntity {
  @PrimaryGeneratedColumn('uuid', { name: 'id', primaryKeyConstraintName: 'registered_entries_pkey' })
  id!: string;

  @Column({ name: 'spiffe_id', type: 'varchar', length: 2048 })
  spiffeId!: string;

  @Column({ name: 'parent_id', type: 'varchar', length: 2048 })
  parentId!: string;

  /** Seconds; 0 means the server's default X.509-SVID TTL. */
  @Column({ name: 'x509_svid_ttl', type: 'integer' })
  x509SvidTtl!: number;

  /** Seconds; 0 means the server's default JWT-SVID TTL. */
  @Column({ name: 'jwt_svid_ttl', type: 'integer' })
  jwtSvidTtl!: number;

  @Column({ name: 'admin', type: 'boolean' })
  admin!: boolean;

  @Column({ name: 'downstream', type: 'boolean' })
  downstream!: boolean;

  @Column({ name: 'hint', type: 'varchar', length: 1024 })
  hint!: string;

  @Column({ name: 'expires_at', type: 'timestamptz', nullable: true })
  expiresAt!: Date | null;

  /** The registry revision of this entry's last change. */
  @Column({ name: 'revision_number', type: 'bigint', transformer: BIGINT_AS_NUMBER })
  revisionNumber!: number;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;

  @OneToMany(() => SelectorEntity, (selector) => selector.entry)
  selectors!: SelectorEntity[];

  @OneToMany(() => DnsNameEntity, (dnsName) => dnsName.entry)
  dnsNames!: DnsNameEntity[];

  @OneToMany(() => FederatedTrustDomainEntity, (federated) => federated.entry)
  federatesWith!: FederatedTrustDomainEntity[];
}

/** One `type:value` selector of an entry (SPIRE `selectors`). */
@Entity({ name: 'selectors' })
@Index('selectors_type_value_idx', ['type', 'value'])
export class SelectorEntity {
  @PrimaryColumn({ name: 'entry_id', type: 'uuid', primaryKeyConstraintName: 'selectors_pkey' })
  entryId!: string;

  @PrimaryColumn({ name: 'type', type: 'varchar', length: 64, primaryKeyConstraintName: 'selectors_pkey' })
  type!: string;

  @PrimaryColumn({ name: 'value', type: 'varchar', length: 1024, primaryKeyConstraintName: 'selectors_pkey' })
  value!: string;

  @ManyToOne(() => EntryEntity, (entry) => entry.selectors, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'entry_id', foreignKeyConstraintName: 'selectors_entry_id_fkey' })
  entry?: EntryEntity;
}

/** One DNS name an entry's X509-SVIDs carry as a SAN (SPIRE `dns_names`). */
@Entity({ name: 'dns_names' })
export class DnsNameEntity {
  @PrimaryColumn({ name: 'entry_id', type: 'uuid', primaryKeyConstraintName: 'dns_names_pkey' })
  entryId!: string;

  @PrimaryColumn({ name: 'value', type: 'varchar', length: 253, primaryKeyConstraintName: 'dns_names_pkey' })
  value!: string;

  @ManyToOne(() => EntryEntity, (entry) => entry.dnsNames, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'entry_id', foreignKeyConstraintName: 'dns_names_entry_id_fkey' })
  entry?: EntryEntity;
}

/** A foreign trust domain whose bundle the entry's workloads receive. */
@Entity({ name: 'federated_trust_domains' })
@Index('federated_trust_domains_trust_domain_idx', ['trustDomain'])
export class FederatedTrustDomainEntity {
  @PrimaryColumn({ name: 'entry_id', type: 'uuid', primaryKeyConstraintName: 'federated_trust_domains_pkey' })
  entryId!: string;

  @PrimaryColumn({
    name: 'trust_domain',
    type: 'varchar',
    length: 255,
    primaryKeyConstraintName: 'federated_trust_domains_pkey',
  })
  trustDomain!: string;

  @ManyToOne(() => EntryEntity, (entry) => entry.federatesWith, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'entry_id', foreignKeyConstraintName: 'federated_trust_domains_entry_id_fkey' })
  entry?: EntryEntity;
}
