import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The authority's tables: the CA key journal (`ca_keys`, X.509 CA and JWT signing keys with SPIRE's
 * prepared → active → old states, private keys sealed with the key-encryption key) and the trust bundles
 * (`bundles`, one row per trust domain: our own, and federated ones later, with the persisted `spiffe_sequence`).
 */
export class Authority1764000100000 implements MigrationInterface {
  name = 'Authority1764000100000';

  async up(queryRunner: QueryRunner): Promise<void> {
    // Every insert or update of a journal row sets revision = nextval(...), so replicas detect changes with one query.
    await queryRunner.query(`CREATE SEQUENCE ca_keys_revision_seq AS bigint`);
    await queryRunner.query(`
      CREATE TABLE ca_keys (
        id uuid NOT NULL,
        kind text NOT NULL,
        state text NOT NULL,
        tainted boolean NOT NULL DEFAULT false,
        revoked boolean NOT NULL DEFAULT false,
        key_type text NOT NULL,
        authority_id text NOT NULL,
        encrypted_private_key bytea NOT NULL,
        public_key_der bytea NOT NULL,
        certificate_der bytea,
        upstream_chain jsonb,
        not_before timestamptz NOT NULL,
        not_after timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        activated_at timestamptz,
        revision bigint NOT NULL,
        CONSTRAINT ca_keys_pkey PRIMARY KEY (id),
        CONSTRAINT ca_keys_kind_check CHECK (kind IN ('x509', 'jwt')),
        CONSTRAINT ca_keys_state_check CHECK (state IN ('prepared', 'active', 'old')),
        CONSTRAINT ca_keys_key_type_check CHECK (key_type IN ('ec-p256', 'ec-p384', 'rsa-2048')),
        CONSTRAINT ca_keys_certificate_check CHECK ((kind = 'x509') = (certificate_der IS NOT NULL)),
        CONSTRAINT ca_keys_upstream_chain_check CHECK (upstream_chain IS NULL OR kind = 'x509'),
        CONSTRAINT ca_keys_validity_check CHECK (not_before < not_after),
        CONSTRAINT ca_keys_tainted_check CHECK (NOT tainted OR state = 'old'),
        CONSTRAINT ca_keys_revoked_check CHECK (NOT revoked OR tainted)
      )
    `);
    // At most one active and one prepared key per kind; the authority id (SKI or kid) names one key.
    await queryRunner.query(`CREATE UNIQUE INDEX ca_keys_one_active_idx ON ca_keys (kind) WHERE state = 'active'`);
    await queryRunner.query(`CREATE UNIQUE INDEX ca_keys_one_prepared_idx ON ca_keys (kind) WHERE state = 'prepared'`);
    await queryRunner.query(`CREATE UNIQUE INDEX ca_keys_authority_id_idx ON ca_keys (kind, authority_id)`);

    await queryRunner.query(`
      CREATE TABLE bundles (
        trust_domain text NOT NULL,
        x509_authorities jsonb NOT NULL,
        jwt_authorities jsonb NOT NULL,
        refresh_hint_seconds integer,
        sequence bigint NOT NULL,
        updated_at timestamptz NOT NULL,
        CONSTRAINT bundles_pkey PRIMARY KEY (trust_domain),
        CONSTRAINT bundles_x509_authorities_check CHECK (jsonb_typeof(x509_authorities) = 'array'),
        CONSTRAINT bundles_jwt_authorities_check CHECK (jsonb_typeof(jwt_authorities) = 'array'),
        CONSTRAINT bundles_refresh_hint_check CHECK (refresh_hint_seconds IS NULL OR refresh_hint_seconds > 0),
        CONSTRAINT bundles_sequence_check CHECK (sequence >= 0)
      )
    `);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE bundles`);
    await queryRunner.query(`DROP TABLE ca_keys`);
    await queryRunner.query(`DROP SEQUENCE ca_keys_revision_seq`);
  }
}
