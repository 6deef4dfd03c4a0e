import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { sigilServerId } from '@sigil/runtime';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { EntryChangeLogService } from '../entries/entry-change-log.service.js';
import type { Entry } from '../entries/entry.js';
import { EntryGraph, type AgentIdentity, type AuthorisedDelta } from './entry-graph.js';

/** Revisions read per change-log query while catching up. */
const CHANGES_PAGE = 5_000;
/**
 * Change notifications are hints that can be lost (a dropped LISTEN connection, a database that does not deliver
 * them across connections); this cheap check of the change log bounds how stale the index can get.
 */
export const INDEX_SAFETY_POLL_MS = 5_000;
/** Agents whose authorised set is kept between requests. */
const MAX_CACHED_AGENTS = 10_000;

interface CachedAuthorisation {
  readonly revision: number;
  readonly selectorsKey: string;
  readonly entries: Map<string, Entry>;
}

/**
 * This replica's in-memory index of the registry, kept current from the change log (`listChangesSince` deltas,
 * woken by the change notifier; a snapshot only at start or when the log no longer reaches back), and the entries
 * each agent is authorised for. A request costs the agent's share of the index, never a database read.
 */
@Injectable()
export class AuthorisedEntriesService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger(AuthorisedEntriesService.name);
  private readonly graph: EntryGraph;
  private readonly listeners = new Set<() => void>();
  private readonly cache = new Map<string, CachedAuthorisation>();
  private unsubscribe: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;

  constructor(
    private readonly changeLog: EntryChangeLogService,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'trustDomain'>,
  ) {
    this.graph = new EntryGraph(sigilServerId(config.trustDomain).toString());
  }

  async onModuleInit(): Promise<void> {
    this.unsubscribe = this.changeLog.subscribe((revision) => {
      if (revision > this.graph.revision) this.refreshInBackground();
    });
    this.graph.load(await this.changeLog.snapshot());
    // Picks up what committed between subscribing and the snapshot.
    await this.refresh();
    this.logger.log({ msg: 'entry index loaded', revision: this.graph.revision, entries: this.graph.size });
    this.timer = setInterval(() => this.refreshInBackground(), INDEX_SAFETY_POLL_MS);
    this.timer.unref();
  }

  onApplicationShutdown(): void {
    this.unsubscribe?.();
    clearInterval(this.timer);
    this.listeners.clear();
  }

  /** The registry revision the index reflects. */
  get revision(): number {
    return this.graph.revision;
  }

  /** Calls `listener` after each change of the index; returns the unsubscriber. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Brings the index up to the registry's head. Concurrent callers share one run; a call during a run makes it go
   * round once more, so a change announced meanwhile is not missed.
   */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.refreshAgain = false;
          await this.catchUp();
        } while (this.refreshAgain);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** The entries authorised for the agent now, by id (cached until the index or the agent's selectors change). */
  authorisedFor(agent: AgentIdentity): ReadonlyMap<string, Entry> {
    const selectorsKey = [...agent.nodeSelectors].sort().join('\n');
    const cached = this.cache.get(agent.spiffeId);
    if (cached && cached.revision === this.graph.revision && cached.selectorsKey === selectorsKey) {
      return cached.entries;
    }
    const entries = this.graph.authorised(agent);
    this.cache.delete(agent.spiffeId);
    this.cache.set(agent.spiffeId, { revision: this.graph.revision, selectorsKey, entries });
    if (this.cache.size > MAX_CACHED_AGENTS) this.cache.delete(this.cache.keys().next().value!);
    return entries;
  }

  /**
   * {@link EntryGraph.isAdmin} on this replica's index, which follows every entry change (notified at once, and
   * checked every {@link INDEX_SAFETY_POLL_MS} at most), on every replica alike.
   */
  isAdmin(spiffeId: string, now: Date): boolean {
    return this.graph.isAdmin(spiffeId, now);
  }

  /** {@link EntryGraph.isDownstream} on this replica's index (kept current as for {@link isAdmin}). */
  isDownstream(spiffeId: string, now: Date): boolean {
    return this.graph.isDownstream(spiffeId, now);
  }

  /** What changed for the agent since `sinceRevision` (see {@link EntryGraph.deltaSince}). */
  deltaFor(agent: AgentIdentity, sinceRevision: number): AuthorisedDelta {
    return this.graph.deltaSince(agent, sinceRevision, this.authorisedFor(agent));
  }

  private refreshInBackground(): void {
    this.refresh().catch((error: unknown) =>
      this.logger.warn({ msg: 'entry index refresh failed; retrying on the next change', err: error }),
    );
  }

  private async catchUp(): Promise<void> {
    const start = this.graph.revision;
    let reloaded = false;
    for (;;) {
      const changes = await this.changeLog.listChangesSince(this.graph.revision, { limit: CHANGES_PAGE });
      if (changes.resyncRequired) {
        if (reloaded) break;
        this.logger.warn({ msg: 'entry change log no longer reaches the index; reloading', revision: start });
        this.graph.load(await this.changeLog.snapshot());
        reloaded = true;
        continue;
      }
      this.graph.apply(changes);
      if (!changes.more) break;
    }
    if (reloaded || this.graph.revision !== start) {
      for (const listener of [...this.listeners]) listener();
    }
  }
}
