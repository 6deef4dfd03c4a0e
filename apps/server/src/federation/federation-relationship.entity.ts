import { Check, Column, Entity, PrimaryColumn } from 'typeorm';

/** A federation relationship: the bundle endpoint of a foreign trust domain and how to authenticate it. */
@Entity({ name: 'federation_relationships' })
@Check(
  'federation_relationships_profile_check',
  "(bundle_endpoint_profile = 'https_web' AND endpoint_spiffe_id IS NULL) OR (bundle_endpoint_profile = 'https_spiffe' AND endpoint_spiffe_id IS NOT NULL)",
)
export class FederationRelationshipEntity {
  @PrimaryColumn({ name: 'trust_domain', type: 'text', primaryKeyConstraintName: 'federation_relationships_pkey' })
  trustDomain!: string;

  @Column({ name: 'bundle_endpoint_url', type: 'text' })
  bundleEndpointUrl!: string;

  @Column({ name: 'bundle_endpoint_profile', type: 'text' })
  bundleEndpointProfile!: 'https_web' | 'https_spiffe';

  @Column({ name: 'endpoint_spiffe_id', type: 'text', nullable: true })
  endpointSpiffeId!: string | null;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: 'timestamptz' })
  updatedAt!: Date;
}
