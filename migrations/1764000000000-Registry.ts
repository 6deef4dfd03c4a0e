import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * The registry: registration entries and their selectors, DNS names and federated trust domains (SPIRE sqlstore's
 * `registered_entries`, `selectors`, `dns_names`, federated trust domains), plus the gap-safe change log:
 * `revision_counters` holds one row per counter ('entries'), and every entry change takes the next revision from
 * it with `UPDATE ... RETURNING` and records it in `entry_events`. The row lock serialises revision allocation, so
 * revisions commit in order and a reader never sees revision N+1 while N is still uncommitted.
 *
 * Kept to SQL that PostgreSQL 15 and PGlite (PostgreSQL 18) both accept; `gen_random_uuid()` is built in since 13.
 */
export class Registry1764000000000 implements MigrationInterface {
  readonly name = 'Registry1764000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "revision_counters" (
        "name" varchar(64) NOT NULL,
        "revision" bigint NOT NULL,
        "pruned_through" bigint NOT NULL,
        CONSTRAINT "revision_counters_pkey" PRIMARY KEY ("name")
      )`);
    await queryRunner.query(
      `INSERT INTO "revision_counters" ("name", "revision", "pruned_through") VALUES ('entries', 0, 0)`,
    );

    await queryRunner.query(`
      CREATE TABLE "registered_entries" (
        "id" uuid NOT NULL DEFAULT gen_random_uuid(),
        "spiffe_id" varchar(2048) NOT NULL,
        "parent_id" varchar(2048) NOT NULL,
        "x509_svid_ttl" integer NOT NULL,
        "jwt_svid_ttl" integer NOT NULL,
        "admin" boolean NOT NULL,
        "downstream" boolean NOT NULL,
        "hint" varchar(1024) NOT NULL,
        "expires_at" timestamptz,
        "revision_number" bigint NOT NULL,
        "created_at" timestamptz NOT NULL,
        "updated_at" timestamptz NOT NULL,
        CONSTRAINT "registered_entries_pkey" PRIMARY KEY ("id")
      )`);
    await queryRunner.query(`CREATE INDEX "registered_entries_spiffe_id_idx" ON "registered_entries" ("spiffe_id")`);
    await queryRunner.query(`CREATE INDEX "registered_entries_parent_id_idx" ON "registered_entries" ("parent_id")`);
    await queryRunner.query(`CREATE INDEX "registered_entries_expires_at_idx" ON "registered_entries" ("expires_at")`);

    await queryRunner.query(`
      CREATE TABLE "selectors" (
        "entry_id" uuid NOT NULL,
        "type" varchar(64) NOT NULL,
        "value" varchar(1024) NOT NULL,
        CONSTRAINT "selectors_pkey" PRIMARY KEY ("entry_id", "type", "value"),
        CONSTRAINT "selectors_entry_id_fkey" FOREIGN KEY ("entry_id")
          REFERENCES "registered_entries" ("id") ON DELETE CASCADE
      )`);
    await queryRunner.query(`CREATE INDEX "selectors_type_value_idx" ON "selectors" ("type", "value")`);

    await queryRunner.query(`
      CREATE TABLE "dns_names" (
        "entry_id" uuid NOT NULL,
        "value" varchar(253) NOT NULL,
        CONSTRAINT "dns_names_pkey" PRIMARY KEY ("entry_id", "value"),
        CONSTRAINT "dns_names_entry_id_fkey" FOREIGN KEY ("entry_id")
          REFERENCES "registered_entries" ("id") ON DELETE CASCADE
      )`);

    await queryRunner.query(`
      CREATE TABLE "federated_trust_domains" (
        "entry_id" uuid NOT NULL,
        "trust_domain" varchar(255) NOT NULL,
        CONSTRAINT "federated_trust_domains_pkey" PRIMARY KEY ("entry_id", "trust_domain"),
        CONSTRAINT "federated_trust_domains_entry_id_fkey" FOREIGN KEY ("entry_id")
          REFERENCES "registered_entries" ("id") ON DELETE CASCADE
      )`);
    await queryRunner.query(
      `CREATE INDEX "federated_trust_domains_trust_domain_idx" ON "federated_trust_domains" ("trust_domain")`,
    );

    // No foreign key to registered_entries: the events of deleted entries outlive them.
    await queryRunner.query(`
      CREATE TABLE "entry_events" (
        "revision" bigint NOT NULL,
        "entry_id" uuid NOT NULL,
        "op" varchar(16) NOT NULL,
        "changed_at" timestamptz NOT NULL,
        CONSTRAINT "entry_events_pkey" PRIMARY KEY ("revision"),
        CONSTRAINT "entry_events_op_check" CHECK ("op" IN ('created', 'updated', 'deleted'))
      )`);
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "entry_events"`);
    await queryRunner.query(`DROP TABLE "federated_trust_domains"`);
    await queryRunner.query(`DROP TABLE "dns_names"`);
    await queryRunner.query(`DROP TABLE "selectors"`);
    await queryRunner.query(`DROP TABLE "registered_entries"`);
    await queryRunner.query(`DROP TABLE "revision_counters"`);
  }
}
