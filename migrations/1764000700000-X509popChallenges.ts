import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * x509pop challenges in the database (issue 12): a challenge asked from one replica can be answered on any other.
 * Each row is deleted by its first answer (single use) or, once expired, by the cleanup of whichever replica issues
 * challenges. The chain was verified when the challenge was issued; the row keeps what the answer needs: the nonce,
 * the leaf's fingerprint and public key (SPKI DER), and the selectors of the verified chain.
 */
export class X509popChallenges1764000700000 implements MigrationInterface {
  readonly name = 'X509popChallenges1764000700000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE x509pop_challenges (
        id uuid NOT NULL,
        nonce bytea NOT NULL,
        fingerprint text NOT NULL,
        public_key_der bytea NOT NULL,
        selectors jsonb NOT NULL,
        expires_at timestamptz NOT NULL,
        CONSTRAINT x509pop_challenges_pkey PRIMARY KEY (id),
        CONSTRAINT x509pop_challenges_selectors_check CHECK (jsonb_typeof(selectors) = 'array')
      )`);
    await queryRunner.query(`CREATE INDEX x509pop_challenges_expires_at_idx ON x509pop_challenges (expires_at)`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE x509pop_challenges`);
  }
}
