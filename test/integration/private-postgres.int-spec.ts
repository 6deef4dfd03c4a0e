/**
 * The private PostgreSQL harness itself: its own cluster on a free port of 127.0.0.1, password authentication, a
 * crash (`pg_ctl stop -m immediate`) that cuts every connection, a start that recovers committed rows, and a close
 * that leaves nothing behind.
 */
import { existsSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PRIVATE_POSTGRES_MISSING,
  type PrivatePostgres,
  privatePostgresSkipTitle,
  startPrivatePostgres,
} from '../support/private-postgres.js';

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe.skipIf(PRIVATE_POSTGRES_MISSING !== undefined)(`private PostgreSQL${privatePostgresSkipTitle()}`, () => {
  let postgres: PrivatePostgres;

  beforeAll(async () => {
    postgres = await startPrivatePostgres();
  }, 120_000);

  afterAll(() => postgres?.close());

  it('listens on its own port of 127.0.0.1 only, with a password', async () => {
    expect(postgres.port).not.toBe(5432);
    expect(postgres.url).toMatch(new RegExp(`^postgres://sigil:[^@]+@127\\.0\\.0\\.1:${postgres.port}/sigil$`));
    const [settings] = await query<{ listen: string; version: string }>(
      postgres.url,
      "SELECT current_setting('listen_addresses') AS listen, current_setting('server_version_num') AS version",
    );
    expect(settings).toMatchObject({ listen: '127.0.0.1' });
    expect(Number(settings!.version)).toBeGreaterThanOrEqual(150000);
    const wrong = new URL(postgres.url);
    wrong.password = 'wrong';
    await expect(query(wrong.toString(), 'SELECT 1')).rejects.toThrow(/password authentication failed/);
  });

  it('crashes on stop (connections cut), keeps committed rows across start, and accepts connections again', async () => {
    await query(postgres.url, 'CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1), (2)');
    const held = new pg.Client({ connectionString: postgres.url });
    await held.connect();
    const cut = new Promise<Error>((done) => held.once('error', done));
    await postgres.stop();
    expect(postgres.running).toBe(false);
    expect((await cut).message).toMatch(/terminat|ECONNRESET|Connection/i);
    await expect(query(postgres.url, 'SELECT 1')).rejects.toThrow(/ECONNREFUSED/);
    await postgres.start();
    expect(postgres.running).toBe(true);
    expect(await query<{ id: number }>(postgres.url, 'SELECT id FROM kept ORDER BY id')).toEqual([
      { id: 1 },
      { id: 2 },
    ]);
    expect(await postgres.log()).toMatch(/database system was interrupted|not properly shut down/);
    await held.end().catch(() => undefined);
  }, 120_000);

  it('close stops the server and deletes its directory, and may be called twice', async () => {
    const other = await startPrivatePostgres();
    expect(existsSync(other.dataDir)).toBe(true);
    await other.close();
    await other.close();
    expect(existsSync(other.dataDir)).toBe(false);
    await expect(query(other.url, 'SELECT 1')).rejects.toThrow(/ECONNREFUSED/);
  }, 120_000);
});
