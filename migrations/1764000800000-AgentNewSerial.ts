import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * The agent's renewed SVID, not used yet (SPIRE's `attested_node_entries.new_serial_number` and `new_expires_at`):
 * renewal records the next SVID here and the current one stays valid, so an agent that lost the renewal (killed or
 * its disk full before it saved it) keeps working with the previous SVID; the first call with the new one promotes it
 * to `serial_number`/`svid_expires_at`. Both null when no renewal is pending.
 */
export class AgentNewSerial1764000800000 implements MigrationInterface {
  readonly name = 'AgentNewSerial1764000800000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN new_serial_number text`);
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN new_svid_expires_at timestamptz`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN new_svid_expires_at`);
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN new_serial_number`);
  }
}
