import type * as PromClient from 'prom-client';

/**
 * prom-client's default metrics that are gauges named `_total`, which Prometheus's naming rules reserve for counters;
 * each repeats the sum of a gauge it also exports without the suffix (`nodejs_active_handles` by type).
 */
const GAUGES_NAMED_TOTAL = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/**
 * prom-client's default process metrics (CPU, memory, event loop lag, GC, active handles, …) under `prefix`, named
 * by Prometheus's conventions so `promtool check metrics` passes: the three gauges prom-client names `…_total` are
 * left out (their per-type gauges without the suffix remain). Both apps call this, so their process metrics agree.
 * The prom-client module is passed in (the apps depend on it; this library does not).
 */
export function collectProcessMetrics(
  promClient: Pick<typeof PromClient, 'collectDefaultMetrics'>,
  registry: PromClient.Registry,
  prefix: string,
): void {
  const before = new Set(registry.getMetricsAsArray().map((metric) => metric.name));
  promClient.collectDefaultMetrics({ register: registry, prefix });
  for (const name of GAUGES_NAMED_TOTAL) registry.removeSingleMetric(`${prefix}${name}`);
  for (const metric of registry.getMetricsAsArray()) {
    if (!before.has(metric.name)) throttleCollect(metric as unknown as Collectable);
  }
}

/**
 * How often prom-client's process metrics are read at most; scrapes in between get the last values. Some read a lot
 * per scrape (open file descriptors: a `readdir` of /proc/self/fd; active handles: an array of every socket, grouped
 * by type): with a thousand connections open, a scrape flood spent more CPU on them than on answering (issue 16).
 */
export const PROCESS_METRICS_MIN_INTERVAL_MS = 1000;

/** A prom-client metric whose values are set by its `collect` at scrape time. */
interface Collectable {
  collect?: (...args: unknown[]) => unknown;
}

function throttleCollect(metric: Collectable): void {
  const collect = metric.collect;
  if (typeof collect !== 'function') return;
  let lastMs = -Infinity;
  metric.collect = function (this: unknown, ...args: unknown[]): unknown {
    const now = performance.now();
    if (now - lastMs < PROCESS_METRICS_MIN_INTERVAL_MS) return undefined;
    lastMs = now;
    return collect.apply(this, args);
  };
}
