import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import type { DatabaseKind } from '../database/database.js';

/** Called with the registry revision a change reached. A hint: read the changes with `listChangesSince`. */
export type EntryChangeListener = (revision: number) => void;

/**
 * Called with the SPIFFE ID of an agent whose record changed (evicted, banned, attested again, renewed), or with
 * `undefined` when any agent may have changed unheard (the listening connection was lost): drop what you cached.
 */
export type AgentChangeListener = (agentId: string | undefined) => void;

/** PostgreSQL channel of registry change notifications; the payload is the revision, in decimal. */
export const ENTRY_CHANGES_CHANNEL = 'sigil_entry_changes';

/**
 * PostgreSQL channel of agent record changes; the payload is the sending notifier's origin id, a space, and the
 * agent's SPIFFE ID (which holds no space). A notifier ignores its own: its replica dropped the agent already.
 */
export const AGENT_CHANGES_CHANNEL = 'sigil_agent_changes';

/**
 * PostgreSQL channel of CA key journal and own bundle changes (a key prepared, activated, tainted, revoked or pruned;
 * the bundle republished); the payload is the sending notifier's origin id, which ignores its own.
 */
export const AUTHORITY_CHANGES_CHANNEL = 'sigil_authority_changes';

/**
 * Called when another replica changed the CA key journal or our bundle, or when such a change may have gone unheard
 * (the listening connection was lost, then back): reload them if they changed.
 */
export type AuthorityChangeListener = () => void;

/**
 * Tells registry readers (this replica's index, agent sync streams) that the registry moved, so they fetch the
 * delta at once instead of polling. Notifications are hints that may be coalesced or, across a connection loss,
 * lost: readers always catch up through the gap-safe change log, never from the notification itself.
 *
 * The same connection carries agent record changes to every replica's agent status cache (AgentsService): those
 * name the agent, and a listener that may have missed some (connection lost, then back) hears `undefined`.
 */
export abstract class EntryChangeNotifier implements OnApplicationShutdown {
  protected readonly agentListeners = new Set<AgentChangeListener>();
  protected readonly authorityListeners = new Set<AuthorityChangeListener>();

  /** Adds a listener; returns the function that removes it. */
  abstract subscribe(listener: EntryChangeListener): () => void;
  /** Announces that the registry reached `revision` (called after the change committed). */
  abstract notify(revision: number): Promise<void>;
  /** Announces that the agent's record changed (called after the change committed). */
  abstract notifyAgentChange(agentId: string): Promise<void>;
  /** Announces to the other replicas that the key journal or our bundle changed (called after the commit). */
  abstract notifyAuthorityChange(): Promise<void>;
  abstract close(): Promise<void>;

  /** Adds an agent change listener; returns the function that removes it. */
  subscribeAgentChanges(listener: AgentChangeListener): () => void {
    this.agentListeners.add(listener);
    return () => this.agentListeners.delete(listener);
  }

  /** Adds an authority change listener; returns the function that removes it. */
  subscribeAuthorityChanges(listener: AuthorityChangeListener): () => void {
    this.authorityListeners.add(listener);
    return () => this.authorityListeners.delete(listener);
  }

  protected deliverAuthorityChange(): void {
    for (const listener of [...this.authorityListeners]) {
      try {
        listener();
      } catch (error) {
        logger.warn({ msg: 'authority change listener failed', err: error });
      }
    }
  }

  protected deliverAgentChange(agentId: string | undefined): void {
    for (const listener of [...this.agentListeners]) {
      try {
        listener(agentId);
      } catch (error) {
        logger.warn({ msg: 'agent change listener failed', err: error });
      }
    }
  }

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

  async notifyAgentChange(agentId: string): Promise<void> {
    queueMicrotask(() => this.deliverAgentChange(agentId));
  }

  /** Nothing to do: the one process that changed the keys reloaded them already. */
  async notifyAuthorityChange(): Promise<void> {}

  async close(): Promise<void> {
    this.#listeners.clear();
    this.agentListeners.clear();
    this.authorityListeners.clear();
  }
}

/** Options of {@link PostgresEntryChangeNotifier.start}. */
export interface PostgresEntryChangeNotifierOptions {
  /** How often the listening connection is checked and the head revision compared with the last one heard. */
  checkIntervalMs?: number;
}

/** Default of {@link PostgresEntryChangeNotifierOptions.checkIntervalMs}. */
export const DEFAULT_CHECK_INTERVAL_MS = 10_000;

const HEAD_REVISION_SQL = `SELECT revision FROM revision_counters WHERE name = 'entries'`;

/**
 * PostgreSQL LISTEN/NOTIFY: every replica on the database hears every replica's changes. Notifies through the pool;
 * listens on a dedicated connection (outside the pool), which nothing is allowed to lose:
 * - `start()` resolves only once LISTEN is in effect, so a change committed after that is always heard.
 * - After every (re)connect, once LISTEN is in effect again, the head revision is read on that same connection: any
 *   change committed before the read is in it, any change after it is notified on this connection. Listeners get it
 *   at once, so nothing sent while the connection was down is missed. (Read through the pool instead, a broken pool
 *   left the gap open, and each retry opened and leaked another listening connection.)
 * - Every `checkIntervalMs` the head revision is read on the listening connection (with a time limit): a connection
 *   that died silently is replaced, and a change that committed without its NOTIFY (the writer died or its
 *   `pg_notify` failed after the commit) is delivered.
 */
