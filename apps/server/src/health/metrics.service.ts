import { Inject, Injectable, Optional } from '@nestjs/common';
import * as promClient from 'prom-client';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import {
  type AuthorityMetrics,
  type AuthorityTransition,
  type UpstreamBundleFailure,
} from '../ca/authority-metrics.js';
import { type AuthorityKind } from '../ca/ca-key.js';
import { CLOCK, type Clock, systemClock } from '../common/clock.js';
import type { BundleFetchError } from '../federation/bundle-endpoint-client.js';
import type { FederationMetrics } from '../federation/federation-metrics.js';
import { collectProcessMetrics, SIGIL_VERSION } from '@sigil/runtime';
import { cachedRead } from './cached-read.js';

/** Which API a route belongs to, for the per-route counters. */
export type ApiName = 'agent' | 'admin' | 'public';

/** What a node attestation request came to, from its status code. */
export type AttestationOutcome = 'ok' | 'refused' | 'invalid' | 'rate_limited' | 'unavailable' | 'error';

/**
 * How long a gauge read from the database (entries, agents) is reused: a scrape flood costs one count query per gauge
 * per this time, and a Prometheus scrape interval (15 s or more) still sees a fresh value nearly every time.
 */
export const GAUGE_CACHE_MS = 5_000;

/**
 * Prometheus metrics of this process, in a registry of its own (two apps in one test process do not collide).
 * It is also the CA's {@link AuthorityMetrics}: SVIDs signed by kind, sign latency and rotation events, and the
 * federation bundle fetcher's {@link FederationMetrics}.
 */
