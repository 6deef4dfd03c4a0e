import { type ContextLogger } from '@sigil/logging';
import { type TrustBundle } from '@sigil/spiffe';
import { type SvidIssuers } from '@sigil/agent-api';
import { type AgentApi } from '../client/agent-api.js';
import { AgentApiError } from '../client/server-client.js';
import { Backoff, sleep } from '../common/backoff.js';
import { type SvidCache } from './svid-cache.js';
import { type SvidRotator } from './svid-rotator.js';

export interface EntrySyncOptions {
  /** How long the server may hold a sync open when nothing changed (default 25 s; the server caps it at 30 s). */
  readonly waitMs?: number;
  /** Called after the bundle of our trust domain changed (the agent manager persists it). */
  readonly onOwnBundle?: (bundle: TrustBundle) => void | Promise<void>;
  /** Called when the server refuses the agent itself (401/403). */
  readonly onAgentRefused?: (error: AgentApiError) => void;
  /** Called after each successful sync (readiness, tests). */
  readonly onSynced?: (revision: number) => void;
  /** Called after each failed sync (metrics). */
  readonly onSyncFailed?: (error: unknown) => void;
  /**
   * The authorities that issued the SVIDs the agent holds, with the latest expiry under each: sent with every sync,
   * the server keeps it for `localauthority … revoke`.
   */
  readonly svidIssuers?: () => SvidIssuers;
  /** Called after each sync with the server's tainted authority IDs (the agent manager renews its own SVID). */
  readonly onTainted?: (tainted: ReadonlySet<string>) => void;
  readonly backoff?: Backoff;
  readonly logger?: Pick<ContextLogger, 'warn' | 'log' | 'debug'>;
}

/** Shortest time between two polls whose answers brought nothing, and between two polls restarted to report. */
const MIN_EMPTY_POLL_MS = 1000;

/** The authority IDs of a report, comparable: only a change of them restarts a waiting poll. */
function issuerIds(issuers: SvidIssuers | undefined): string {
  return issuers === undefined ? '' : [...issuers.keys()].sort().join(',');
}

/**
 * The long-poll sync loop: asks the server for the changes of authorised entries since the last revision it saw
 * (and the bundle, when its sequence moved), holding the request open until something changes, so a new entry
 * reaches the cache, and a signing pass, as soon as the server knows of it. Errors back off with jitter; the
 * cache keeps serving meanwhile.
 */
export class EntrySync {
  private revision = 0;
  private readonly waitMs: number;
  private readonly backoff: Backoff;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private running = false;
  /** Aborts the poll in flight only, to send a new report at once. */
  private pollAbort: AbortController | undefined;
  private sentIssuerIds = '';
  private restarting = false;

  constructor(
    private readonly api: Pick<AgentApi, 'sync'>,
    private readonly cache: SvidCache,
    private readonly rotator: SvidRotator,
    private readonly options: EntrySyncOptions = {},
  ) {
    this.waitMs = options.waitMs ?? 25_000;
    // Capped low: after a server outage the first poll that gets through is what brings the agent up to date.
    this.backoff = options.backoff ?? new Backoff(500, 10_000);
  }

  /** The revision of the last sync applied. */
  get lastRevision(): number {
    return this.revision;
  }

  start(): void {
    this.loop ??= this.run().finally(() => {
      this.running = false;
    });
    this.running = true;
  }

  /** True from {@link start} until the loop has ended (stopped, or broken by a bug): the agent's liveness. */
  get isRunning(): boolean {
    return this.running;
  }

  /** Ends the loop (an open long poll is aborted) and waits for it. */
  async stop(): Promise<void> {
    this.abort.abort(new Error('the agent is stopping'));
    await this.loop;
  }

  /**
   * The SVIDs held may have changed (a rotation pass, the agent SVID renewed): when the authorities that issued them
   * differ from those the waiting poll reported, that poll is abandoned and a new one sent, so the server learns at
   * once that an authority is no longer in use (`localauthority … revoke` waits for it). At most one restart a second.
   */
  reportChanged(): void {
    const poll = this.pollAbort;
    if (poll === undefined || this.restarting || this.options.svidIssuers === undefined) return;
    if (issuerIds(this.options.svidIssuers()) === this.sentIssuerIds) return;
    this.restarting = true;
    poll.abort(new Error('the SVIDs held changed issuers, reporting them'));
  }

  /** One sync, without waiting on the server (the first one, before the Workload API opens). */
  async syncOnce(waitMs = 0): Promise<void> {
    await this.syncAndApply(waitMs);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    // The first sync never waits: the agent knows nothing yet, and a registry with nothing for it (or a server whose
    // answer would be "no change") would otherwise hold the first answer, and "serving identities", for a whole poll.
    let synced = false;
    while (!signal.aborted) {
      try {
        const startedAt = Date.now();
        const changed = await this.syncAndApply(synced ? this.waitMs : 0);
        synced = true;
        this.backoff.reset();
        // A server that answers at once with nothing new (it should have held the poll) must not make us spin.
        if (!changed && Date.now() - startedAt < MIN_EMPTY_POLL_MS) await sleep(MIN_EMPTY_POLL_MS, signal);
      } catch (error) {
        if (signal.aborted) break;
        if (this.restarting) {
          this.restarting = false;
          await sleep(MIN_EMPTY_POLL_MS, signal).catch(() => undefined);
          continue;
        }
        this.options.onSyncFailed?.(error);
        if (error instanceof AgentApiError && error.isAgentRefused()) this.options.onAgentRefused?.(error);
        const delay = this.backoff.next();
        this.options.logger?.warn({
          msg: 'entry sync failed, will retry',
          retryInMs: delay,
          reason: (error as Error).message,
        });
        await sleep(delay, signal).catch(() => undefined);
      }
    }
  }

  /** Returns whether the answer changed anything. */
  private async syncAndApply(waitMs: number): Promise<boolean> {
    const svidIssuers = this.options.svidIssuers?.();
    this.sentIssuerIds = issuerIds(svidIssuers);
    const poll = new AbortController();
    this.pollAbort = poll;
    let sync;
    try {
      sync = await this.api.sync(
        {
          revision: this.revision,
          bundleSequence: this.cache.ownBundleSequence(),
          waitMs,
          ...(svidIssuers !== undefined && { svidIssuers }),
        },
        AbortSignal.any([this.abort.signal, poll.signal]),
      );
    } finally {
      this.pollAbort = undefined;
    }
    // An answer that arrived as the restart was asked for is applied: the next poll carries the new report.
    this.restarting = false;
    const { changed, ownBundleChanged } = this.cache.applySync(sync);
    this.revision = sync.revision;
    this.options.logger?.debug({
      msg: 'entries synced',
      revision: sync.revision,
      full: sync.full,
      changed: sync.entries.length,
      deleted: sync.deletedIds.length,
    });
    if (ownBundleChanged) {
      this.options.logger?.log({ msg: 'trust bundle updated', sequence: sync.bundle.sequenceNumber });
      await this.options.onOwnBundle?.(sync.bundle);
    }
    this.options.onTainted?.(this.cache.taintedAuthorities());
    this.rotator.schedule();
    this.options.onSynced?.(sync.revision);
    return changed;
  }
}
