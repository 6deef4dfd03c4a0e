import { type MigrationInterface, type QueryRunner } from 'typeorm';

/**
 * An entry index on (spiffe_id, parent_id): a batch's duplicate check looks every candidate up by both, and with the
 * parent in the index a look-up reads only the entries that share both, instead of intersecting with every entry
 * under the same parent (the planner's choice on a table it has no statistics for yet, such as one just bulk loaded,
 * or any table of the embedded database). The index on spiffe_id alone, now redundant, is left for a later release to
 * drop: dropping it takes an ACCESS EXCLUSIVE lock, which waits behind a running reader (a replica's index load) while
 * every reader queued after it waits too. Building this one blocks entry writes (not reads) for ~1.2 s per 1,000,000
 * entries.
 */
export class EntryIdPairIndex1764001100000 implements MigrationInterface {
  readonly name = 'EntryIdPairIndex1764001100000';

  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(
      `CREATE INDEX "registered_entries_spiffe_id_parent_id_idx" ON "registered_entries" ("spiffe_id", "parent_id")`,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "registered_entries_spiffe_id_parent_id_idx"`);
  }
}
