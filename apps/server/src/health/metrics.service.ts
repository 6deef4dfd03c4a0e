import { Inject, Injectable, Optional } from '@nestjs/common';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { type AuthorityMetrics, type AuthorityTransition } from '../ca/authority-metrics.js';
import { type AuthorityKind } from '../ca/ca-key.js';
import { CLOCK, type Clock, systemClock } from '../common/clock.js';
import { cachedRead } from './cached-read.js';

/**
 * How long a gauge read from the database (entries, agents) is reused: a scrape flood costs one count query per gauge
 * per this time, and a Prometheus scrape interval (15 s or more) still sees a fresh value nearly every time.
 */
export const GAUGE_CACHE_MS = 5_000;

/**
 * Prometheus metrics of this process, in a registry of its own (two apps in one test process do not collide).
 * It is also the CA's {@link AuthorityMetrics}: SVIDs signed by kind, sign latency and rotation events.
 */
@Injectable()
export class MetricsService implements AuthorityMetrics {
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

  constructor(@Optional() @Inject(CLOCK) private readonly clock: Clock = systemClock) {
    collectDefaultMetrics({ register: this.registry, prefix: 'sigil_' });
  }

  svidSigned(kind: AuthorityKind, seconds: number): void {
    this.signed.inc({ kind });
    this.signLatency.observe({ kind }, seconds);
  }

  rotationEvent(kind: AuthorityKind, transition: AuthorityTransition): void {
    this.rotations.inc({ kind, transition });
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
