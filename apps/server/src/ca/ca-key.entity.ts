import { Check, Column, Entity, Index, PrimaryColumn } from 'typeorm';
import type { CaKeyType } from '../config.js';
import type { AuthorityKind, CaKeyState } from './ca-key.js';

/** One row of the CA key journal. Its private key is sealed with the key-encryption key. */
@Entity({ name: 'ca_keys' })
@Index('ca_keys_one_active_idx', ['kind'], { unique: true, where: "state = 'active'" })
@Index('ca_keys_one_prepared_idx', ['kind'], { unique: true, where: "state = 'prepared'" })
@Index('ca_keys_authority_id_idx', ['kind', 'authorityId'], { unique: true })
@Check('ca_keys_kind_check', "kind IN ('x509', 'jwt')")
@Check('ca_keys_state_check', "state IN ('prepared', 'active', 'old')")
@Check('ca_keys_key_type_check', "key_type IN ('ec-p256', 'ec-p384', 'rsa-2048')")
@Check('ca_keys_certificate_check', "(kind = 'x509') = (certificate_der IS NOT NULL)")
@Check('ca_keys_upstream_chain_check', "upstream_chain IS NULL OR kind = 'x509'")
@Check('ca_keys_upstream_authorities_check', 'upstream_authorities IS NULL OR upstream_chain IS NOT NULL')
@Check('ca_keys_validity_check', 'not_before < not_after')
@Check('ca_keys_tainted_check', "NOT tainted OR state = 'old'")
@Check('ca_keys_revoked_check', 'NOT revoked OR tainted')
export class CaKeyEntity {
  @PrimaryColumn({ name: 'id', type: 'uuid', primaryKeyConstraintName: 'ca_keys_pkey' })
  id!: string;

  @Column({ name: 'kind', type: 'text' })
  kind!: AuthorityKind;

  @Column({ name: 'state', type: 'text' })
  state!: CaKeyState;

  @Column({ name: 'tainted', type: 'boolean', default: false })
  tainted!: boolean;

  @Column({ name: 'revoked', type: 'boolean', default: false })
  revoked!: boolean;

  @Column({ name: 'key_type', type: 'text' })
  keyType!: CaKeyType;

  /** SPIRE's authority id: the CA certificate's subject key identifier (hex) or the JWT key's `kid`. */
  @Column({ name: 'authority_id', type: 'text' })
  authorityId!: string;

  /** PKCS#8 DER sealed by the key-encryption key, bound to `ca_keys/<id>/<kind>`. */
  @Column({ name: 'encrypted_private_key', type: 'bytea', select: false })
  encryptedPrivateKey!: Buffer;

  /** SubjectPublicKeyInfo DER. */
  @Column({ name: 'public_key_der', type: 'bytea' })
  publicKeyDer!: Buffer;

  /** The CA certificate (X.509 keys only): self-signed, or an intermediate signed by the upstream CA. */
  @Column({ name: 'certificate_der', type: 'bytea', nullable: true })
  certificateDer!: Buffer | null;

  /** Upstream mode: base64 DER of the upstream certificates above ours, the upstream root last. */
  @Column({ name: 'upstream_chain', type: 'jsonb', nullable: true })
  upstreamChain!: string[] | null;

  /** Upstream authority sigil: base64 DER of the upstream bundle's X.509 authorities, as last followed. */
  @Column({ name: 'upstream_authorities', type: 'jsonb', nullable: true })
  upstreamAuthorities!: string[] | null;

  @Column({ name: 'not_before', type: 'timestamptz' })
  notBefore!: Date;

  @Column({ name: 'not_after', type: 'timestamptz' })
  notAfter!: Date;

  @Column({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'activated_at', type: 'timestamptz', nullable: true })
  activatedAt!: Date | null;

  /** Taken from `ca_keys_revision_seq` on every insert and update; pg hands bigint over as a string. */
  @Column({ name: 'revision', type: 'bigint' })
  revision!: string;
}
