import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { type AgentsService } from '../agents/agents.service.js';
import { type CaService } from '../ca/ca.service.js';
import { type EntriesService } from '../entries/entries.service.js';
import { HealthService } from './health.service.js';
import { MetricsService } from './metrics.service.js';

describe('HealthService readiness', () => {
  let db: TestDatabase;
  let caReady = true;
  const ca = { isReady: () => caReady } as CaService;
  const agents = { count: () => Promise.resolve(7) } as AgentsService;
  const entries = { countEntries: () => Promise.resolve(42) } as EntriesService;

  beforeAll(async () => {
    db = await useTestDatabase({ poolSize: 1 });
  });

  afterAll(async () => {
    await db?.close();
  });

  it('is ready when the database answers and the authorities are active', async () => {
    const health = new HealthService(db.dataSource, ca, agents, entries, new MetricsService());
    await expect(health.readiness()).resolves.toEqual({ database: 'ok', authority: 'ok' });
  });

  it('names every failed check: no active CA, unreachable database', async () => {
    const closed = await db.connectAnother({
      poolSize: 1,
      embeddedBecause: 'a pool of its own to close for the unreachable-database check; it never runs a query',
    });
    await closed.destroy();
    caReady = false;
    const health = new HealthService(closed, ca, agents, entries, new MetricsService());
    await expect(health.readiness()).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(
        /^not ready: database: unreachable \(.+\); authority: no active X\.509 CA and JWT key yet$/,
      ),
    });
    caReady = true;
  });

  it('reads the entry and agent gauges at scrape time', async () => {
    const metrics = new MetricsService();
    new HealthService(db.dataSource, ca, agents, entries, metrics).onModuleInit();
    const text = await metrics.render();
    expect(text).toMatch(/^sigil_entries 42$/m);
    expect(text).toMatch(/^sigil_agents 7$/m);
  });
});
