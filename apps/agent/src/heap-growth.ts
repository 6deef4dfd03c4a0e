import { applyDefaultV8Flags, defaultV8Flags, type DefaultV8Flag } from '@sigil/runtime/v8-flags';

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

const HEAP_GROWTH: DefaultV8Flag = {
  flag: `--heap-growing-percent=${AGENT_HEAP_GROWING_PERCENT}`,
  chosenBy: /--heap[-_]growing[-_]percent\b/,
};

/**
 * The V8 flag that sets {@link AGENT_HEAP_GROWING_PERCENT}, or undefined when the operator chose a growing factor
 * (a node option before the script, or `NODE_OPTIONS`), which is kept.
 */
export function heapGrowthFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  return defaultV8Flags([HEAP_GROWTH], execArgv, nodeOptions)[0];
}

/**
 * How far the young generation's semi-spaces may grow each time V8 grows them: 1, not at all. V8 starts them at 1 MiB
 * and doubles them up to 16 MiB each as soon as a burst of allocation survives (a module graph being loaded at start
 * is one): two 16 MiB semi-spaces of which a few hundred KiB are in use between bursts, ~30 MiB of the idle agent's
 * RSS (bench/README.md, issue 13). A daemon whose live data sits in the old generation gains little from a large
 * nursery: the price is more scavenges, each of which copies only what is still live (measured in `bench:rss`: the
 * agent's CPU time for 1,000 SVIDs, side by side with the previous build).
 */
export const AGENT_SEMI_SPACE_GROWTH_FACTOR = 1;

const SEMI_SPACE_GROWTH: DefaultV8Flag = {
  flag: `--semi-space-growth-factor=${AGENT_SEMI_SPACE_GROWTH_FACTOR}`,
  chosenBy: /--(semi[-_]space[-_]growth[-_]factor|max[-_]semi[-_]space[-_]size)\b/,
};

/**
 * The V8 flag that sets {@link AGENT_SEMI_SPACE_GROWTH_FACTOR}, or undefined when the operator chose a growth factor
 * or a largest semi-space size (a node option before the script, or `NODE_OPTIONS`), which is kept.
 */
export function semiSpaceGrowthFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  return defaultV8Flags([SEMI_SPACE_GROWTH], execArgv, nodeOptions)[0];
}

/**
 * Applies {@link heapGrowthFlag} and {@link semiSpaceGrowthFlag} to this process (V8 reads the second each time it
 * would grow the semi-spaces, so setting it at start, before the agent's modules load, keeps them at their first size).
 * The first takes effect from the next full collection (V8 reads it each time it sets the next one's limit).
 */
export function limitHeapGrowth(): void {
  applyDefaultV8Flags([HEAP_GROWTH, SEMI_SPACE_GROWTH]);
}
