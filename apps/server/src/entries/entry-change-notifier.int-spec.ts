import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { TrustDomain } from '@sigil/spiffe';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRegistry } from '../../../../test/support/registry.js';
import type { EntriesService } from './entries.service.js';
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
    const { entries: service, changeLog } = createRegistry(dataSource, notifier, { trustDomain: TD }, clock);
    const heard: number[] = [];
    changeLog.subscribe((revision) => heard.push(revision));
    return { service, changeLog, heard, notifier };
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
    const { service, changeLog, heard } = await replica(db.dataSource);
    const start = await changeLog.currentRevision();
    const entry = await create(service, 'web');
    await service.updateEntry(entry.id, { hint: 'v2' });
    await service.deleteEntry(entry.id);
    await vi.waitFor(
      () => expect(heard.filter((revision) => revision > start)).toEqual([start + 1, start + 2, start + 3]),
      { timeout: 15_000 },
    );
    await expect(service.deleteEntry(entry.id)).rejects.toMatchObject({ kind: 'not_found' });
    await create(service, 'after');
    await vi.waitFor(() => expect(heard.at(-1)).toBe(start + 4), { timeout: 15_000 });
    expect(heard.filter((revision) => revision > start)).toHaveLength(4);
  });

  const onEmbedded = 'skipped on embedded: one server process there, so the notifier is in-process';
  const listeningBackends = async (): Promise<number[]> =>
    (
      await db.dataSource.query(
        `SELECT pid FROM pg_stat_activity WHERE application_name = 'sigil-entry-changes' AND datname = current_database()`,
      )
    ).map((row: { pid: number }) => row.pid);
  const terminateListeners = () =>
    db.dataSource.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = 'sigil-entry-changes' AND datname = current_database()`,
    );

  it.skipIf(kind === 'embedded')(
    `reaches every replica on the database through LISTEN/NOTIFY (${onEmbedded})`,
    async () => {
      const a = await replica(await db.connectAnother());
      const b = await replica(await db.connectAnother());
      const entry = await create(a.service, 'cross');
      // Each replica hears it on its own connection; one hearing it says nothing about when the other does.
      await vi.waitFor(() => expect(b.heard).toContain(entry.revisionNumber), { timeout: 15_000 });
      await vi.waitFor(() => expect(a.heard).toContain(entry.revisionNumber), { timeout: 15_000 });
    },
  );

  it.skipIf(kind === 'embedded')(`hears a change committed right after start() resolved (${onEmbedded})`, async () => {
    const writer = await replica(await db.connectAnother());
    for (let i = 0; i < 5; i++) {
      const heard: number[] = [];
      const notifier = await PostgresEntryChangeNotifier.start(db.url, db.dataSource);
      notifiers.push(notifier);
      notifier.subscribe((revision) => heard.push(revision));
      const entry = await create(writer.service, `right-after-start-${i}`);
      await vi.waitFor(() => expect(heard).toContain(entry.revisionNumber), { timeout: 15_000 });
      await notifier.close();
    }
  });

  it.skipIf(kind === 'embedded')(
    `reconnects its listening connection and reports the head revision it may have missed (${onEmbedded})`,
    async () => {
      const listener = await replica(await db.connectAnother());
      const writer = await replica(await db.connectAnother());
      await terminateListeners();
      const missed = await create(writer.service, 'while-down');
      await vi.waitFor(() => expect(listener.heard).toContain(missed.revisionNumber), { timeout: 15_000 });
      const next = await create(writer.service, 'after-reconnect');
      await vi.waitFor(() => expect(listener.heard).toContain(next.revisionNumber), { timeout: 15_000 });
    },
  );

  it.skipIf(kind === 'embedded')(
    `catches up on the listening connection itself after a reconnect, even when its pool fails (${onEmbedded})`,
    async () => {
      for (const notifier of notifiers.splice(0)) await notifier.close();
      await vi.waitFor(async () => expect(await listeningBackends()).toEqual([]), { timeout: 15_000 });
      const pool = await db.connectAnother({ poolSize: 1 });
      const listener = await replica(pool);
      const writer = createRegistry(
        db.dataSource,
        new InProcessEntryChangeNotifier(),
        { trustDomain: TD },
        clock,
      ).entries;
      // The listener's pool is gone (a replica whose pool is exhausted or broken); its LISTEN connection is not.
      await pool.destroy();
      await terminateListeners();
      const missed = await create(writer, 'pool-down');
      await vi.waitFor(() => expect(listener.heard).toContain(missed.revisionNumber), { timeout: 15_000 });
      // Give a leaked reconnect time to show, then check that exactly one listening connection is left.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(await listeningBackends()).toHaveLength(1);
    },
  );

  it.skipIf(kind === 'embedded')(
    `delivers a committed change whose NOTIFY never went out, at its next check (${onEmbedded})`,
    async () => {
      const heard: number[] = [];
      const notifier = await PostgresEntryChangeNotifier.start(db.url, db.dataSource, { checkIntervalMs: 200 });
      notifiers.push(notifier);
      notifier.subscribe((revision) => heard.push(revision));
      // A replica that committed and then died (or whose pg_notify failed) before notifying.
      const silent = createRegistry(
        db.dataSource,
        new InProcessEntryChangeNotifier(),
        { trustDomain: TD },
        clock,
      ).entries;
      const entry = await create(silent, 'never-notified');
      await vi.waitFor(() => expect(heard).toContain(entry.revisionNumber), { timeout: 15_000 });
      // Nothing new: the check stays quiet.
      const count = heard.length;
      await new Promise((resolve) => setTimeout(resolve, 600));
      expect(heard).toHaveLength(count);
    },
  );

  it.skipIf(kind === 'embedded')(
    `replaces a listening connection that went silent (no error, no close) and reports what it missed (${onEmbedded})`,
    async () => {
      const proxy = await freezableProxy(new URL(db.url));
      try {
        const heard: number[] = [];
        const notifier = await PostgresEntryChangeNotifier.start(proxy.url, db.dataSource, { checkIntervalMs: 300 });
        notifiers.push(notifier);
        notifier.subscribe((revision) => heard.push(revision));
        const writer = await replica(await db.connectAnother());
        // A network path that drops everything without a reset: the listener is told nothing.
        proxy.freeze();
        const missed = await create(writer.service, 'silent-network');
        await vi.waitFor(() => expect(heard).toContain(missed.revisionNumber), { timeout: 15_000 });
        const next = await create(writer.service, 'after-silence');
        await vi.waitFor(() => expect(heard).toContain(next.revisionNumber), { timeout: 15_000 });
        await notifier.close();
      } finally {
        await proxy.close();
      }
    },
  );

  it.skipIf(kind === 'postgres')(
    'stays within the process: another notifier on the same database hears nothing (skipped on PostgreSQL: LISTEN/NOTIFY reaches every replica there)',
    async () => {
      const a = await replica(db.dataSource);
      const b = await replica(db.dataSource);
      const entry = await create(a.service, 'local');
      await vi.waitFor(() => expect(a.heard).toContain(entry.revisionNumber), { timeout: 15_000 });
      expect(b.heard).toEqual([]);
    },
  );
});

/** A TCP proxy to PostgreSQL whose open connections can be frozen: nothing forwarded, nothing closed. */
async function freezableProxy(target: URL): Promise<{ url: string; freeze(): void; close(): Promise<void> }> {
  const pairs: [Socket, Socket][] = [];
  const frozen: Socket[] = [];
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    pairs.push([client, upstream]);
    client.pipe(upstream);
    upstream.pipe(client);
    for (const socket of [client, upstream]) socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    freeze: () => {
      for (const [client, upstream] of pairs.splice(0)) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
        // Still open, released only when the proxy closes.
        frozen.push(client, upstream);
      }
    },
    close: async () => {
      for (const socket of [...frozen.splice(0), ...pairs.flat()]) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
