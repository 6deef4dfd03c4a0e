import { randomBytes } from 'node:crypto';
import { cp, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { Logger } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { inject } from 'vitest';
import { createDataSource, openDataSource } from '../../apps/server/src/database/data-source.js';
import { Database, type DatabaseKind } from '../../apps/server/src/database/database.js';
import { startEmbeddedPostgres } from '../../apps/server/src/database/embedded-postgres.js';
import { POSTGRES_TEMPLATE_MARKER, templateDatabaseName, testDatabasePrefix, type TestRun } from './global-setup.js';

/** An isolated, migrated database for one test file. */
export interface TestDatabase {
  readonly kind: DatabaseKind;
  /**
   * Connection URL (PostgreSQL: for a second pool, a LISTEN client, a second "replica"). On the embedded database it
   * is the private socket of the server's own PGlite: never hand it to a server as `--database-url`, which would run
   * PostgreSQL mode against PGlite, a mode production never uses (start that server on {@link prepareEmbeddedDataDir}).
   */
  readonly url: string;
  /**
   * Initialised DataSource with every migration applied. Embedded: the one opened by the server's own
   * `Database.open` on a copied data dir (one pooled connection, as production); PostgreSQL: a pool of `poolSize`.
   */
  readonly dataSource: DataSource;
  /**
   * Another initialised DataSource on the same database (its own pool), closed with the database. On PostgreSQL it
   * stands for another replica or another process. The embedded database has no other process: a second client of
   * PGlite shares its one backend (no real concurrency, and concurrent clients corrupt each other's portals), so
   * there the caller must say why it needs one in `embeddedBecause`, and use it only while the other pool is idle.
   */
  connectAnother(options?: ConnectAnotherOptions): Promise<DataSource>;
  /** Closes every DataSource and removes the database (PostgreSQL: dropped; embedded: stopped and deleted). */
  close(): Promise<void>;
}

export interface UseTestDatabaseOptions {
  /** Pool size of `dataSource` on PostgreSQL (default 4). The embedded database always gets the server's one. */
  poolSize?: number;
}

export interface ConnectAnotherOptions {
  /** Pool size (default 2; 1 on the embedded database). */
  poolSize?: number;
  /** Required on the embedded database: why this test needs a second client of PGlite's single backend. */
  embeddedBecause?: string;
}

const DEFAULT_TEST_POOL_SIZE = 4;
const TEMPLATE_WAIT_MS = 180_000;

/** The reason to give when a test cannot fail on the embedded database, for `it.skipIf(db.kind === 'embedded')`. */
export const EMBEDDED_SERIAL_REASON =
  'skipped on embedded: PGlite runs one transaction at a time, so the race cannot happen';

/** True when this run tests the embedded database (no `DATABASE_URL`); usable while tests are being collected. */
export function isEmbeddedRun(): boolean {
  return !inject('sigilTestRun').databaseUrl;
}

/**
 * Gives the calling test file its own migrated database: a copy of this run's template database when
 * `DATABASE_URL` is set (`CREATE DATABASE ... TEMPLATE`), otherwise the embedded database exactly as the server opens
 * it (`Database.open` on a data dir prepared by {@link prepareEmbeddedDataDir}: PGlite behind pglite-socket, one
 * pooled connection). Call it in `beforeAll` and `close()` it in `afterAll`.
 */
export async function useTestDatabase(options: UseTestDatabaseOptions = {}): Promise<TestDatabase> {
  const run = inject('sigilTestRun');
  return run.databaseUrl
    ? usePostgres(run, run.databaseUrl, options.poolSize ?? DEFAULT_TEST_POOL_SIZE)
    : useEmbedded(run);
}

async function usePostgres(run: TestRun, adminUrl: string, poolSize: number): Promise<TestDatabase> {
  const template = templateDatabaseName(run.runId);
  await buildOnce(run.runDir, 'postgres-template', async () => {
    await dropDatabasesOfDeadRuns(adminUrl);
    await withAdminClient(adminUrl, (client) => client.query(`CREATE DATABASE ${pg.escapeIdentifier(template)}`));
    await writeFile(join(run.runDir, POSTGRES_TEMPLATE_MARKER), template);
    const dataSource = await openDataSource({ url: withDatabase(adminUrl, template), poolSize: 1 });
    await dataSource.destroy();
  });
  const name = `${testDatabasePrefix(run.runId)}${randomBytes(4).toString('hex')}`;
  await withAdminClient(adminUrl, (client) =>
    client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)} TEMPLATE ${pg.escapeIdentifier(template)}`),
  );
  const url = withDatabase(adminUrl, name);
  const drop = async () => {
    await withAdminClient(adminUrl, (client) =>
      client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
    );
  };
  let dataSource: DataSource;
  try {
    dataSource = await connect(url, poolSize);
  } catch (error) {
    await drop();
    throw error;
  }
  return track('postgres', url, dataSource, drop);
}

/**
 * Prepares `<dataDir>/db` as a copy of this run's migrated embedded database, so a server started on `dataDir`
 * without a database URL runs on its own embedded database (as in production: PGlite in-process, with the
 * in-process change notifier) without paying for initdb.
 */
export async function prepareEmbeddedDataDir(dataDir: string): Promise<void> {
  const templateDir = await embeddedTemplate(inject('sigilTestRun'));
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await cp(templateDir, join(dataDir, 'db'), { recursive: true });
}

/** This run's initdb'd and migrated embedded data directory, built by the first caller. */
async function embeddedTemplate(run: TestRun): Promise<string> {
  const templateDir = join(run.runDir, 'embedded-template', 'db');
  await buildOnce(run.runDir, 'embedded-template', async () => {
    // Like every start of the embedded database in a test process, this sets EMBEDDED_WASM_FLAGS on the process: any
    // WebAssembly compiled later in it (only PGlite's, in these tests) stays on V8's baseline compiler.
    const embedded = await startEmbeddedPostgres(templateDir, { maxConnections: 2 });
    try {
      const dataSource = await openDataSource({ url: embedded.url, poolSize: 1 });
      await dataSource.destroy();
    } finally {
      await embedded.stop();
    }
  });
  return templateDir;
}

async function useEmbedded(run: TestRun): Promise<TestDatabase> {
  const dataDir = join(run.runDir, `embedded-${process.pid}-${randomBytes(4).toString('hex')}`);
  // Reopening a copied data directory takes ~0.35 s where initdb takes seconds.
  await prepareEmbeddedDataDir(dataDir);
  let database: Database;
  try {
    database = await Database.open({ dataDir }, QUIET_LOGGER);
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return track('embedded', database.url, database.dataSource, async () => {
    try {
      await database.close();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
}

/** Database.open warns on every start that PGlite never fsyncs; once per test file is noise. */
class QuietLogger extends Logger {
  override log(): void {}
  override warn(): void {}
}
const QUIET_LOGGER = new QuietLogger('Database');

async function connect(url: string, poolSize: number): Promise<DataSource> {
  const dataSource = createDataSource({ url, poolSize, applicationName: 'sigil-test' });
  await dataSource.initialize();
  return dataSource;
}

function track(kind: DatabaseKind, url: string, dataSource: DataSource, dispose: () => Promise<void>): TestDatabase {
  const others: DataSource[] = [];
  let closing: Promise<void> | undefined;
  return {
    kind,
    url,
    dataSource,
    connectAnother: async ({ poolSize, embeddedBecause } = {}) => {
      if (kind === 'embedded' && !embeddedBecause?.trim()) {
        throw new Error(
          'connectAnother on the embedded database: the server opens one connection there; say why this test ' +
            'needs a second one (embeddedBecause) or run it on PostgreSQL only',
        );
      }
      const other = await connect(url, poolSize ?? (kind === 'embedded' ? 1 : 2));
      others.push(other);
      return other;
    },
    close: () => {
      closing ??= (async () => {
        try {
          for (const each of others) if (each.isInitialized) await each.destroy();
          // Embedded: Database.close destroys its own DataSource before stopping PGlite.
          if (kind === 'postgres' && dataSource.isInitialized) await dataSource.destroy();
        } finally {
          await dispose();
        }
      })();
      return closing;
    },
  };
}

/**
 * Runs `build` once per run across every worker process: the first caller takes `<name>.lock` and builds, the
 * others wait for `<name>.done`. A failed build releases the lock so the next caller tries again.
 */
async function buildOnce(runDir: string, name: string, build: () => Promise<void>): Promise<void> {
  const done = join(runDir, `${name}.done`);
  const lock = join(runDir, `${name}.lock`);
  const deadline = Date.now() + TEMPLATE_WAIT_MS;
  while (!(await exists(done))) {
    let acquired = false;
    try {
      await (await open(lock, 'wx')).close();
      acquired = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    if (acquired) {
      try {
        if (!(await exists(done))) {
          await build();
          await writeFile(done, '');
        }
      } finally {
        await rm(lock, { force: true });
      }
      return;
    }
    if (Date.now() > deadline) throw new Error(`test database template ${name} was not built within the time limit`);
    await sleep(100);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function withAdminClient<T>(adminUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, application_name: 'sigil-test' });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Drops test databases whose run (named by its main process id) no longer exists on this host. */
async function dropDatabasesOfDeadRuns(adminUrl: string): Promise<void> {
  await withAdminClient(adminUrl, async (client) => {
    const { rows } = await client.query<{ datname: string }>(
      String.raw`SELECT datname FROM pg_database WHERE datname ~ '^sigil_(tpl|t)_[0-9]+_'`,
    );
    const dead = rows.filter(({ datname }) => !isRunning(Number(/^sigil_(?:tpl|t)_(\d+)_/.exec(datname)?.[1])));
    dead.sort((a, b) => Number(a.datname.startsWith('sigil_tpl_')) - Number(b.datname.startsWith('sigil_tpl_')));
    for (const { datname } of dead) {
      // A database still in use is left alone: its run may live in another process namespace.
      await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)}`).catch(() => undefined);
    }
  });
}

function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
