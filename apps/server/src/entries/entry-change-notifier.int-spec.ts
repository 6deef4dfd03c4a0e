import { TrustDomain } from '@sigil/spiffe';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../common/clock.js';
import { EntriesRepository } from './entries.repository.js';
import { EntriesService } from './entries.service.js';
import {
  type EntryChangeNotifier,
  InProcessEntryChangeNotifier,
  PostgresEntryChangeNotifier,
  createEntryChangeNotifier,
} from './entry-change-notifier.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/a1';
// Which backend this pass runs on decides which notifier the server uses; each pass tests its own.
const kind = process.env.DATABASE_URL ? 'postgres' : 'embedded';

describe(`entry change notification (${kind})`, () => {
  let db: TestDatabase;
  const notifiers: EntryChangeNotifier[] = [];
  const clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));

  const replica = async (dataSource: DataSource) => {
    const notifier = await createEntryChangeNotifier({ kind: db.kind, url: db.url, dataSource });
    notifiers.push(notifier);
    const service = new EntriesService(new EntriesRepository(dataSource), notifier, { trustDomain: TD }, clock);
    const heard: number[] = [];
    service.subscribe((revision) => heard.push(revision));
    return { service, heard, notifier };
  };
  const create = (service: EntriesService, name: string) =>
    service.createEntry({
      spiffeId: `spiffe://example.org/${name}`,
      parentId: AGENT,
      selectors: [{ type: 'unix', value: `user:${name}` }],
    });

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    for (const notifier of notifiers) await notifier.close();
    await db?.close();
  });

  it('picks the notifier that works on the backend', async () => {
    const { notifier } = await replica(db.dataSource);
    expect(db.kind).toBe(kind);
    expect(notifier).toBeInstanceOf(kind === 'postgres' ? PostgresEntryChangeNotifier : InProcessEntryChangeNotifier);
  });

  it('tells subscribers the revision of every committed change, and nothing for a refused one', async () => {
    const { service, heard } = await replica(db.dataSource);
    const start = await service.currentRevision();
    const entry = await create(service, 'web');
    await service.updateEntry(entry.id, { hint: 'v2' });
    await service.deleteEntry(entry.id);
    await vi.waitFor(() =>
      expect(heard.filter((revision) => revision > start)).toEqual([start + 1, start + 2, start + 3]),
    );
    await expect(service.deleteEntry(entry.id)).rejects.toMatchObject({ kind: 'not_found' });
    await create(service, 'after');
    await vi.waitFor(() => expect(heard.at(-1)).toBe(start + 4));
    expect(heard.filter((revision) => revision > start)).toHaveLength(4);
  });

  if (kind === 'postgres') {
    it('reaches every replica on the database through LISTEN/NOTIFY', async () => {
      const a = await replica(await db.connectAnother(2));
      const b = await replica(await db.connectAnother(2));
      const entry = await create(a.service, 'cross');
      await vi.waitFor(() => expect(b.heard).toContain(entry.revisionNumber));
      expect(a.heard).toContain(entry.revisionNumber);
    });

    it('reconnects its listening connection and reports the head revision it may have missed', async () => {
      const listener = await replica(await db.connectAnother(2));
      const writer = await replica(await db.connectAnother(2));
      await db.dataSource.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'sigil-entry-changes' AND datname = current_database()`,
      );
      const missed = await create(writer.service, 'while-down');
      await vi.waitFor(() => expect(listener.heard).toContain(missed.revisionNumber), { timeout: 10_000 });
      const next = await create(writer.service, 'after-reconnect');
      await vi.waitFor(() => expect(listener.heard).toContain(next.revisionNumber), { timeout: 10_000 });
    });
  } else {
    it('stays within the process: a notifier on another pool of the same database hears nothing', async () => {
      const a = await replica(await db.connectAnother(2));
      const b = await replica(await db.connectAnother(2));
      const entry = await create(a.service, 'local');
      await vi.waitFor(() => expect(a.heard).toContain(entry.revisionNumber));
      expect(b.heard).toEqual([]);
    });
  }
});
