/**
 * The outage rule of AgentsService.requireActive, on a private PostgreSQL the test crashes: an agent this replica last
 * read active less than AGENT_STATUS_OUTAGE_MAX_AGE_MS ago, with the serial presented and no change heard of since, is
 * served while the database is unreachable; any other (banned, evicted, dropped by a notification, another serial,
 * read too long ago) gets the database's 503. Runs on PostgreSQL only (the embedded database has no outage of its own).
 */
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import {
  PRIVATE_POSTGRES_MISSING,
  type PrivatePostgres,
  privatePostgresSkipTitle,
  startPrivatePostgres,
} from '../../../../test/support/private-postgres.js';
import { openDataSource } from '../database/data-source.js';
import { databaseUnavailable } from '../database/database-errors.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { AuditRepository } from '../audit/audit.repository.js';
import { AuditService } from '../audit/audit.service.js';
import { createEntryChangeNotifier, type EntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { AgentEntity } from './agent.entity.js';
import { AgentsRepository } from './agents.repository.js';
import { AGENT_STATUS_OUTAGE_MAX_AGE_MS, AgentsService } from './agents.service.js';

const TTL_SECONDS = 30;
const agentId = (name: string): string => `spiffe://example.org/sigil/agent/join_token/${name}`;
const record = (name: string) => ({
  spiffeId: agentId(name),
  attestationType: 'join_token',
  serialNumber: `serial-${name}`,
  svidExpiresAt: new Date(Date.UTC(2027, 0, 1)),
  selectors: [{ type: 'join_token', value: name }],
});

/** Resolves with the error `promise` rejects with (failing if it resolves). */
async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a refusal'),
    (error: unknown) => error,
  );
}

