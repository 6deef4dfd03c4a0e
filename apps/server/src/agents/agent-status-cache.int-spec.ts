import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { AuditRepository } from '../audit/audit.repository.js';
import { AuditService } from '../audit/audit.service.js';
import { createEntryChangeNotifier, type EntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { type AttestedAgent, UNUSED_SVID_REPLACEMENTS } from './agent.js';
import { AgentEntity } from './agent.entity.js';
import { AgentsRepository } from './agents.repository.js';
import { AgentsService } from './agents.service.js';

const TTL_SECONDS = 30;
const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const agentId = (name: string): string => `spiffe://example.org/sigil/agent/join_token/${name}`;
const record = (name: string, serialNumber = `serial-${name}`) => ({
  spiffeId: agentId(name),
  attestationType: 'join_token',
  serialNumber,
  svidExpiresAt: new Date(Date.UTC(2027, 0, 1)),
  selectors: [{ type: 'join_token', value: name }],
});

/** The real repository, counting the status reads the guard's lookups cost. */
class CountingAgentsRepository extends AgentsRepository {
  reads = 0;

  override findBySpiffeId(spiffeId: string): Promise<AttestedAgent | null> {
    this.reads += 1;
    return super.findBySpiffeId(spiffeId);
  }
}

describe(`agent status cache (${kind})`, () => {
  let db: TestDatabase;
  const notifiers: EntryChangeNotifier[] = [];

  /** A server replica's AgentsService on its own pool and notifier, with its own clock. */
  const replica = async (dataSource: DataSource) => {
    const notifier = await createEntryChangeNotifier({ kind: db.kind, url: db.url, dataSource });
    notifiers.push(notifier);
    const clock = new FakeClock(Date.UTC(2026, 5, 1));
    const repository = new CountingAgentsRepository(dataSource.getRepository(AgentEntity));
    const service = new AgentsService(
      repository,
      clock,
      notifier,
      { agentStatusCacheTtlSeconds: TTL_SECONDS },
      { kind: db.kind },
      new AuditService(new AuditRepository(dataSource.getRepository(AuditRecordEntity)), clock),
    );
    return { service, repository, clock };
  };

  /** Writes an agent record without telling any replica (as a test fixture, or a replica that died after writing). */
  const behindTheBack = () => new AgentsRepository(db.dataSource.getRepository(AgentEntity));
  const seed = (name: string) => behindTheBack().upsertUnlessBanned(record(name), new Date());

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    for (const notifier of notifiers) await notifier.close();
    await db?.close();
  });

  it(`answers a flood of status checks with one database read, ${
    kind === 'postgres' ? 'until the time to live runs out' : 'with no time to live (the only replica)'
  }`, async () => {
    const { service, repository, clock } = await replica(db.dataSource);
    await seed('flood');
    repository.reads = 0;
    const answers = await Promise.all(
      Array.from({ length: 1000 }, () => service.requireActive(agentId('flood'), 'serial-flood')),
    );
    expect(answers.every((agent) => agent.spiffeId === agentId('flood'))).toBe(true);
    expect(repository.reads).toBe(1);
    clock.advance(TTL_SECONDS * 1000 - 1);
    await service.requireActive(agentId('flood'), 'serial-flood');
    expect(repository.reads).toBe(1);
    clock.advance(1);
    await service.requireActive(agentId('flood'), 'serial-flood');
    expect(repository.reads).toBe(kind === 'postgres' ? 2 : 1);
  });

  it('refuses an agent at once after this replica bans or evicts it, and refuses from memory afterwards', async () => {
    const { service, repository } = await replica(db.dataSource);
    await seed('ban');
    await seed('evict');
    await service.requireActive(agentId('ban'), 'serial-ban');
    await service.requireActive(agentId('evict'), 'serial-evict');
    await service.ban(agentId('ban'));
    await service.evict(agentId('evict'));
    repository.reads = 0;
    for (let i = 0; i < 100; i++) {
      await expect(service.requireActive(agentId('ban'), 'serial-ban')).rejects.toMatchObject({
        kind: 'permission_denied',
        message: `agent ${agentId('ban')} is banned`,
      });
      await expect(service.requireActive(agentId('evict'), 'serial-evict')).rejects.toMatchObject({
        kind: 'permission_denied',
        message: `agent ${agentId('evict')} is not attested (evicted or unknown)`,
      });
    }
    expect(repository.reads).toBe(2);
  });

  it('reads again for a serial it has not seen (a renewal elsewhere), then refuses an outdated one from memory', async () => {
    const { service, repository } = await replica(db.dataSource);
    await seed('renew');
    await service.requireActive(agentId('renew'), 'serial-renew');
    // Renewed behind this replica's back (another replica whose notification is not heard here).
    await behindTheBack().recordNewSvid(
      agentId('renew'),
      'serial-renew',
      { serialNumber: 'serial-renew-2', svidExpiresAt: new Date(Date.UTC(2027, 0, 2)) },
      new Date(),
      UNUSED_SVID_REPLACEMENTS,
    );
    repository.reads = 0;
    // The renewed serial is promoted (a write, which drops the cache), so it is read again once after.
    expect((await service.requireActive(agentId('renew'), 'serial-renew-2')).serialNumber).toBe('serial-renew-2');
    expect(repository.reads).toBe(1);
    repository.reads = 0;
    for (let i = 0; i < 50; i++) {
      await expect(service.requireActive(agentId('renew'), 'serial-renew')).rejects.toMatchObject({
        message: `agent ${agentId('renew')}: SVID serial serial-renew is not the current one`,
      });
    }
    expect(repository.reads).toBe(1);
  });

  const onEmbedded = 'skipped on embedded: one server process there, so every change is made in the same cache';

  it.skipIf(kind === 'embedded')(
    `refuses an agent banned or evicted on another replica as soon as the notification arrives (${onEmbedded})`,
    async () => {
      const a = await replica(await db.connectAnother());
      const b = await replica(await db.connectAnother());
      await seed('cross-ban');
      await seed('cross-evict');
      // B holds both as active, for its whole time to live, which never runs out here (B's clock stands still).
      await b.service.requireActive(agentId('cross-ban'), 'serial-cross-ban');
      await b.service.requireActive(agentId('cross-evict'), 'serial-cross-evict');
      b.repository.reads = 0;
      await b.service.requireActive(agentId('cross-ban'), 'serial-cross-ban');
      expect(b.repository.reads).toBe(0);

      await a.service.ban(agentId('cross-ban'));
      await a.service.evict(agentId('cross-evict'));
      await vi.waitFor(
        async () => {
          await expect(b.service.requireActive(agentId('cross-ban'), 'serial-cross-ban')).rejects.toMatchObject({
            message: `agent ${agentId('cross-ban')} is banned`,
          });
          await expect(b.service.requireActive(agentId('cross-evict'), 'serial-cross-evict')).rejects.toMatchObject({
            message: `agent ${agentId('cross-evict')} is not attested (evicted or unknown)`,
          });
        },
        { timeout: 5_000, interval: 20 },
      );
    },
  );

  it.skipIf(kind === 'embedded')(
    `without a notification, refuses an agent banned elsewhere once the time to live ran out (${onEmbedded})`,
    async () => {
      const b = await replica(await db.connectAnother());
      await seed('silent-ban');
      await b.service.requireActive(agentId('silent-ban'), 'serial-silent-ban');
      // A replica that banned it and died before its NOTIFY went out.
      await behindTheBack().markBanned(agentId('silent-ban'), new Date());
      await b.service.requireActive(agentId('silent-ban'), 'serial-silent-ban');
      b.clock.advance(TTL_SECONDS * 1000);
      await expect(b.service.requireActive(agentId('silent-ban'), 'serial-silent-ban')).rejects.toMatchObject({
        message: `agent ${agentId('silent-ban')} is banned`,
      });
    },
  );

  it.skipIf(kind === 'embedded')(
    `drops everything when its listening connection is lost, as it may have missed changes (${onEmbedded})`,
    async () => {
      const b = await replica(await db.connectAnother());
      await seed('lost');
      await b.service.requireActive(agentId('lost'), 'serial-lost');
      await behindTheBack().markBanned(agentId('lost'), new Date());
      await db.dataSource.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'sigil-entry-changes' AND datname = current_database()`,
      );
      await vi.waitFor(
        () =>
          expect(b.service.requireActive(agentId('lost'), 'serial-lost')).rejects.toMatchObject({
            message: `agent ${agentId('lost')} is banned`,
          }),
        { timeout: 15_000, interval: 50 },
      );
    },
  );
});
