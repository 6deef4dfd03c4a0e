/** Latency summaries and number formatting shared by the benchmarks. */

/** Percentiles of a set of latencies, in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Nearest-rank percentile (`p` in (0, 100]) of ascending `sorted` values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile: no samples');
  if (!(p > 0 && p <= 100)) throw new Error(`percentile: p must be in (0, 100], got ${p}`);
  return sorted[Math.ceil((p / 100) * sorted.length) - 1]!;
}

export function summarize(samples: readonly number[]): LatencySummary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
    mean: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
  };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median: no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Milliseconds with one decimal, e.g. `12.3 ms`. */
export const formatMs = (value: number): string => `${value.toFixed(1)} ms`;

/** `p50 … p90 … p99 … max …` on one line. */
export function formatLatency(summary: LatencySummary): string {
  return (
    `p50 ${formatMs(summary.p50)} | p90 ${formatMs(summary.p90)} | p99 ${formatMs(summary.p99)}` +
    ` | max ${formatMs(summary.max)} | mean ${formatMs(summary.mean)} (${summary.count} samples)`
  );
}

/** The same summary rounded to 0.1 ms, for the `--json` line. */
export function latencyJson(summary: LatencySummary): Record<string, number> {
  const round = (value: number): number => Math.round(value * 10) / 10;
  return {
    count: summary.count,
    p50_ms: round(summary.p50),
    p90_ms: round(summary.p90),
    p99_ms: round(summary.p99),
    max_ms: round(summary.max),
    mean_ms: round(summary.mean),
  };
}

/** An integer with thousands separators, e.g. `12,345`. */
export const formatCount = (value: number): string => Math.round(value).toLocaleString('en-US');
