import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * Forced rotation and the revoke rule (issue 14): the authority IDs of our bundle's tainted keys, published with the
 * bundle (its sequence moves when they change) so every agent learns of a taint through its sync; and each agent's
 * last report of the authorities that issued the SVIDs it holds (authority ID -> latest expiry, unix seconds), which
 * `localauthority … revoke` reads on any replica. NULL: the agent has not reported since this migration.
 */
export class TaintedAuthorities1764000620000 implements MigrationInterface {
  readonly name = 'TaintedAuthorities1764000620000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE bundles ADD COLUMN tainted_authorities jsonb NOT NULL DEFAULT '[]'`);
    await queryRunner.query(
      `ALTER TABLE bundles ADD CONSTRAINT bundles_tainted_authorities_check CHECK (jsonb_typeof(tainted_authorities) = 'array')`,
    );
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN svid_issuers jsonb`);
    await queryRunner.query(
      `ALTER TABLE agents ADD CONSTRAINT agents_svid_issuers_check CHECK (svid_issuers IS NULL OR jsonb_typeof(svid_issuers) = 'object')`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN svid_issuers`);
    await queryRunner.query(`ALTER TABLE bundles DROP COLUMN tainted_authorities`);
  }
}
