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
  promClient.collectDefaultMetrics({ register: registry, prefix });
  for (const name of GAUGES_NAMED_TOTAL) registry.removeSingleMetric(`${prefix}${name}`);
}
