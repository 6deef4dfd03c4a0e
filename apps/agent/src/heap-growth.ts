import { setFlagsFromString } from 'node:v8';

/**
 * How far the agent's V8 old generation may grow past what was live after the last full collection before the next
 * one, in percent. V8 picks up to 300 % (4x live) on a 64-bit host with a few GiB of memory, which suits a program
 * whose live data grows, not a small daemon that turns over garbage: under floods of refused Workload API calls
 * (bench/dos/jwt-fanout, sha256-rehash) objects that survived two scavenges by being in flight were promoted at
 * ~10 MB/s while ~30 MB stayed live, and the heap grew to ~130 MB before the first full collection freed it
 * (RSS +96 to +114 MiB, issue 16 goal: < 50). At 50 % the next full collection comes at about 1.5x live (a few MB
 * more for a small heap): under a flood one every ~0.5 s instead of every ~5 s, each 5-10 ms of pause after
 * concurrent marking, and the heap stays ~15 MB above its size with the workloads alone instead of ~90.
 */
export const AGENT_HEAP_GROWING_PERCENT = 50;

const OPERATOR_FLAG = /--heap[-_]growing[-_]percent\b/;

/**
 * The V8 flag that sets {@link AGENT_HEAP_GROWING_PERCENT}, or undefined when the operator chose a growing factor
 * (a node option before the script, or `NODE_OPTIONS`), which is kept.
 */
export function heapGrowthFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  if ([...execArgv, nodeOptions ?? ''].some((option) => OPERATOR_FLAG.test(option))) return undefined;
  return `--heap-growing-percent=${AGENT_HEAP_GROWING_PERCENT}`;
}

/**
 * Applies {@link heapGrowthFlag} to this process. V8 reads the flag each time it sets the next full collection's
 * limit, so setting it after start takes effect from the next collection.
 */
export function limitHeapGrowth(): void {
  const flag = heapGrowthFlag(process.execArgv, process.env['NODE_OPTIONS']);
  if (flag !== undefined) setFlagsFromString(flag);
}
