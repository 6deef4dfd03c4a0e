import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * Admin surface: bearer admin tokens and join tokens (both stored as SHA-256 hashes only), attested agents
 * (SPIRE's `attested_node_entries` + `node_resolver_map_entries`, selectors kept as JSON) and the audit log.
 */
export class Admin1764000200000 implements MigrationInterface {
  readonly name = 'Admin1764000200000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE admin_tokens (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL,
        token_hash text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz,
        last_used_at timestamptz,
        CONSTRAINT admin_tokens_name_key UNIQUE (name),
        CONSTRAINT admin_tokens_token_hash_key UNIQUE (token_hash)
      )`);
    await queryRunner.query(`
      CREATE TABLE join_tokens (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        token_hash text NOT NULL,
        spiffe_id text,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        CONSTRAINT join_tokens_token_hash_key UNIQUE (token_hash)
      )`);
    await queryRunner.query(`CREATE INDEX join_tokens_expires_at_idx ON join_tokens (expires_at)`);
    await queryRunner.query(`
      CREATE TABLE agents (
        spiffe_id text PRIMARY KEY,
        attestation_type text NOT NULL,
        serial_number text NOT NULL,
        svid_expires_at timestamptz NOT NULL,
        selectors jsonb NOT NULL,
        banned boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_seen_at timestamptz
      )`);
    await queryRunner.query(`CREATE INDEX agents_attestation_type_idx ON agents (attestation_type)`);
    await queryRunner.query(`
      CREATE TABLE audit_log (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        action text NOT NULL,
        target text,
        result text NOT NULL,
        status_code integer NOT NULL
      )`);
    await queryRunner.query(`CREATE INDEX audit_log_at_idx ON audit_log (at)`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE audit_log`);
    await queryRunner.query(`DROP TABLE agents`);
    await queryRunner.query(`DROP TABLE join_tokens`);
    await queryRunner.query(`DROP TABLE admin_tokens`);
  }
}
