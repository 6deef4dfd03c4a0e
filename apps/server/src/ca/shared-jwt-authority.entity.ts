import { Check, Column, Entity, Index, PrimaryColumn } from 'typeorm';

/** Where a shared JWT authority came from: a downstream server's publication, or the upstream server's bundle. */
export type SharedJwtAuthorityOrigin = 'downstream' | 'upstream';

/**
 * A JWT authority of our trust domain that another Sigil server holds the private key of (SPIRE's `PublishJWTKey`):
 * published in our bundle with our own JWT keys until `not_after`.
 */
@Entity({ name: 'shared_jwt_authorities' })
@Index('shared_jwt_authorities_published_by_idx', ['publishedBy'])
@Check('shared_jwt_authorities_origin_check', "origin IN ('downstream', 'upstream')")
@Check('shared_jwt_authorities_published_by_check', "(origin = 'downstream') = (published_by IS NOT NULL)")
export class SharedJwtAuthorityEntity {
  @PrimaryColumn({ name: 'origin', type: 'text', primaryKeyConstraintName: 'shared_jwt_authorities_pkey' })
  origin!: SharedJwtAuthorityOrigin;

  /** The key's `kid`. */
  @PrimaryColumn({ name: 'kid', type: 'text', primaryKeyConstraintName: 'shared_jwt_authorities_pkey' })
  kid!: string;

  /** The downstream server's SPIFFE ID (origin `downstream`); null for the upstream's keys. */
  @Column({ name: 'published_by', type: 'text', nullable: true })
  publishedBy!: string | null;

  /** SubjectPublicKeyInfo DER. */
  @Column({ name: 'public_key_der', type: 'bytea' })
  publicKeyDer!: Buffer;

  @Column({ name: 'not_after', type: 'timestamptz' })
  notAfter!: Date;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
