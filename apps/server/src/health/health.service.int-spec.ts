import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { type AgentsService } from '../agents/agents.service.js';
import { type CaService } from '../ca/ca.service.js';
import { type EntriesService } from '../entries/entries.service.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { DatabasePingRepository } from './database-ping.repository.js';
import { HealthService, READINESS_CACHE_MS } from './health.service.js';
import { GAUGE_CACHE_MS, MetricsService } from './metrics.service.js';

describe('HealthService readiness', () => {
  let db: TestDatabase;
  const clock = new FakeClock();
  let caReady = true;
  const ca = {
    isReady: () => caReady,
    authorityExpiries: () => [
      { kind: 'x509', state: 'active', notAfter: new Date('2030-01-01T00:00:00Z') },
      { kind: 'x509', state: 'prepared', notAfter: new Date('2030-01-01T12:00:00Z') },
      { kind: 'jwt', state: 'active', notAfter: new Date('2030-01-01T00:00:01Z') },
    ],
  } as CaService;
  const agents = { count: () => Promise.resolve(7) } as AgentsService;
  const entries = { countEntries: () => Promise.resolve(42) } as EntriesService;

  beforeAll(async () => {
    db = await useTestDatabase({ poolSize: 1 });
  });

  afterAll(async () => {
    await db?.close();
  });

  it('is ready when the database answers and the authorities are active', async () => {
    const health = new HealthService(
      new DatabasePingRepository(db.dataSource),
      ca,
      agents,
      entries,
      new MetricsService(),
      clock,
    );
    await expect(health.readiness()).resolves.toEqual({ database: 'ok', authority: 'ok' });
  });

  it('names every failed check: no active CA, unreachable database', async () => {
    const closed = await db.connectAnother({
      poolSize: 1,
      embeddedBecause: 'a pool of its own to close for the unreachable-database check; it never runs a query',
    });
    await closed.destroy();
    caReady = false;
    const health = new HealthService(
      new DatabasePingRepository(closed),
      ca,
      agents,
      entries,
      new MetricsService(),
      clock,
    );
    await expect(health.readiness()).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(
        /^not ready: database: unreachable \(.+\); authority: no active X\.509 CA and JWT key yet$/,
      ),
    });
    caReady = true;
  });

  it('answers a flood of probes and scrapes with one database query per check', async () => {
    let pings = 0;
    const counting = { query: (sql: string) => (pings++, db.dataSource.query(sql)) } as DataSource;
    let counts = 0;
    const countingAgents = { count: () => (counts++, Promise.resolve(3)) } as AgentsService;
    const metrics = new MetricsService(clock);
    const health = new HealthService(new DatabasePingRepository(counting), ca, countingAgents, entries, metrics, clock);
    health.onModuleInit();
    const probes = await Promise.all(Array.from({ length: 200 }, () => health.readiness()));
    expect(probes.every((checks) => checks.database === 'ok')).toBe(true);
    const scrapes = await Promise.all(Array.from({ length: 200 }, () => metrics.render()));
    expect(scrapes.every((text) => /^sigil_agents 3$/m.test(text))).toBe(true);
    // One after the other too (within the cache time): concurrent callers share a read, later ones its answer.
    for (let i = 0; i < 50; i++) {
      await health.readiness();
      await metrics.render();
    }
    expect(pings).toBe(1);
    expect(counts).toBe(1);
    clock.advance(READINESS_CACHE_MS);
    await health.readiness();
    expect(pings).toBe(2);
    clock.advance(GAUGE_CACHE_MS);
    await metrics.render();
    expect(counts).toBe(2);
  });

  it('reads the entry and agent gauges at scrape time', async () => {
    const metrics = new MetricsService();
    new HealthService(new DatabasePingRepository(db.dataSource), ca, agents, entries, metrics, clock).onModuleInit();
    const text = await metrics.render();
    expect(text).toMatch(/^sigil_entries 42$/m);
    expect(text).toMatch(/^sigil_agents 7$/m);
    // The alert operators write: an active key near its end, with or without a prepared successor.
    expect(text).toContain('sigil_authority_expiry_timestamp_seconds{kind="x509",state="active"} 1893456000\n');
    expect(text).toContain('sigil_authority_expiry_timestamp_seconds{kind="x509",state="prepared"} 1893499200\n');
    expect(text).toContain('sigil_authority_expiry_timestamp_seconds{kind="jwt",state="active"} 1893456001\n');
    expect(text).not.toContain('kind="jwt",state="prepared"');
  });
});
