/**
 * How database errors are classified, with the errors pg really raises: a server that accepts TCP connections but
 * never starts a session (a loaded server) is busy, not unreachable, so the agent-status outage rule does not apply;
 * a closed port is unreachable.
 */
import { type AddressInfo, type Server, type Socket, createServer } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseUnavailable, databaseUnreachable } from './database-errors.js';

async function errorOf(port: number): Promise<unknown> {
  const pool = new pg.Pool({ host: '127.0.0.1', port, user: 'x', database: 'x', connectionTimeoutMillis: 300 });
  try {
    await pool.query('SELECT 1');
    return expect.fail('the query should have failed');
  } catch (error) {
    return error;
  } finally {
    await pool.end().catch(() => undefined);
  }
}

describe('database error classification', () => {
  let silent: Server;
  const sockets: Socket[] = [];
  beforeAll(async () => {
    silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  it('a server that takes the connection but starts no session in time is busy (503), not unreachable', async () => {
    const error = await errorOf((silent.address() as AddressInfo).port);
    expect((error as Error).message).toBe('Connection terminated due to connection timeout');
    expect(databaseUnreachable(error)).toBe(false);
    expect(databaseUnavailable(error)?.kind).toBe('unavailable');
  });

  it('a closed port is unreachable (503)', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await errorOf(port);
    expect(databaseUnreachable(error)).toBe(true);
    expect(databaseUnavailable(error)?.kind).toBe('unavailable');
  });
});
