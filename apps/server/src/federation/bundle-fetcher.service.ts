import { readFile } from 'node:fs/promises';
import {
  Inject,
  Injectable,
  Logger,
  Optional,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { RateLimitedLog, truncateForLog } from '@sigil/logging';
import type { TrustBundle } from '@sigil/spiffe';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { BundleFetchError, type BundleEndpointTrust, fetchFederatedBundle } from './bundle-endpoint-client.js';
import { parseFederatedTrustDomain } from './federated-bundle-rules.js';
import { FEDERATION_METRICS, type FederationMetrics, noFederationMetrics } from './federation-metrics.js';
import { FederationService } from './federation.service.js';
import {
  FederationRelationshipsRepository,
  type StoredFederationRelationship,
} from './federation-relationships.repository.js';

/** When the fetcher fetches again (README, Federation). */
export const BUNDLE_REFRESH = {
  /** SPIRE fetches four times per `spiffe_refresh_hint`, so one failed attempt does not leave the bundle stale. */
  attemptsPerRefreshHint: 4,
  /** A bundle without `spiffe_refresh_hint` is fetched this often (SPIRE's default refresh interval). */
  defaultIntervalSeconds: 300,
  /** Never more often than this after a success, whatever the hint says. */
  minIntervalSeconds: 5,
  /** Never less often than this after a success (a hint may be up to a week). */
  maxIntervalSeconds: 3600,
  /** The first retry after a failure; it doubles with each further failure, up to the interval after a success. */
  firstRetrySeconds: 5,
  /** How often the relationships are read again (SPIRE's config refresh interval). */
  relationshipsReloadMs: 10_000,
  /** How often the schedule is checked. */
  tickMs: 1_000,
} as const;

/** What one fetch came to. */
export interface BundleRefreshResult {
  readonly trustDomain: string;
  /** True when the fetched bundle differed from the stored one and was stored. */
  readonly changed: boolean;
  /** The stored bundle after the fetch. */
  readonly bundle: TrustBundle;
}

interface Schedule {
  relationship: StoredFederationRelationship;
  nextAt: number;
  failures: number;
}

/**
 * Fetches each federated trust domain's bundle from the bundle endpoint of its federation relationship (SPIRE's
 * bundle client, `pkg/server/bundle/client`), and stores it when it changed, which reaches the agents like
 * `bundle set`. The next fetch follows the bundle's `spiffe_refresh_hint` within {@link BUNDLE_REFRESH}; failures
 * retry with doubling backoff, keep the last good bundle, and are counted and logged (rate-limited). Every replica
 * fetches on its own schedule (as every SPIRE server does); a replica writes only a bundle that differs from the
 * stored one, so replicas agreeing on the endpoint's answer write it once (or, racing, twice with the same contents).
 */
@Injectable()
export class BundleFetcherService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(BundleFetcherService.name);
  private readonly log = new RateLimitedLog(this.logger);
  private readonly schedules = new Map<string, Schedule>();
  private readonly inFlight = new Map<string, Promise<BundleRefreshResult>>();
  private timer: NodeJS.Timeout | undefined;
  private reloadedAt = Number.NEGATIVE_INFINITY;
  private ticking: Promise<void> | undefined;
  private readonly webCaFile: string | undefined;

  constructor(
    private readonly relationships: FederationRelationshipsRepository,
    private readonly bundles: BundleService,
    private readonly federation: FederationService,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'federationWebCaFile'>,
    @Optional() @Inject(FEDERATION_METRICS) private readonly metrics: FederationMetrics = noFederationMetrics,
  ) {
    this.webCaFile = config.federationWebCaFile;
  }

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    }, BUNDLE_REFRESH.tickMs);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    this.log.close();
    await this.ticking;
    await Promise.allSettled(this.inFlight.values());
  }

  /**
   * Fetches `trustDomain`'s bundle now (SPIRE's `federation refresh`), whatever its schedule, and reschedules it.
   *
   * @throws AppError `not_found` without a relationship, `unavailable` when the fetch fails (the stored bundle
   * stays).
   */
  async refresh(trustDomain: string): Promise<BundleRefreshResult> {
    const name = parseFederatedTrustDomain(trustDomain).name;
    const relationship = await this.relationships.find(name);
    if (relationship === undefined) {
      throw new AppError('not_found', `no federation relationship for trust domain ${name}`);
    }
    const schedule = this.scheduleOf(relationship);
    try {
      return await this.fetchOnce(schedule);
    } catch (error) {
      if (error instanceof BundleFetchError || error instanceof AppError) {
        throw new AppError(
          'unavailable',
          `trust domain ${name}: bundle not refreshed from ${relationship.bundleEndpointUrl}: ${error.message}; the stored bundle is kept`,
        );
      }
      throw error;
    }
  }

  /** One pass: reads the relationships again when due, then fetches every bundle whose time has come. */
  async tick(): Promise<void> {
    const now = this.clock.now().getTime();
    try {
      if (now - this.reloadedAt >= BUNDLE_REFRESH.relationshipsReloadMs) {
        const relationships = await this.relationships.list();
        this.reloadedAt = now;
        const names = new Set(relationships.map((relationship) => relationship.trustDomain.name));
        for (const name of this.schedules.keys()) if (!names.has(name)) this.schedules.delete(name);
        for (const relationship of relationships) this.scheduleOf(relationship);
      }
    } catch (error) {
      this.log.warn('federation-relationships-unreadable', {
        msg: 'federation relationships could not be read; bundles are fetched on the last known schedule',
        err: truncateForLog((error as Error).message),
      });
    }
    for (const schedule of this.schedules.values()) {
      if (schedule.nextAt <= now && !this.inFlight.has(schedule.relationship.trustDomain.name)) {
        void this.fetchOnce(schedule).catch(() => undefined);
      }
    }
  }

  /** The schedule of `relationship`, created (due now) or updated: a changed relationship is due now. */
  private scheduleOf(relationship: StoredFederationRelationship): Schedule {
    const name = relationship.trustDomain.name;
    const known = this.schedules.get(name);
    if (known !== undefined && sameSettings(known.relationship, relationship)) return known;
    const schedule: Schedule = { relationship, nextAt: this.clock.now().getTime(), failures: 0 };
    this.schedules.set(name, schedule);
    return schedule;
  }

  private fetchOnce(schedule: Schedule): Promise<BundleRefreshResult> {
    const name = schedule.relationship.trustDomain.name;
    const running = this.inFlight.get(name);
    if (running !== undefined) return running;
    const fetching = this.fetchAndStore(schedule).finally(() => this.inFlight.delete(name));
    this.inFlight.set(name, fetching);
    return fetching;
  }

  private async fetchAndStore(schedule: Schedule): Promise<BundleRefreshResult> {
    const { relationship } = schedule;
    const name = relationship.trustDomain.name;
    try {
      const fetched = await fetchFederatedBundle(relationship, await this.trustFor(relationship), {
        now: () => this.clock.now(),
      });
      const stored = await this.federation.storeFetched(fetched);
      const now = this.clock.now();
      schedule.failures = 0;
      schedule.nextAt = now.getTime() + intervalAfterSuccess(fetched.refreshHintSeconds) * 1000;
      this.metrics.bundleFetched(name, now, stored !== undefined);
      if (stored !== undefined) {
        this.log.log(`federated-bundle-changed:${name}`, {
          msg: 'federated bundle fetched from its bundle endpoint and changed',
          trustDomain: name,
          sequence: stored.bundle.sequenceNumber,
          bundleEndpointUrl: relationship.bundleEndpointUrl,
        });
      }
      return { trustDomain: name, changed: stored !== undefined, bundle: stored?.bundle ?? fetched };
    } catch (error) {
      schedule.failures += 1;
      const retryIn = retryAfterFailure(schedule.failures);
      schedule.nextAt = this.clock.now().getTime() + retryIn * 1000;
      const reason = error instanceof BundleFetchError ? error.reason : 'store';
      this.metrics.bundleFetchFailed(name, error instanceof BundleFetchError ? error.reason : 'store');
      this.log.warn(`federated-bundle-fetch-failed:${name}`, {
        msg: 'federated bundle fetch failed; the last good bundle is kept',
        trustDomain: name,
        bundleEndpointUrl: relationship.bundleEndpointUrl,
        reason,
        err: truncateForLog((error as Error).message),
        failures: schedule.failures,
        retryInSeconds: retryIn,
      });
      throw error;
    }
  }

  /** The profile's trust anchors: the extra WebPKI CAs, or the stored bundle of the endpoint's trust domain. */
  private async trustFor(relationship: StoredFederationRelationship): Promise<BundleEndpointTrust> {
    if (relationship.bundleEndpointProfile === 'https_web') {
      if (this.webCaFile === undefined) return { profile: 'https_web' };
      let extraCaPem: string;
      try {
        extraCaPem = await readFile(this.webCaFile, 'utf8');
      } catch (error) {
        throw new BundleFetchError('trust', `federation web CA file ${this.webCaFile}: ${(error as Error).message}`);
      }
      return { profile: 'https_web', extraCaPem };
    }
    const endpointSpiffeId = relationship.endpointSpiffeId!;
    const trustDomain = endpointSpiffeId.trustDomain;
    const bundle = (await this.bundles.federatedBundle(trustDomain))?.bundle ?? this.ownIfSame(trustDomain.name);
    if (bundle === undefined || bundle.x509Authorities.length === 0) {
      throw new BundleFetchError(
        'trust',
        `no X.509 bundle stored for trust domain ${trustDomain.name} to authenticate the https_spiffe endpoint ` +
          `${endpointSpiffeId.toString()}; set it first with bundle set (or federation create --trust-domain-bundle-path)`,
      );
    }
    return { profile: 'https_spiffe', bundle, endpointSpiffeId };
  }

  private ownIfSame(trustDomain: string): TrustBundle | undefined {
    try {
      const own = this.bundles.ownBundle();
      return own.trustDomain.name === trustDomain ? own : undefined;
    } catch {
      return undefined;
    }
  }
}

function sameSettings(a: StoredFederationRelationship, b: StoredFederationRelationship): boolean {
  return (
    a.updatedAt.getTime() === b.updatedAt.getTime() &&
    a.bundleEndpointUrl === b.bundleEndpointUrl &&
    a.bundleEndpointProfile === b.bundleEndpointProfile &&
    a.endpointSpiffeId?.toString() === b.endpointSpiffeId?.toString()
  );
}

/** Seconds until the next fetch after a success: a quarter of the hint (or the default), within the bounds. */
export function intervalAfterSuccess(refreshHintSeconds: number | undefined): number {
  const r = BUNDLE_REFRESH;
  if (refreshHintSeconds === undefined) return r.defaultIntervalSeconds;
  return Math.min(r.maxIntervalSeconds, Math.max(r.minIntervalSeconds, refreshHintSeconds / r.attemptsPerRefreshHint));
}

/** Seconds until the retry after `failures` failures in a row: doubling from the first retry, capped. */
export function retryAfterFailure(failures: number): number {
  const r = BUNDLE_REFRESH;
  return Math.min(r.defaultIntervalSeconds, r.firstRetrySeconds * 2 ** Math.min(failures - 1, 16));
}