export class PostgresEntryChangeNotifier extends EntryChangeNotifier {
  readonly #listeners = new Set<EntryChangeListener>();
  #client: pg.Client | undefined;
  #closed = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelayMs = 0;
  #checkTimer: NodeJS.Timeout | undefined;
  #checking = false;
  readonly #origin = randomUUID();
  /** The highest revision delivered or read as the head. */
  #lastRevision = 0;

  private constructor(
    private readonly url: string,
    private readonly dataSource: DataSource,
    private readonly checkIntervalMs: number,
  ) {
    super();
  }

  /** Connects the listening connection; resolves once LISTEN is in effect. */
  static async start(
    url: string,
    dataSource: DataSource,
    options: PostgresEntryChangeNotifierOptions = {},
  ): Promise<PostgresEntryChangeNotifier> {
    const notifier = new PostgresEntryChangeNotifier(
      url,
      dataSource,
      options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS,
    );
    notifier.#lastRevision = await notifier.listen();
    notifier.#checkTimer = setInterval(() => void notifier.check(), notifier.checkIntervalMs);
    notifier.#checkTimer.unref();
    return notifier;
  }

  subscribe(listener: EntryChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async notify(revision: number): Promise<void> {
    await this.dataSource.query('SELECT pg_notify($1, $2)', [ENTRY_CHANGES_CHANNEL, String(revision)]);
  }

  async notifyAgentChange(agentId: string): Promise<void> {
    await this.dataSource.query('SELECT pg_notify($1, $2)', [AGENT_CHANGES_CHANNEL, `${this.#origin} ${agentId}`]);
  }

  async notifyAuthorityChange(): Promise<void> {
    await this.dataSource.query('SELECT pg_notify($1, $2)', [AUTHORITY_CHANGES_CHANNEL, this.#origin]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#checkTimer);
    this.#listeners.clear();
    this.agentListeners.clear();
    this.authorityListeners.clear();
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }

  private deliver(revision: number): void {
    this.#lastRevision = Math.max(this.#lastRevision, revision);
    deliver([...this.#listeners], revision);
  }

  /** Opens the listening connection and returns the head revision read on it once LISTEN is in effect. */
  private async listen(): Promise<number> {
    const client = new pg.Client({
      connectionString: this.url,
      application_name: 'sigil-entry-changes',
      // A connection that stopped answering fails its next check instead of waiting forever.
      query_timeout: this.checkIntervalMs,
    });
    client.on('notification', (message) => {
      if (message.channel === AGENT_CHANGES_CHANNEL) {
        const [origin, agentId] = (message.payload ?? '').split(' ', 2);
        if (origin !== this.#origin && agentId) this.deliverAgentChange(agentId);
        return;
      }
      if (message.channel === AUTHORITY_CHANGES_CHANNEL) {
        if (message.payload !== this.#origin) this.deliverAuthorityChange();
        return;
      }
      const revision = Number(message.payload);
      if (message.channel === ENTRY_CHANGES_CHANNEL && Number.isSafeInteger(revision)) this.deliver(revision);
    });
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, undefined));
    try {
      await client.connect();
      await client.query(`LISTEN ${ENTRY_CHANGES_CHANNEL}`);
      await client.query(`LISTEN ${AGENT_CHANGES_CHANNEL}`);
      await client.query(`LISTEN ${AUTHORITY_CHANGES_CHANNEL}`);
      const head = await headRevision(client);
      if (this.#closed) throw new Error('entry change notifier closed');
      this.#client = client;
      return head;
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  private lost(client: pg.Client, error: unknown): void {
    if (this.#closed || this.#client !== client) return;
    this.#client = undefined;
    client.end().catch(() => undefined);
    logger.warn({ msg: 'entry change listener connection lost; reconnecting', err: error });
    // Agent changes sent from now until LISTEN is in effect again go unheard: caches drop everything now and again
    // once reconnected.
    this.deliverAgentChange(undefined);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.#retryDelayMs = Math.min(Math.max(this.#retryDelayMs * 2, 250), 30_000);
    this.#retryTimer = setTimeout(() => {
      this.listen()
        .then((head) => {
          this.#retryDelayMs = 0;
          // Always delivered: a listener may have missed revisions at or below the highest one heard before.
          this.deliver(head);
          this.deliverAgentChange(undefined);
          this.deliverAuthorityChange();
        })
        .catch((error: unknown) => {
          if (this.#closed) return;
          logger.warn({ msg: 'entry change listener could not reconnect', err: error });
          this.scheduleReconnect();
        });
    }, this.#retryDelayMs);
    this.#retryTimer.unref();
  }

  private async check(): Promise<void> {
    const client = this.#client;
    if (client === undefined || this.#checking) return;
    this.#checking = true;
    try {
      const head = await headRevision(client);
      if (head > this.#lastRevision) this.deliver(head);
    } catch (error) {
      this.lost(client, error);
    } finally {
      this.#checking = false;
    }
  }
}

async function headRevision(client: pg.Client): Promise<number> {
  const result = await client.query<{ revision: string }>(HEAD_REVISION_SQL);
  return Number(result.rows[0]?.revision ?? 0);
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
