import { Logger } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { toErrorReply } from '../common/error.filter.js';
import { createDataSource } from './data-source.js';

const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';

describe(`database waits beyond the pool timeout (${kind})`, () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    await db?.close();
  });

  it('answer 503 unavailable with retry advice, not 500, while a transaction holds the only connection', async () => {
    // A pool of one, as the server has on the embedded database, with a short wait for a free connection.
    const pool = createDataSource({ url: db.url, poolSize: 1, poolTimeoutMs: 300, applicationName: 'sigil-test' });
    await pool.initialize();
    const holder = pool.createQueryRunner();
    try {
      await holder.connect();
      await holder.startTransaction();
      await holder.query('SELECT 1');
      const failure = await pool.query('SELECT 2').then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(Error);
      Logger.overrideLogger(false);
      const reply = toErrorReply(failure, { method: 'GET', url: '/agent/v1/sync' }, 1024);
      expect(reply).toEqual({
        status: 503,
        body: {
          error: 'unavailable',
          message: 'database: busy, no pooled connection freed up within the pool timeout; retry in a few seconds',
        },
      });
    } finally {
      await holder.rollbackTransaction().catch(() => undefined);
      await holder.release();
      await pool.destroy();
    }
  });

  it('still answers 500 for an ordinary query error', async () => {
    const failure = await db.dataSource.query('SELECT * FROM no_such_table').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(toErrorReply(failure, { method: 'GET', url: '/v1/entries' }, 1024).status).toBe(500);
  });
});
