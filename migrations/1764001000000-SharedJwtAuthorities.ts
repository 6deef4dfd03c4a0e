import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * JWT authorities shared between nested servers of one trust domain (SPIRE's `PublishJWTKey`): on a top server, the
 * public JWT keys its downstream (nested) servers published (`origin = 'downstream'`, `published_by` the caller's
 * SPIFFE ID); on a nested server, the top server's JWT authorities as last followed (`origin = 'upstream'`). Both are
 * published in the trust bundle with the server's own keys until `not_after`.
 */
export class SharedJwtAuthorities1764001000000 implements MigrationInterface {
  readonly name = 'SharedJwtAuthorities1764001000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE shared_jwt_authorities (
        origin text NOT NULL,
        kid text NOT NULL,
        published_by text,
        public_key_der bytea NOT NULL,
        not_after timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        CONSTRAINT shared_jwt_authorities_pkey PRIMARY KEY (origin, kid),
        CONSTRAINT shared_jwt_authorities_origin_check CHECK (origin IN ('downstream', 'upstream')),
        CONSTRAINT shared_jwt_authorities_published_by_check CHECK ((origin = 'downstream') = (published_by IS NOT NULL))
      )`);
    await queryRunner.query(
      `CREATE INDEX shared_jwt_authorities_published_by_idx ON shared_jwt_authorities (published_by)`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE shared_jwt_authorities`);
  }
}
