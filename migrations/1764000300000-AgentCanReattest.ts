import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * Whether an attested agent may attest again under the same ID (SPIRE's `attested_node_entries.can_reattest`), kept so
 * that `agent purge` and the pruning of long-expired agents only remove agents that can come back by attesting again,
 * and an index on the agent SVID's expiry for those queries. Agents recorded before this migration: x509pop and
 * k8s_psat re-attest, join_token (single use) and any other attestor are taken as not re-attesting.
 */
export class AgentCanReattest1764000300000 implements MigrationInterface {
  readonly name = 'AgentCanReattest1764000300000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`ALTER TABLE agents ADD COLUMN can_reattest boolean NOT NULL DEFAULT false`);
    await queryRunner.query(`UPDATE agents SET can_reattest = true WHERE attestation_type IN ('x509pop', 'k8s_psat')`);
    await queryRunner.query(`CREATE INDEX agents_svid_expires_at_idx ON agents (svid_expires_at)`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX agents_svid_expires_at_idx`);
    await queryRunner.query(`ALTER TABLE agents DROP COLUMN can_reattest`);
  }
}
