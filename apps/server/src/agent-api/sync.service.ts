import { Inject, Injectable, type BeforeApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import type { SvidIssuers } from '@sigil/agent-api';
import type { SpiffeJwks, TrustBundle } from '@sigil/spiffe';
import { AuthorityUsage } from '../ca/authority-usage.js';
import { BundleService } from '../bundle/bundle.service.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import type { CallingAgent } from './agent-request.js';
import { AuthorisedEntriesService } from './authorised-entries.service.js';
import type { AuthorisedDelta } from './entry-graph.js';

/** Longest a sync request is held waiting for a change. */
export const MAX_SYNC_WAIT_MS = 30_000;

/** A sync waiting for a change; `superseded` once a newer poll of the same agent took its place. */
interface LongPoll {
  superseded: boolean;
  wake: (() => void) | undefined;
}

export interface SyncRequest {
  /** Revision of the agent's last answer; 0 asks for everything. */
  readonly revision: number;
  /** `spiffe_sequence` of the bundle the agent holds; absent: the bundle counts as changed. */
  readonly bundleSequence?: number;
  /** How long to wait for a change when there is none (capped at {@link MAX_SYNC_WAIT_MS}). */
  readonly waitMs: number;
  /** The agent's report of the authorities that issued the SVIDs it holds (stored for `localauthority … revoke`). */
  readonly svidIssuers?: SvidIssuers | undefined;
}

export interface SyncResult {
  readonly delta: AuthorisedDelta;
  /** Our bundle, with `spiffe_sequence`. */
  readonly bundle: SpiffeJwks;
  /** Bundles of the trust domains the agent's entries federate with, by trust domain name (those we hold). */
  readonly federatedBundles: ReadonlyMap<string, SpiffeJwks>;
  /** Authority IDs of our tainted keys, loaded with the bundle. */
  readonly taintedAuthorities: readonly string[];
}

/**
 * The agent's sync: its authorised entries since a revision, and the bundles. A long-poll: when nothing changed for
 * the agent and its bundle is current, the request waits (up to the asked time) for the entry index or the bundle
 * to change, and answers at once when one does. At shutdown, waiting requests are answered right away. At most
 * `agent_max_long_polls` wait per agent: a further one answers the oldest at once (with what it would have answered
 * at its deadline), so an agent that restarts, or whose previous connection died unnoticed, is never locked out by
 * its own earlier poll, and an agent cannot hold more requests waiting.
 */
@Injectable()
export class SyncService implements OnModuleInit, BeforeApplicationShutdown {
  private readonly waiting = new Set<() => void>();
  /**
   * Federated bundles as last read, by trust domain (null: none stored), so that a sync answer reads the database
   * only for a trust domain no answer asked for since the last change of the index. Every change of a federated
   * bundle that an agent can see gives the entries federating with it a revision (FederationService), so a change
   * of the index drops the cache; `federatedGeneration` keeps a read that started before the drop from storing
   * what it read.
   */
  private readonly federatedCache = new Map<string, SpiffeJwks | null>();
  private federatedGeneration = 0;
  private unsubscribeIndex: (() => void) | undefined;
  /** Open long-polls by agent, oldest first. */
  private readonly polls = new Map<string, LongPoll[]>();
  private closing = false;

  constructor(
    private readonly index: AuthorisedEntriesService,
    private readonly bundles: BundleService,
    private readonly usage: AuthorityUsage,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'agentMaxLongPolls'>,
  ) {}

  onModuleInit(): void {
    this.unsubscribeIndex = this.index.onChange(() => {
      this.federatedGeneration += 1;
      this.federatedCache.clear();
    });
  }

  async sync(agent: CallingAgent, request: SyncRequest, signal?: AbortSignal): Promise<SyncResult> {
    const waitMs = Math.min(Math.max(request.waitMs, 0), MAX_SYNC_WAIT_MS);
    const deadline = Date.now() + waitMs;
    const poll = waitMs > 0 ? this.openPoll(agent.spiffeId) : undefined;
    try {
      if (request.svidIssuers !== undefined) await this.usage.report(agent.spiffeId, request.svidIssuers);
      return await this.syncUntil(agent, request, deadline, poll, signal);
    } finally {
      if (poll) this.closePoll(agent.spiffeId, poll);
    }
  }

  /** The number of long-polls open for the agent (tests, metrics). */
  openPolls(agentId: string): number {
    return this.polls.get(agentId)?.length ?? 0;
  }

  private async syncUntil(
    agent: CallingAgent,
    request: SyncRequest,
    deadline: number,
    poll: LongPoll | undefined,
    signal: AbortSignal | undefined,
  ): Promise<SyncResult> {
    // An agent that synced with a replica further ahead: catch up first, so its view never goes back.
    if (request.revision > this.index.revision) await this.index.refresh();
    for (;;) {
      const delta = this.index.deltaFor(agent, request.revision);
      const bundle = this.bundles.ownBundle();
      // From revision 0 the agent holds nothing, so a full answer is news only if it holds something; from an
      // older revision than the change log reaches, it must always resync.
      const entriesChanged = delta.full
        ? delta.entries.length > 0 || (request.revision !== 0 && request.revision !== delta.revision)
        : delta.entries.length > 0 || delta.deletedIds.length > 0;
      const changed = entriesChanged || (bundle.sequenceNumber ?? 0) !== request.bundleSequence;
      const remainingMs = deadline - Date.now();
      if (changed || remainingMs <= 0 || this.closing || signal?.aborted || poll?.superseded) {
        return this.answer(agent, delta, bundle);
      }
      await this.waitForChange(remainingMs, signal, poll);
    }
  }

  /** Registers a long-poll of the agent; the oldest ones beyond the cap are woken to answer at once. */
  private openPoll(agentId: string): LongPoll {
    const poll: LongPoll = { superseded: false, wake: undefined };
    const open = this.polls.get(agentId) ?? [];
    open.push(poll);
    this.polls.set(agentId, open);
    while (open.length > this.config.agentMaxLongPolls) {
      const oldest = open.shift()!;
      oldest.superseded = true;
      oldest.wake?.();
    }
    return poll;
  }

  private closePoll(agentId: string, poll: LongPoll): void {
    const open = this.polls.get(agentId);
    if (!open) return;
    const index = open.indexOf(poll);
    if (index !== -1) open.splice(index, 1);
    if (open.length === 0) this.polls.delete(agentId);
  }

  beforeApplicationShutdown(): void {
    this.unsubscribeIndex?.();
    this.closing = true;
    for (const wake of [...this.waiting]) wake();
  }

  private async answer(agent: CallingAgent, delta: AuthorisedDelta, bundle: TrustBundle): Promise<SyncResult> {
    const federatesWith = new Set<string>();
    for (const entry of this.index.authorisedFor(agent).values()) {
      for (const trustDomain of entry.federatesWith) federatesWith.add(trustDomain);
    }
    return {
      delta,
      bundle: bundle.toJwks(),
      federatedBundles: await this.federatedBundles([...federatesWith].sort()),
      taintedAuthorities: this.bundles.ownTaintedAuthorities(),
    };
  }

  /** The stored bundles of these trust domains (those that have one), from the cache or else the database. */
  private async federatedBundles(trustDomains: readonly string[]): Promise<Map<string, SpiffeJwks>> {
    const missing = trustDomains.filter((trustDomain) => !this.federatedCache.has(trustDomain));
    if (missing.length > 0) {
      const generation = this.federatedGeneration;
      const read = await this.bundles.federatedJwks(missing);
      if (generation === this.federatedGeneration) {
        for (const trustDomain of missing) this.federatedCache.set(trustDomain, read.get(trustDomain) ?? null);
      }
      return this.collect(trustDomains, read);
    }
    return this.collect(trustDomains, new Map());
  }

  private collect(trustDomains: readonly string[], read: ReadonlyMap<string, SpiffeJwks>): Map<string, SpiffeJwks> {
    const found = new Map<string, SpiffeJwks>();
    for (const trustDomain of trustDomains) {
      const jwks = read.get(trustDomain) ?? this.federatedCache.get(trustDomain);
      if (jwks) found.set(trustDomain, jwks);
    }
    return found;
  }

  /**
   * Resolves on the first change of the index or of our bundle, after `timeoutMs`, on abort, at shutdown or when a
   * newer poll supersedes this one.
   */
  private waitForChange(timeoutMs: number, signal: AbortSignal | undefined, poll: LongPoll | undefined): Promise<void> {
    return new Promise((resolve) => {
      const cleanups: (() => void)[] = [];
      const wake = (): void => {
        for (const cleanup of cleanups) cleanup();
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      cleanups.push(
        () => clearTimeout(timer),
        this.index.onChange(wake),
        this.bundles.onOwnBundleChange(wake),
        () => this.waiting.delete(wake),
      );
      this.waiting.add(wake);
      if (poll) {
        poll.wake = wake;
        cleanups.push(() => (poll.wake = undefined));
      }
      if (signal) {
        signal.addEventListener('abort', wake, { once: true });
        cleanups.push(() => signal.removeEventListener('abort', wake));
      }
    });
  }
}