describe.skipIf(PRIVATE_POSTGRES_MISSING !== undefined)(
  `agent status through a database outage (private PostgreSQL)${privatePostgresSkipTitle()}`,
  () => {
    let postgres: PrivatePostgres;
    let dataSource: DataSource;
    let other: DataSource;
    const notifiers: EntryChangeNotifier[] = [];

    const replica = async (pool: DataSource) => {
      const notifier = await createEntryChangeNotifier({ kind: 'postgres', url: postgres.url, dataSource: pool });
      notifiers.push(notifier);
      const clock = new FakeClock(Date.UTC(2026, 5, 1));
      const repository = new AgentsRepository(pool.getRepository(AgentEntity));
      const service = new AgentsService(
        repository,
        clock,
        notifier,
        { agentStatusCacheTtlSeconds: TTL_SECONDS },
        { kind: 'postgres' },
        new AuditService(new AuditRepository(pool.getRepository(AuditRecordEntity)), clock),
      );
      return { service, clock };
    };

    beforeAll(async () => {
      postgres = await startPrivatePostgres();
      dataSource = await openDataSource({ url: postgres.url, poolSize: 2, poolTimeoutMs: 2000 });
      other = await openDataSource({ url: postgres.url, poolSize: 2, poolTimeoutMs: 2000 });
    }, 120_000);

    afterAll(async () => {
      for (const notifier of notifiers) await notifier.close().catch(() => undefined);
      for (const each of [dataSource, other]) if (each?.isInitialized) await each.destroy().catch(() => undefined);
      await postgres?.close();
    });

    it('serves known active agents from their last status for a bounded time, and no other', async () => {
      const { service, clock } = await replica(dataSource);
      const elsewhere = await replica(other);
      const repository = new AgentsRepository(dataSource.getRepository(AgentEntity));
      for (const name of ['active', 'banned', 'renewed', 'stale', 'pending'])
        await repository.upsertUnlessBanned(record(name), new Date());
      await service.ban(agentId('banned'));
      await service.requireActive(agentId('active'), 'serial-active');
      await service.requireActive(agentId('renewed'), 'serial-renewed');
      await expect(service.requireActive(agentId('banned'), 'serial-banned')).rejects.toMatchObject({
        kind: 'permission_denied',
      });
      // Another replica renews one agent: this replica hears it and forgets that agent's status.
      const heard = new Promise<void>((done) =>
        notifiers[0]!.subscribeAgentChanges((id) => id === agentId('renewed') && done()),
      );
      await elsewhere.service.recordRenewal(agentId('renewed'), 'serial-renewed', {
        serialNumber: 'serial-renewed-2',
        svidExpiresAt: new Date(Date.UTC(2027, 0, 2)),
      });
      await heard;
      await service.requireActive(agentId('stale'), 'serial-stale');
      clock.advance(60_000);
      await service.requireActive(agentId('active'), 'serial-active');
      // Renewed here, the new SVID not used yet: both serials are the agent's.
      await service.recordRenewal(agentId('pending'), 'serial-pending', {
        serialNumber: 'serial-pending-2',
        svidExpiresAt: new Date(Date.UTC(2027, 0, 2)),
      });
      await service.requireActive(agentId('pending'), 'serial-pending');

      await postgres.stop();
      clock.advance(TTL_SECONDS * 1000);
      expect((await service.requireActive(agentId('active'), 'serial-active')).spiffeId).toBe(agentId('active'));
      expect((await service.requireActive(agentId('stale'), 'serial-stale')).spiffeId).toBe(agentId('stale'));
      // Either serial of an agent with a renewal pending (its promotion waits for the database).
      for (const serial of ['serial-pending', 'serial-pending-2']) {
        expect((await service.requireActive(agentId('pending'), serial)).serialNumber).toBe('serial-pending');
      }
      // A banned one, an outdated serial, a changed agent and a never-read one get the database's 503.
      for (const [name, serial] of [
        ['banned', 'serial-banned'],
        ['active', 'serial-other'],
        ['renewed', 'serial-renewed'],
        ['renewed', 'serial-renewed-2'],
        ['unknown', 'serial-unknown'],
      ] as const) {
        const error = await failure(service.requireActive(agentId(name), serial));
        expect({ name, serial, kind: databaseUnavailable(error)?.kind }).toEqual({ name, serial, kind: 'unavailable' });
      }
      // Past the bound since its last read: refused too ('stale' was read a minute before 'active').
      clock.advance(AGENT_STATUS_OUTAGE_MAX_AGE_MS - 60_000 - TTL_SECONDS * 1000);
      expect(databaseUnavailable(await failure(service.requireActive(agentId('stale'), 'serial-stale')))?.kind).toBe(
        'unavailable',
      );
      expect((await service.requireActive(agentId('active'), 'serial-active')).spiffeId).toBe(agentId('active'));
      clock.advance(60_000);
      expect(databaseUnavailable(await failure(service.requireActive(agentId('active'), 'serial-active')))?.kind).toBe(
        'unavailable',
      );

      // Back: read again, served.
      await postgres.start();
      for (;;) {
        const served = await service.requireActive(agentId('active'), 'serial-active').then(
          () => true,
          () => false,
        );
        if (served) break;
        await new Promise((done) => setTimeout(done, 100));
      }
      expect((await service.requireActive(agentId('renewed'), 'serial-renewed-2')).serialNumber).toBe(
        'serial-renewed-2',
      );
      expect((await service.requireActive(agentId('pending'), 'serial-pending-2')).serialNumber).toBe(
        'serial-pending-2',
      );
      await expect(service.requireActive(agentId('pending'), 'serial-pending')).rejects.toMatchObject({
        kind: 'permission_denied',
      });
    }, 120_000);

    it('does not serve from memory when the database is up but busy (a ban committed elsewhere may be unheard)', async () => {
      const { service, clock } = await replica(dataSource);
      await new AgentsRepository(other.getRepository(AgentEntity)).upsertUnlessBanned(record('busy'), new Date());
      await service.requireActive(agentId('busy'), 'serial-busy');
      clock.advance(TTL_SECONDS * 1000);
      // Both pooled connections held: the status read waits out the pool timeout, as under a flood of requests.
      const held = [dataSource.createQueryRunner(), dataSource.createQueryRunner()];
      for (const runner of held) {
        await runner.connect();
        await runner.startTransaction();
      }
      try {
        const error = await failure(service.requireActive(agentId('busy'), 'serial-busy'));
        expect(databaseUnavailable(error)?.message).toMatch(/^database: busy/);
      } finally {
        for (const runner of held) {
          await runner.rollbackTransaction();
          await runner.release();
        }
      }
      expect((await service.requireActive(agentId('busy'), 'serial-busy')).spiffeId).toBe(agentId('busy'));
    }, 60_000);
  },
);
