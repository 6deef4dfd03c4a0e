import { performance } from 'node:perf_hooks';
import { X509SvidStream, newWorkloadClient } from './workload-client.js';

/** How long a benchmark waits for a Workload API answer before it calls the run failed. */
export const RESPONSE_TIMEOUT_MS = 30_000;
const SAMPLE_INTERVAL_MS = 50;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The legitimate workload of the denial-of-service scenarios: its first-message latencies of FetchX509SVID streams
 * opened one after another, 50 ms apart, on one connection of its own (as a workload process would reconnect its
 * watch), until `until` resolves. Fails when a first message lacks `spiffeId`.
 */
export async function legitimateCaller(
  socketPath: string,
  spiffeId: string,
  until: Promise<unknown>,
): Promise<number[]> {
  let done = false;
  void until.then(() => (done = true));
  const client = newWorkloadClient(socketPath, { ownConnection: true });
  const latencies: number[] = [];
  try {
    while (!done) {
      const started = performance.now();
      const stream = new X509SvidStream(client);
      try {
        const first = await stream.waitFor(() => true, RESPONSE_TIMEOUT_MS);
        if (!first.spiffeIds.has(spiffeId)) throw new Error(`the workload's FetchX509SVID lacks ${spiffeId}`);
        latencies.push(first.at - started);
      } finally {
        stream.cancel();
      }
      // Each cancel is an RST_STREAM: faster than nghttp2's reset rate limit (33/s after a burst of 1,000), the
      // agent would rightly close the connection as a rapid-reset attack.
      await sleep(SAMPLE_INTERVAL_MS);
    }
  } finally {
    client.close();
  }
  return latencies;
}