@Injectable()
export class MetricsService implements AuthorityMetrics, FederationMetrics {
  readonly registry = new Registry();
  private readonly signed = new Counter({
    name: 'sigil_svids_signed_total',
    help: 'SVIDs signed by this server, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly signLatency = new Histogram({
    name: 'sigil_svid_sign_duration_seconds',
    help: 'Time to sign one SVID, by kind',
    labelNames: ['kind'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  private readonly rotations = new Counter({
    name: 'sigil_ca_rotation_events_total',
    help: 'Changes this server made to the CA key journal, by authority kind and transition',
    labelNames: ['kind', 'transition'] as const,
    registers: [this.registry],
  });

  private readonly upstreamBundleFailures = new Counter({
    name: 'sigil_upstream_bundle_failures_total',
    help: "Upstream authority sigil: failed updates of the top trust domain's roots from the local agent's Workload API, by reason",
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly upstreamBundleSuccess = new Gauge({
    name: 'sigil_upstream_bundle_last_success_timestamp_seconds',
    help: "Upstream authority sigil: when this replica last followed the top trust domain's roots",
    registers: [this.registry],
  });
  private readonly upstreamBundleUpdates = new Counter({
    name: 'sigil_upstream_bundle_updates_total',
    help: "Upstream authority sigil: changes of the top trust domain's roots this replica published",
    registers: [this.registry],
  });

  private readonly upstreamTaintRotations = new Counter({
    name: 'sigil_upstream_taint_rotations_total',
    help: 'Upstream authority sigil: moves to a new CA because the upstream server tainted the key that signed ours',
    registers: [this.registry],
  });

  private readonly bundleFetchFailures = new Counter({
    name: 'sigil_federated_bundle_fetch_failures_total',
    help: "Failed fetches of a federated trust domain's bundle from its bundle endpoint, by trust domain and reason",
    labelNames: ['trust_domain', 'reason'] as const,
    registers: [this.registry],
  });
  private readonly bundleFetchSuccess = new Gauge({
    name: 'sigil_federated_bundle_last_success_timestamp_seconds',
    help: "When this server last fetched a federated trust domain's bundle successfully (Unix time), by trust domain",
    labelNames: ['trust_domain'] as const,
    registers: [this.registry],
  });
  private readonly bundleUpdates = new Counter({
    name: 'sigil_federated_bundle_updates_total',
    help: 'Fetched federated bundles this server stored because they changed, by trust domain',
    labelNames: ['trust_domain'] as const,
    registers: [this.registry],
  });

  private readonly httpRequests = new Counter({
    name: 'sigil_http_requests_total',
    help: 'HTTP requests answered, by API (agent, admin, public), route template, method and status code',
    labelNames: ['api', 'route', 'method', 'code'] as const,
    registers: [this.registry],
  });
  private readonly rateLimited = new Counter({
    name: 'sigil_rate_limited_requests_total',
    help: 'Requests refused with 429 by a rate limit, budget or queue bound, by API and route template',
    labelNames: ['api', 'route'] as const,
    registers: [this.registry],
  });
  private readonly nodeAttestations = new Counter({
    name: 'sigil_node_attestations_total',
    help: 'Node attestation requests answered (challenges not counted), by method and outcome',
    labelNames: ['method', 'outcome'] as const,
    registers: [this.registry],
  });

  constructor(@Optional() @Inject(CLOCK) private readonly clock: Clock = systemClock) {
    collectProcessMetrics(promClient, this.registry, 'sigil_');
    new Gauge({
      name: 'sigil_build_info',
      help: 'Always 1; the labels name the Sigil version and the Node.js version running it',
      labelNames: ['version', 'node_version'] as const,
      registers: [this.registry],
    }).set({ version: SIGIL_VERSION, node_version: process.version }, 1);
  }

  /** One answered HTTP request; `route` is the route template (bounded), never the raw URL. */
  httpRequest(api: ApiName, route: string, method: string, code: number): void {
    this.httpRequests.inc({ api, route, method, code: String(code) });
    if (code === 429) this.rateLimited.inc({ api, route });
  }

  /** One answered node attestation request of `method` (an enabled attestor's type). */
  nodeAttestation(method: string, outcome: AttestationOutcome): void {
    this.nodeAttestations.inc({ method, outcome });
  }

  /**
   * A gauge with labels, set at scrape time from `read` (cheap, in-memory values only: it is not cached). Label sets
   * that `read` no longer returns are dropped.
   */
  addLabelledGauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: () => readonly { labels: Record<L, string>; value: number }[],
  ): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const { labels, value } of read()) this.set(labels as Partial<Record<L, string>>, value);
      },
    });
  }

  /** A counter read at scrape time from a running total kept elsewhere (e.g. the TLS port's refusal counts). */
  addCounterFrom<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: () => readonly { labels: Record<L, string>; value: number }[],
  ): void {
    const seen = new Map<string, number>();
    new Counter({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        for (const { labels, value } of read()) {
          const key = JSON.stringify(labels);
          const delta = value - (seen.get(key) ?? 0);
          if (delta >= 0) this.inc(labels as Partial<Record<L, string>>, delta);
          seen.set(key, value);
        }
      },
    });
  }

  svidSigned(kind: AuthorityKind, seconds: number): void {
    this.signed.inc({ kind });
    this.signLatency.observe({ kind }, seconds);
  }

  rotationEvent(kind: AuthorityKind, transition: AuthorityTransition): void {
    this.rotations.inc({ kind, transition });
  }

  upstreamBundleFollowed(at: Date, changed: boolean): void {
    this.upstreamBundleSuccess.set(at.getTime() / 1000);
    if (changed) this.upstreamBundleUpdates.inc();
  }

  upstreamBundleFailed(reason: UpstreamBundleFailure): void {
    this.upstreamBundleFailures.inc({ reason });
  }

  upstreamTaintRotation(): void {
    this.upstreamTaintRotations.inc();
  }

  bundleFetched(trustDomain: string, at: Date, changed: boolean): void {
    this.bundleFetchSuccess.set({ trust_domain: trustDomain }, at.getTime() / 1000);
    if (changed) this.bundleUpdates.inc({ trust_domain: trustDomain });
  }

  bundleFetchFailed(trustDomain: string, reason: BundleFetchError['reason']): void {
    this.bundleFetchFailures.inc({ trust_domain: trustDomain, reason });
  }

  /** A gauge read at scrape time, e.g. the number of entries; at most once per {@link GAUGE_CACHE_MS}. */
  addGauge(name: string, help: string, read: () => Promise<number>): void {
    const cached = cachedRead(read, GAUGE_CACHE_MS, () => this.clock.now().getTime());
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        this.set(await cached());
      },
    });
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
