import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * Federation relationships (SPIRE's `federated_trust_domains`): for each foreign trust domain, where its bundle
 * endpoint is and how it authenticates (`https_web`, or `https_spiffe` with the endpoint's SPIFFE ID).
 */
export class FederationRelationships1764000400000 implements MigrationInterface {
  readonly name = 'FederationRelationships1764000400000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE TABLE federation_relationships (
      trust_domain text NOT NULL,
      bundle_endpoint_url text NOT NULL,
      bundle_endpoint_profile text NOT NULL,
      endpoint_spiffe_id text,
      created_at timestamptz NOT NULL,
      updated_at timestamptz NOT NULL,
      CONSTRAINT federation_relationships_pkey PRIMARY KEY (trust_domain),
      CONSTRAINT federation_relationships_profile_check CHECK (
        (bundle_endpoint_profile = 'https_web' AND endpoint_spiffe_id IS NULL)
        OR (bundle_endpoint_profile = 'https_spiffe' AND endpoint_spiffe_id IS NOT NULL)
      )
    )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE federation_relationships`);
  }
}
