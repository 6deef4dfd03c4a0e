import { randomBytes } from 'node:crypto';
import { cp, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { inject } from 'vitest';
import { createDataSource, openDataSource } from '../../apps/server/src/database/data-source.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../apps/server/src/database/embedded-postgres.js';
import type { DatabaseKind } from '../../apps/server/src/database/database.js';
import { POSTGRES_TEMPLATE_MARKER, templateDatabaseName, testDatabasePrefix, type TestRun } from './global-setup.js';

/** An isolated, migrated database for one test file. */
export interface TestDatabase {
  readonly kind: DatabaseKind;
  /** Connection URL (for a second pool, a LISTEN client, a second "replica"). */
  readonly url: string;
  /** Initialised DataSource with every migration applied. */
  readonly dataSource: DataSource;
  /** Another initialised DataSource on the same database (its own pool), closed with the database. */
  connectAnother(poolSize?: number): Promise<DataSource>;
  /** Closes every DataSource and removes the database (PostgreSQL: dropped; embedded: stopped and deleted). */
  close(): Promise<void>;
}

export interface UseTestDatabaseOptions {
  /** Pool size of `dataSource` (default 4). */
  poolSize?: number;
}

/** The embedded socket server of a test file accepts this many connections; keep the sum of pools below it. */
export const TEST_EMBEDDED_MAX_CONNECTIONS = 16;
const DEFAULT_TEST_POOL_SIZE = 4;
const TEMPLATE_WAIT_MS = 180_000;

/**
 * Gives the calling test file its own migrated database: a copy of this run's template database when
 * `DATABASE_URL` is set (`CREATE DATABASE ... TEMPLATE`), otherwise a copy of this run's initdb'd and migrated
 * embedded data directory served by its own PGlite. Call it in `beforeAll` and `close()` it in `afterAll`.
 */
export async function useTestDatabase(options: UseTestDatabaseOptions = {}): Promise<TestDatabase> {
  const run = inject('sigilTestRun');
  const poolSize = options.poolSize ?? DEFAULT_TEST_POOL_SIZE;
  return run.databaseUrl ? usePostgres(run, run.databaseUrl, poolSize) : useEmbedded(run, poolSize);
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
  return track('postgres', url, poolSize, async () => {
    await withAdminClient(adminUrl, (client) =>
      client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
    );
  });
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

async function useEmbedded(run: TestRun, poolSize: number): Promise<TestDatabase> {
  const templateDir = await embeddedTemplate(run);
  const fileDir = join(run.runDir, `embedded-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(fileDir, { mode: 0o700 });
  // Reopening a copied data directory takes ~0.35 s where initdb takes seconds.
  await cp(templateDir, join(fileDir, 'db'), { recursive: true });
  let embedded: EmbeddedPostgres;
  try {
    embedded = await startEmbeddedPostgres(join(fileDir, 'db'), { maxConnections: TEST_EMBEDDED_MAX_CONNECTIONS });
  } catch (error) {
    await rm(fileDir, { recursive: true, force: true });
    throw error;
  }
  return track('embedded', embedded.url, poolSize, async () => {
    try {
      await embedded.stop();
    } finally {
      await rm(fileDir, { recursive: true, force: true });
    }
  });
}

async function track(
  kind: DatabaseKind,
  url: string,
  poolSize: number,
  dispose: () => Promise<void>,
): Promise<TestDatabase> {
  const dataSources: DataSource[] = [];
  const connect = async (size: number): Promise<DataSource> => {
    const dataSource = createDataSource({ url, poolSize: size, applicationName: 'sigil-test' });
    await dataSource.initialize();
    dataSources.push(dataSource);
    return dataSource;
  };
  let dataSource: DataSource;
  try {
    dataSource = await connect(poolSize);
  } catch (error) {
    await dispose();
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    kind,
    url,
    dataSource,
    connectAnother: (size = 2) => connect(size),
    close: () => {
      closing ??= (async () => {
        try {
          for (const each of dataSources) if (each.isInitialized) await each.destroy();
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
