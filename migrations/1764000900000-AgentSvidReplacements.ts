import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * How many times the agent replaced its renewed SVID while it was still unused (`new_serial_number` renewed again from
 * the current serial), and when the window of that count began: the server refuses more than
 * `UNUSED_SVID_REPLACEMENTS.max` in a window (agents/agent.ts). Re-attestation resets both.
 */
export class AgentSvidReplacements1764000900000 implements MigrationInterface {
  readonly name = 'AgentSvidReplacements1764000900000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN new_serial_replacements integer NOT NULL DEFAULT 0`);
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN new_serial_replacements_since timestamptz`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN new_serial_replacements_since`);
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN new_serial_replacements`);
  }
}
