import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * Upstream authority sigil (a nested server): each X.509 CA key keeps the upstream trust bundle's X.509 authorities
 * it was signed with, which the server publishes in its own bundle while the key is published.
 */
export class UpstreamAuthorities1764000550000 implements MigrationInterface {
  readonly name = 'UpstreamAuthorities1764000550000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE ca_keys ADD COLUMN upstream_authorities jsonb`);
    await queryRunner.query(
      `ALTER TABLE ca_keys ADD CONSTRAINT ca_keys_upstream_authorities_check ` +
        `CHECK (upstream_authorities IS NULL OR upstream_chain IS NOT NULL)`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE ca_keys DROP CONSTRAINT ca_keys_upstream_authorities_check`);
    await queryRunner.query(`ALTER TABLE ca_keys DROP COLUMN upstream_authorities`);
  }
}
