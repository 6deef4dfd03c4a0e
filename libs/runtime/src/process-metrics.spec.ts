import { openSync, closeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import * as promClient from 'prom-client';
import { describe, expect, it } from 'vitest';
import { collectProcessMetrics, PROCESS_METRICS_MIN_INTERVAL_MS } from './process-metrics.js';

/** The value of an unlabelled gauge in a scrape. */
async function gauge(registry: promClient.Registry, name: string): Promise<number> {
  const metric = await registry.getSingleMetric(name)!.get();
  return metric.values[0]!.value;
}

describe('collectProcessMetrics', () => {
  it('reads the process metrics at most once per interval: a scrape flood gets the last values', async () => {
    const registry = new promClient.Registry();
    collectProcessMetrics(promClient, registry, 'test_');
    const first = await gauge(registry, 'test_process_open_fds');
    const files = Array.from({ length: 50 }, () => openSync('/dev/null', 'r'));
    try {
      // Within the interval: the same value, though 50 more descriptors are open.
      expect(await gauge(registry, 'test_process_open_fds')).toBe(first);
      await sleep(PROCESS_METRICS_MIN_INTERVAL_MS + 100);
      expect(await gauge(registry, 'test_process_open_fds')).toBeGreaterThanOrEqual(first + 50);
    } finally {
      for (const fd of files) closeSync(fd);
    }
  });

  it('leaves out the gauges prom-client names _total', async () => {
    const registry = new promClient.Registry();
    collectProcessMetrics(promClient, registry, 'test_');
    const text = await registry.metrics();
    expect(text).toContain('test_nodejs_active_handles');
    expect(text).not.toContain('test_nodejs_active_handles_total');
  });
});
