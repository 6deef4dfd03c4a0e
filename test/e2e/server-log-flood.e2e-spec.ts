import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOG_INTERVAL_MS } from '@sigil/logging';
import { startServer, type RunningServer } from '../../apps/server/src/app.js';
import { FakeClock } from '../support/fake-clock.js';
import { createRootLogger } from '../../apps/server/src/common/logging.js';
import { type TestDatabase } from '../support/database.js';
import { testServerConfig } from '../support/server-config.js';

const REQUESTS = 2_000;
const CONCURRENCY = 20;
/** A query string a client chooses: it must never reach the log. */
const QUERY = `?token=${'q'.repeat(4_000)}`;
// Longer path parameters get 414 from the router (maxParamLength) before any guard runs.
const LONG_PATH = `/v1/entries/${'p'.repeat(90)}`;

/** Issue 16 finding 4: a client refused thousands of times must not flood the server log. */
describe('server log under a flood of unauthenticated admin requests', () => {
  let db: TestDatabase | undefined;
  let scratch: string;
  let server: RunningServer;
  let logText = '';
  const clock = new FakeClock(Date.now());
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY, rejectUnauthorized: false });

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-e2e-logflood-'));
    const setup = await testServerConfig(scratch);
    db = setup.database;
    const destination = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        logText += chunk.toString('utf8');
        done();
      },
    });
    server = await startServer(setup.config, { clock, logger: createRootLogger('info', destination) });
  });

  afterAll(async () => {
    agent.destroy();
    await server?.close();
    await db?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const send = (path: string, authorization: string | undefined): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: server.address.port,
          path,
          agent,
          headers: authorization === undefined ? {} : { authorization },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });

  /** Every refusal reason of the admin guard, with a long path or a long query string. */
  const attack = (i: number): Promise<number> => {
    const path = i % 2 === 0 ? `/v1/entries${QUERY}` : `${LONG_PATH}${QUERY}`;
    const authorization = [undefined, 'Basic x', 'Bearer sigil_admin_unknown'][i % 3];
    return send(path, authorization);
  };

  const warnLines = (): Record<string, unknown>[] =>
    logText
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line['context'] === 'AdminAuthGuard');

  it(`logs a bounded number of short lines without the query string for ${REQUESTS} refused requests`, async () => {
    const before = logText.length;
    const statuses: number[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS) statuses.push(await attack(next++));
      }),
    );
    expect(statuses).toHaveLength(REQUESTS);
    expect(new Set(statuses)).toEqual(new Set([401]));

    const logged = logText.slice(before);
    const refused = warnLines();
    // Three refusal reasons, ten lines each per interval.
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.length).toBeLessThanOrEqual(30);
    expect(Buffer.byteLength(logged)).toBeLessThan(32 * 1024);
    expect(logged).not.toContain('qqqq');
    expect(logged).not.toContain('?token');
    for (const line of refused) {
      expect(line).toMatchObject({ msg: 'admin API request refused', method: 'GET' });
      expect((line['path'] as string).length).toBeLessThanOrEqual(256);
    }
  });

  it('reports what it dropped in one summary line per reason when the interval ends', async () => {
    const written = warnLines().length;
    clock.advance(LOG_INTERVAL_MS);
    // The next refusal of each reason closes its interval: the summary, then the line itself.
    for (let i = 0; i < 3; i += 1) expect(await attack(i)).toBe(401);
    const lines = warnLines();
    const summaries = lines.filter((line) => typeof line['dropped'] === 'number');
    expect(summaries).toHaveLength(3);
    const dropped = summaries.reduce((sum, line) => sum + (line['dropped'] as number), 0);
    expect(dropped + written).toBe(REQUESTS);
    expect(lines.length).toBe(written + 6);
  });
});
