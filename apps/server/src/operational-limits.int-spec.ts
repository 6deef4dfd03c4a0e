import { Server } from 'node:net';
import { Logger } from '@nestjs/common';
import type { Pool } from 'pg';
import { DataSource, type QueryRunner } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startAgentApiTestServer, type AgentApiTestServer } from '../../../test/support/agent-api.js';
import { FakeClock } from '../../../test/support/fake-clock.js';
import { toErrorReply } from './common/error.filter.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';

/** Settings of issue 16 that reach the server's listener and database pool (the agent API's own have their specs). */
describe(`server: database_pool_timeout and listen_backlog reach the running server (${backend})`, () => {
  let api: AgentApiTestServer;
  const backlogs: unknown[] = [];

  beforeAll(async () => {
    const listen = Server.prototype.listen;
    const spy = vi.spyOn(Server.prototype, 'listen').mockImplementation(function (this: Server, ...args: unknown[]) {
      const options = args[0];
      if (typeof options === 'object' && options !== null && 'backlog' in options) backlogs.push(options.backlog);
      return (listen as (...a: unknown[]) => Server).apply(this, args);
    });
    try {
      api = await startAgentApiTestServer({
        clock: new FakeClock(Date.now()),
        flags: { databasePoolTimeout: '1s', listenBacklog: '64' },
      });
    } finally {
      spy.mockRestore();
    }
  });

  afterAll(async () => {
    await api?.close();
  });

  it('listens on the TLS port with the configured accept queue', () => {
    expect(backlogs).toEqual([64]);
  });

  it('fails a query with 503 once no pooled connection frees up within the configured wait', async () => {
    const dataSource = api.server.app.get(DataSource);
    const pool = (dataSource.driver as unknown as { master: Pool }).master;
    expect(pool.options.connectionTimeoutMillis).toBe(1000);
    const held: QueryRunner[] = [];
    try {
      // Every pooled connection of the server (1 on the embedded database, the pool size on PostgreSQL) held.
      for (let i = 0; i < (pool.options.max ?? 0); i++) {
        const runner = dataSource.createQueryRunner();
        held.push(runner);
        await runner.connect();
      }
      const failure = await dataSource.query('SELECT 1').then(
        () => undefined,
        (error: unknown) => error,
      );
      Logger.overrideLogger(false);
      expect(toErrorReply(failure, { method: 'GET', url: '/agent/v1/sync' }, 1024)).toEqual({
        status: 503,
        body: {
          error: 'unavailable',
          message: 'database: busy, no pooled connection freed up within the pool timeout; retry in a few seconds',
        },
      });
    } finally {
      for (const runner of held) await runner.release();
    }
  });
});
