import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  Optional,
} from '@nestjs/common';
import { truncateForLog } from '@sigil/logging';
import { nodeCertificateFromDer } from '@sigil/spiffe';
import { WorkloadApiClient, type WorkloadApiError } from '@sigil/workload-api';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { AuthorityKeyFactory } from './authority-key.factory.js';
import { AUTHORITY_METRICS, noAuthorityMetrics, type AuthorityMetrics } from './authority-metrics.js';
import type { SharedJwtAuthority } from '../downstream/downstream-contract.js';
import { KeyManager, type UpstreamFollowChange } from './key-manager.js';
import type { UpstreamAuthorities } from './upstream-sigil.js';

/** What the watcher needs of the key journal ({@link KeyManager}). */
export interface UpstreamAuthoritiesStore {
  /** The upstream roots stored, which the upstream server must chain to; empty before the first upstream-signed key. */
  storedUpstreamAuthorities(): readonly Uint8Array[];
  followUpstreamAuthorities(
    roots: readonly Uint8Array[],
    jwtAuthorities?: readonly SharedJwtAuthority[],
  ): Promise<UpstreamFollowChange>;
}

/** What the watcher needs of the upstream server ({@link AuthorityKeyFactory.upstreamAuthorities}). */
export interface UpstreamRootsSource {
  upstreamAuthorities(trusted: readonly Uint8Array[], now: Date): Promise<UpstreamAuthorities>;
}

/**
 * How often the upstream server is asked for its roots besides the agent's bundle stream (SPIRE's `spire` upstream
 * authority polls every 5 s). Each ask costs an SVID fetch and an mTLS handshake with the upstream server, and a new
 * upstream root is published there at the upstream key's preparation, hours before it signs anything, so 10 s is
 * ample; the stream makes the usual change arrive sooner.
 */
export const UPSTREAM_POLL_INTERVAL_MS = 10_000;
/** How long to wait before watching again after the Workload API refused the watch for good (`unimplemented`). */
const REWATCH_DELAY_MS = 30_000;

/**
 * Upstream authority sigil, live: follows the top trust domain's roots into ours through the key journal
 * ({@link KeyManager.followUpstreamAuthorities}), so every replica and agent of this server follows. The roots come
 * from the upstream server over mTLS (`GET /downstream/v1/x509-authorities`), its certificate verified against the
 * upstream roots we already store; the local agent's Workload API bundle stream on `upstream_agent_socket` is only a
 * trigger (its content is not used: whoever answers on that socket cannot choose our roots), besides a poll every
 * {@link UPSTREAM_POLL_INTERVAL_MS}. A failure never drops roots: the last good roots stay published, the next
 * trigger asks again; a set that breaks the root rules or drops the root our active or prepared key chains to is
 * refused. Each failure is logged and counted (`sigil_upstream_bundle_failures_total{reason}`).
 */
