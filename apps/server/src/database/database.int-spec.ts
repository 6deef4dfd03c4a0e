import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
import { ENTITIES, MIGRATIONS, runMigrations } from './data-source.js';
import { EMBEDDED_SHARED_BUFFERS } from './embedded-postgres.js';

describe('database schema', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    await db?.close();
  });

  it('has every migration applied', async () => {
    const rows: { name: string }[] = await db.dataSource.query('SELECT name FROM migrations ORDER BY id');
    expect(rows.map((row) => row.name)).toEqual(MIGRATIONS.map((migration) => migration.name));
    expect(await db.dataSource.showMigrations()).toBe(false);
  });

  it('matches the entities: the schema builder has no pending SQL', async () => {
    const sql = await db.dataSource.driver.createSchemaBuilder().log();
    expect(sql.upQueries.map((query) => query.query)).toEqual([]);
    expect(db.dataSource.entityMetadatas.map((metadata) => metadata.target)).toEqual(expect.arrayContaining(ENTITIES));
  });

  it('runs migrations again as a no-op', async () => {
    expect(await runMigrations(db.dataSource)).toEqual([]);
  });

  // Without the migration lock, replicas migrating an empty database together all see every migration pending and
  // collide (duplicate tables, rows of the migrations table, pg_type entries).
  it.skipIf(isEmbeddedRun())(
    `migrates an empty database exactly once from four pools at once (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      await db.dataSource.query('DROP SCHEMA public CASCADE');
      await db.dataSource.query('CREATE SCHEMA public');
      const pools = [db.dataSource];
      for (let i = 0; i < 3; i++) pools.push(await db.connectAnother({ poolSize: 1 }));
      const results = await Promise.allSettled(pools.map((pool) => runMigrations(pool)));
      expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
      const applied = results.map((result) => (result.status === 'fulfilled' ? result.value : []));
      expect(applied.filter((names) => names.length > 0)).toEqual([MIGRATIONS.map((migration) => migration.name)]);
      const rows: { name: string }[] = await db.dataSource.query('SELECT name FROM migrations ORDER BY id');
      expect(rows.map((row) => row.name)).toEqual(MIGRATIONS.map((migration) => migration.name));
      const sql = await db.dataSource.driver.createSchemaBuilder().log();
      expect(sql.upQueries.map((query) => query.query)).toEqual([]);
    },
  );

  it('generates entry ids in the database', async () => {
    const rows: { id: string }[] = await db.dataSource.query('SELECT gen_random_uuid()::text AS id');
    expect(rows[0]?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

// Runs on both passes: it opens its own embedded database in a scratch directory, whatever DATABASE_URL says.
describe('embedded database', () => {
  let scratch: string;

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-embedded-'));
  });

  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('keeps its data across a clean stop and restart, and refuses a second opener', async () => {
    const { Database } = await import('./database.js');
    const dataDir = join(scratch, 'server');
    const first = await Database.open({ dataDir });
    expect(first.kind).toBe('embedded');
    // initdb ran in a child process (first start); the server's PGlite runs with Sigil's shared_buffers.
    expect(await first.dataSource.query('SHOW shared_buffers')).toEqual([{ shared_buffers: EMBEDDED_SHARED_BUFFERS }]);
    await expect(Database.open({ dataDir })).rejects.toThrow(/embedded database .* is in use by process \d+/);
    await first.dataSource.query(
      `UPDATE revision_counters SET revision = revision + 41, pruned_through = 7 WHERE name = 'entries'`,
    );
    await first.close();

    const second = await Database.open({ dataDir });
    try {
      const rows: { revision: string; pruned_through: string }[] = await second.dataSource.query(
        `SELECT revision, pruned_through FROM revision_counters WHERE name = 'entries'`,
      );
      expect(rows).toEqual([{ revision: '41', pruned_through: '7' }]);
      expect(await second.dataSource.showMigrations()).toBe(false);
      expect(await second.dataSource.query('SHOW shared_buffers')).toEqual([
        { shared_buffers: EMBEDDED_SHARED_BUFFERS },
      ]);
    } finally {
      await second.close();
    }
  }, 180_000); // a first start: initdb (in a child process) takes ~30-60 s on a loaded 2-core host
});
