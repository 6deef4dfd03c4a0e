import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

/** What every test file learns about this run (see `useTestDatabase` in `database.ts`). */
export interface TestRun {
  /** Scratch directory of this run: the embedded template, per-file database copies, locks. */
  runDir: string;
  /** `<pid>_<random>`: names this run's PostgreSQL databases, so concurrent runs never collide. */
  runId: string;
  /** The PostgreSQL to test against (`DATABASE_URL`), or null for the embedded database. */
  databaseUrl: string | null;
}

declare module 'vitest' {
  export interface ProvidedContext {
    sigilTestRun: TestRun;
  }
}

/** File in `runDir` naming the PostgreSQL template database once a test file has created it. */
export const POSTGRES_TEMPLATE_MARKER = 'postgres-template';

/**
 * Prepares a scratch directory only: the migrated template (a PostgreSQL template database, or an initdb'd embedded
 * data directory) is built lazily by the first test file that asks for a database, so runs without database tests
 * pay nothing. Teardown drops this run's PostgreSQL databases and removes the directory.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runDir = await mkdtemp(join(tmpdir(), 'sigil-test-'));
  const databaseUrl = process.env.DATABASE_URL?.trim() || null;
  const run: TestRun = { runDir, runId: `${process.pid}_${randomBytes(4).toString('hex')}`, databaseUrl };
  project.provide('sigilTestRun', run);

  return async () => {
    try {
      const template = await readFile(join(runDir, POSTGRES_TEMPLATE_MARKER), 'utf8').catch(() => undefined);
      if (databaseUrl && template) await dropRunDatabases(databaseUrl, run.runId);
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  };
}

/** The migrated template database of a run. */
export function templateDatabaseName(runId: string): string {
  return `sigil_tpl_${runId}`;
}

/** Prefix of a run's per-file databases. */
export function testDatabasePrefix(runId: string): string {
  return `sigil_t_${runId}_`;
}

function likeEscape(text: string): string {
  return text.replace(/[\\%_]/g, (char) => `\\${char}`);
}

/** Drops the template and any per-file database a crashed worker left behind. */
async function dropRunDatabases(databaseUrl: string, runId: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>(
      'SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2',
      [templateDatabaseName(runId), `${likeEscape(testDatabasePrefix(runId))}%`],
    );
    // Per-file databases first: the template cannot be dropped while being copied.
    rows.sort((a, b) => Number(a.datname.startsWith('sigil_tpl_')) - Number(b.datname.startsWith('sigil_tpl_')));
    for (const { datname } of rows) {
      await client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)} WITH (FORCE)`);
    }
  } finally {
    await client.end();
  }
}