@Injectable()
export class UpstreamBundleWatcher implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(UpstreamBundleWatcher.name);
  private client: WorkloadApiClient | undefined;
  private watching: Promise<void> | undefined;
  private poll: NodeJS.Timeout | undefined;
  private readonly closing = new AbortController();
  /** The refresh in progress, and whether another was asked for meanwhile. */
  private running: Promise<void> | undefined;
  private again = false;
  /** The root set last stored (base64 DER, sorted), so an unchanged answer takes no lock. */
  private applied: string | undefined;

  constructor(
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain' | 'upstreamSigil'>,
    @Inject(KeyManager) private readonly store: UpstreamAuthoritiesStore,
    @Inject(AuthorityKeyFactory) private readonly upstream: UpstreamRootsSource,
    @Inject(CLOCK) private readonly clock: Clock,
    @Optional() @Inject(AUTHORITY_METRICS) private readonly metrics: AuthorityMetrics = noAuthorityMetrics,
  ) {}

  onApplicationBootstrap(): void {
    const upstream = this.config.upstreamSigil;
    if (upstream === undefined) return;
    this.client = new WorkloadApiClient({ address: `unix://${upstream.agentSocket}` });
    this.watching = this.watch(this.client);
    this.poll = setInterval(() => void this.refresh(), UPSTREAM_POLL_INTERVAL_MS);
    this.poll.unref();
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.closing.abort();
    clearInterval(this.poll);
    await this.client?.close();
    await this.watching;
    await this.running;
  }

  /**
   * Asks the upstream server for its roots and stores them when they changed (after the refresh in progress, if
   * any). Resolves when done; never rejects (a failure is logged and counted).
   */
  refresh(): Promise<void> {
    if (this.running !== undefined) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.refreshOnce();
      } while (this.again && !this.closing.signal.aborted);
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  private async refreshOnce(): Promise<void> {
    if (this.closing.signal.aborted) return;
    // Nothing stored yet: no key to follow for, and nothing to authenticate the upstream server with.
    const trusted = this.store.storedUpstreamAuthorities();
    if (trusted.length === 0) return;
    let answer: UpstreamAuthorities;
    try {
      answer = await this.upstream.upstreamAuthorities(trusted, this.clock.now());
    } catch (error) {
      this.failed('upstream', 'could not get the roots from the upstream server', error);
      return;
    }
    const roots = answer.x509Authorities;
    const jwt = answer.jwtAuthorities;
    const key = [
      roots
        .map((der) => Buffer.from(der).toString('base64'))
        .sort()
        .join(','),
      jwt === undefined
        ? '-'
        : jwt
            .map((each) => `${each.kid}:${each.publicKeyDer.toString('base64')}:${each.notAfter.getTime()}`)
            .sort()
            .join(','),
    ].join('|');
    if (key === this.applied) {
      this.metrics.upstreamBundleFollowed(this.clock.now(), false);
      return;
    }
    try {
      const change = await this.store.followUpstreamAuthorities(roots, jwt);
      this.applied = key;
      this.followed(change);
    } catch (error) {
      if (error instanceof AppError && (error.kind === 'invalid_argument' || error.kind === 'failed_precondition')) {
        this.failed('refused', "refused the upstream server's roots", error);
      } else {
        this.failed('store', 'storing the new roots failed', error);
      }
    }
  }

  private failed(reason: 'upstream' | 'refused' | 'store', what: string, error: unknown): void {
    this.metrics.upstreamBundleFailed(reason);
    const log = { msg: `upstream bundle: ${what}; the last good roots stay published`, err: error };
    if (reason === 'upstream') this.logger.warn(log);
    else this.logger.error(log);
  }

  private async watch(client: WorkloadApiClient): Promise<void> {
    const { signal } = this.closing;
    while (!signal.aborted) {
      try {
        // Any delivery is a hint that the roots may have changed; its content is not trusted.
        await client.watchX509Bundles(
          () => void this.refresh(),
          (error) => this.streamFailed(error),
          { signal },
        );
      } catch (error) {
        if (signal.aborted) return;
        // Not retried by the client (`invalid_argument`, `unimplemented`): try again later rather than never.
        this.streamFailed(error as WorkloadApiError);
        await sleep(REWATCH_DELAY_MS, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  private streamFailed(error: WorkloadApiError): void {
    if (this.closing.signal.aborted) return;
    this.metrics.upstreamBundleFailed('stream');
    this.logger.warn({
      msg:
        "upstream bundle: the local agent's Workload API stream failed; the upstream server is still asked every " +
        `${UPSTREAM_POLL_INTERVAL_MS / 1000} s`,
      upstreamAgentSocket: this.config.upstreamSigil?.agentSocket,
      err: truncateForLog(error.message),
    });
  }

  private followed(change: UpstreamFollowChange): void {
    if (change.jwtAdded.length > 0 || change.jwtRemoved.length > 0) {
      this.logger.log({
        msg: "upstream bundle: the top trust domain's JWT authorities changed; published",
        added: change.jwtAdded,
        removed: change.jwtRemoved,
      });
    }
    const changed = change.added.length > 0 || change.removed.length > 0;
    this.metrics.upstreamBundleFollowed(this.clock.now(), changed);
    if (changed) {
      const fingerprints = (roots: readonly string[]) =>
        roots.map((root) => nodeCertificateFromDer(Buffer.from(root, 'base64')).fingerprint256);
      this.logger.log({
        msg: "upstream bundle: the top trust domain's roots changed; published",
        added: fingerprints(change.added),
        removed: fingerprints(change.removed),
      });
    }
  }
}
