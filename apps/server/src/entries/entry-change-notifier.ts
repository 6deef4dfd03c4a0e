import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import type { DatabaseKind } from '../database/database.js';

/** Called with the registry revision a change reached. A hint: read the changes with `listChangesSince`. */
export type EntryChangeListener = (revision: number) => void;

/** PostgreSQL channel of registry change notifications; the payload is the revision, in decimal. */
export const ENTRY_CHANGES_CHANNEL = 'sigil_entry_changes';

/**
 * Tells registry readers (this replica's index, agent sync streams) that the registry moved, so they fetch the
 * delta at once instead of polling. Notifications are hints that may be coalesced or, across a connection loss,
 * lost: readers always catch up through the gap-safe change log, never from the notification itself.
 */
export abstract class EntryChangeNotifier implements OnApplicationShutdown {
  /** Adds a listener; returns the function that removes it. */
  abstract subscribe(listener: EntryChangeListener): () => void;
  /** Announces that the registry reached `revision` (called after the change committed). */
  abstract notify(revision: number): Promise<void>;
  abstract close(): Promise<void>;

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }
}

const logger = new Logger('EntryChangeNotifier');

function deliver(listeners: Iterable<EntryChangeListener>, revision: number): void {
  for (const listener of listeners) {
    try {
      listener(revision);
    } catch (error) {
      logger.warn({ msg: 'entry change listener failed', revision, err: error });
    }
  }
}

/**
 * Delivers within this process. The embedded database needs it: PGlite's NOTIFY only reaches the connection that
 * sent it, and an embedded server is a single process anyway.
 */
export class InProcessEntryChangeNotifier extends EntryChangeNotifier {
  readonly #listeners = new Set<EntryChangeListener>();

  subscribe(listener: EntryChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async notify(revision: number): Promise<void> {
    // Delivered on a later tick: a listener never runs inside the writer's call stack.
    queueMicrotask(() => deliver([...this.#listeners], revision));
  }

  async close(): Promise<void> {
    this.#listeners.clear();
  }
}

/**
 * PostgreSQL LISTEN/NOTIFY: every replica on the database hears every replica's changes. Listens on a dedicated
 * connection (outside the pool), reconnecting with backoff; after a reconnect, listeners get the head revision, as
 * notifications sent while disconnected are lost. Notifies through the pool.
 */
export class PostgresEntryChangeNotifier extends EntryChangeNotifier {
  readonly #listeners = new Set<EntryChangeListener>();
  #client: pg.Client | undefined;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelayMs = 0;

  private constructor(
    private readonly url: string,
    private readonly dataSource: DataSource,
  ) {
    super();
  }

  /** Connects the listening connection; resolves once LISTEN is in place. */
  static async start(url: string, dataSource: DataSource): Promise<PostgresEntryChangeNotifier> {
    const notifier = new PostgresEntryChangeNotifier(url, dataSource);
    await notifier.listen();
    return notifier;
  }

  subscribe(listener: EntryChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async notify(revision: number): Promise<void> {
    await this.dataSource.query('SELECT pg_notify($1, $2)', [ENTRY_CHANGES_CHANNEL, String(revision)]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#listeners.clear();
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: 'sigil-entry-changes' });
    client.on('notification', (message) => {
      const revision = Number(message.payload);
      if (message.channel === ENTRY_CHANGES_CHANNEL && Number.isSafeInteger(revision)) {
        deliver([...this.#listeners], revision);
      }
    });
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, undefined));
    await client.connect();
    try {
      await client.query(`LISTEN ${ENTRY_CHANGES_CHANNEL}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    this.#client = client;
    this.#retryDelayMs = 0;
  }

  private lost(client: pg.Client, error: Error | undefined): void {
    if (this.#closed || this.#client !== client) return;
    this.#client = undefined;
    client.end().catch(() => undefined);
    logger.warn({ msg: 'entry change listener connection lost; reconnecting', err: error });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.#retryDelayMs = Math.min(Math.max(this.#retryDelayMs * 2, 250), 30_000);
    this.#retryTimer = setTimeout(() => {
      this.listen()
        .then(() => this.catchUp())
        .catch((error: unknown) => {
          if (this.#closed) return;
          logger.warn({ msg: 'entry change listener could not reconnect', err: error });
          this.scheduleReconnect();
        });
    }, this.#retryDelayMs);
    this.#retryTimer.unref();
  }

  private async catchUp(): Promise<void> {
    const rows: { revision: string }[] = await this.dataSource.query(
      `SELECT revision FROM revision_counters WHERE name = 'entries'`,
    );
    if (rows[0]) deliver([...this.#listeners], Number(rows[0].revision));
  }
}

/** The notifier that works on this database: LISTEN/NOTIFY on PostgreSQL, in-process on the embedded one. */
export async function createEntryChangeNotifier(database: {
  kind: DatabaseKind;
  url: string;
  dataSource: DataSource;
}): Promise<EntryChangeNotifier> {
  return database.kind === 'postgres'
    ? PostgresEntryChangeNotifier.start(database.url, database.dataSource)
    : new InProcessEntryChangeNotifier();
}
