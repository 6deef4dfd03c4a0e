/**
 * Loopback source addresses for simulated hosts: Linux routes all of 127.0.0.0/8 to the loopback interface, so a
 * client bound to 127.20.1.1 reaches a server on 127.0.0.1 from its own address, as a separate host would (the
 * server's per-address budgets then count it alone).
 */

/** How many distinct hosts {@link hostAddress} can name. */
export const MAX_SIMULATED_HOSTS = 250 * 250 * 100;

/**
 * The source address of simulated host `index` (0-based): `127.20.1.1`, `127.20.1.2`, … with no octet 0 or 255 after
 * the first (some stacks treat those specially), never 127.0.0.1 (the benchmark's own processes).
 *
 * @throws RangeError when `index` is not an integer from 0 to {@link MAX_SIMULATED_HOSTS} - 1
 */
export function hostAddress(index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_SIMULATED_HOSTS) {
    throw new RangeError(`host index: must be an integer from 0 to ${MAX_SIMULATED_HOSTS - 1}, got ${index}`);
  }
  const fourth = 1 + (index % 250);
  const third = 1 + (Math.floor(index / 250) % 250);
  const second = 20 + Math.floor(index / (250 * 250));
  return `127.${second}.${third}.${fourth}`;
}
