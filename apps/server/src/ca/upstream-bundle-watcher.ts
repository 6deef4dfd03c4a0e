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
import {
  type Backoff,
  ExponentialBackoff,
  type TrustBundleSet,
  WorkloadApiClient,
  type WorkloadApiError,
} from '@sigil/workload-api';
import { CLOCK, type Clock } from '../common/clock.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { AUTHORITY_METRICS, noAuthorityMetrics, type AuthorityMetrics } from './authority-metrics.js';
import { KeyManager } from './key-manager.js';
import type { UpstreamAuthoritiesChange } from './upstream-authorities.js';

/** What the watcher needs of the key journal: {@link KeyManager.followUpstreamAuthorities}. */
export interface UpstreamAuthoritiesStore {
  followUpstreamAuthorities(roots: readonly Uint8Array[]): Promise<UpstreamAuthoritiesChange>;
}

/** How long to wait before watching again after the Workload API refused the watch for good (`unimplemented`). */
const REWATCH_DELAY_MS = 30_000;

/**
 * Upstream authority sigil, live: watches the local (top trust domain's) agent's Workload API X.509 bundle stream
 * (`FetchX509Bundles`) on `upstream_agent_socket`, the same kernel-attested socket the CA signing path gets its
 * X509-SVID from, and publishes every change of our trust domain's roots at once through the key journal
 * ({@link KeyManager.followUpstreamAuthorities}), so every replica and agent of this server follows. As SPIRE's
 * `spire` upstream authority streams its upstream bundle (there by polling the upstream server every 5 s; here the
 * agent pushes). A failure never drops roots: the stream reconnects with backoff (1 s doubling to 30 s), a bundle
 * that cannot be used is skipped, a failed store is retried with backoff, and the last good roots stay published;
 * each failure is logged and counted (`sigil_upstream_bundle_failures_total{reason}`).
 */
@Injectable()
export class UpstreamBundleWatcher implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger(UpstreamBundleWatcher.name);
  private client: WorkloadApiClient | undefined;
  private watching: Promise<void> | undefined;
  private readonly closing = new AbortController();
  /** The latest usable root set (DER) not yet stored. */
  private pending: readonly Uint8Array[] | undefined;
  /** The root set last stored (base64 DER, sorted), so an unchanged delivery takes no lock. */
  private applied: string | undefined;
  private draining: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private readonly storeBackoff: Backoff = new ExponentialBackoff();

  constructor(
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain' | 'upstreamSigil'>,
    @Inject(KeyManager) private readonly store: UpstreamAuthoritiesStore,
    @Inject(CLOCK) private readonly clock: Clock,
    @Optional() @Inject(AUTHORITY_METRICS) private readonly metrics: AuthorityMetrics = noAuthorityMetrics,
  ) {}

  onApplicationBootstrap(): void {
    const upstream = this.config.upstreamSigil;
    if (upstream === undefined) return;
    this.client = new WorkloadApiClient({ address: `unix://${upstream.agentSocket}` });
    this.watching = this.watch(this.client);
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.closing.abort();
    clearTimeout(this.retry);
    await this.client?.close();
    await this.watching;
    await this.draining;
  }

  /**
   * Takes one delivery of the Workload API: our trust domain's X.509 authorities, when usable, become the roots to
   * publish (stored at once, or after the store in progress); an unusable delivery is counted and skipped.
   */
  receive(bundles: TrustBundleSet): Promise<void> {
    const roots = this.usableRoots(bundles);
    if (roots === undefined) return this.draining ?? Promise.resolve();
    this.pending = roots;
    clearTimeout(this.retry);
    this.retry = undefined;
    return this.drain();
  }

  private async watch(client: WorkloadApiClient): Promise<void> {
    const { signal } = this.closing;
    while (!signal.aborted) {
      try {
        await client.watchX509Bundles(
          (bundles) => void this.receive(bundles),
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
      msg: "upstream bundle: the local agent's Workload API stream failed; retrying, the last good roots stay published",
      upstreamAgentSocket: this.config.upstreamSigil?.agentSocket,
      err: truncateForLog(error.message),
    });
  }

  /** Our trust domain's roots from `bundles`, or undefined (counted and logged) when there are none to publish. */
  private usableRoots(bundles: TrustBundleSet): Uint8Array[] | undefined {
    const refuse = (problem: string): undefined => {
      this.metrics.upstreamBundleFailed('bundle');
      this.logger.warn({
        msg: `upstream bundle: ${problem}; the last good roots stay published`,
        trustDomain: this.config.trustDomain.name,
      });
      return undefined;
    };
    const bundle = bundles.get(this.config.trustDomain);
    if (bundle === undefined) return refuse(`the Workload API sent no bundle of ${this.config.trustDomain.name}`);
    const roots = bundle.x509AuthoritiesDer();
    const now = this.clock.now().getTime();
    let unexpired = 0;
    for (const [index, der] of roots.entries()) {
      let validTo: number;
      try {
        validTo = new Date(nodeCertificateFromDer(der).validTo).getTime();
      } catch (error) {
        return refuse(`x509 authority ${index} cannot be read: ${truncateForLog((error as Error).message)}`);
      }
      if (now < validTo) unexpired += 1;
    }
    if (unexpired === 0)
      return refuse(`the bundle of ${this.config.trustDomain.name} holds no unexpired X.509 authority`);
    return roots;
  }

  private drain(): Promise<void> {
    this.draining ??= this.storePending().finally(() => (this.draining = undefined));
    return this.draining;
  }

  private async storePending(): Promise<void> {
    while (this.pending !== undefined && !this.closing.signal.aborted) {
      const roots = this.pending;
      this.pending = undefined;
      const key = roots
        .map((der) => Buffer.from(der).toString('base64'))
        .sort()
        .join(',');
      if (key === this.applied) continue;
      try {
        const change = await this.store.followUpstreamAuthorities(roots);
        this.applied = key;
        this.storeBackoff.reset();
        this.followed(change);
      } catch (error) {
        this.metrics.upstreamBundleFailed('store');
        const retryMs = this.storeBackoff.next();
        this.logger.error({
          msg: 'upstream bundle: storing the new roots failed; the last good roots stay published',
          retryMs,
          err: error,
        });
        // A newer delivery meanwhile is stored next; else this set is tried again after the backoff.
        if (this.pending === undefined) {
          this.retry = setTimeout(() => {
            this.retry = undefined;
            this.pending ??= roots;
            void this.drain();
          }, retryMs);
          this.retry.unref();
          return;
        }
      }
    }
  }

  private followed(change: UpstreamAuthoritiesChange): void {
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
    if (change.orphaned.length > 0) {
      this.logger.error({
        msg:
          'upstream bundle: the top trust domain no longer trusts the root these X.509 authorities chain to, so what they sign no longer verifies; ' +
          'prepare and activate a new key (localauthority x509 prepare, then activate)',
        authorityIds: change.orphaned,
      });
    }
  }
}
