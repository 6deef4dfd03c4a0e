import { type Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';

/**
 * One GET on the server's TLS port at 127.0.0.1, from `localAddress` if given (any of 127/8 on Linux); resolves with
 * the status once the answer is read.
 */
export function httpsGetStatus(
  port: number,
  agent: Agent,
  path: string,
  headers: Record<string, string> = {},
  localAddress?: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path, agent, headers, ...(localAddress && { localAddress }) };
    const req = request(options, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A legitimate caller of the denial-of-service scenarios: `call`, one after another until `until` resolves, each
 * starting at least `intervalMs` after the previous one started (0: at once); each must answer 200 (else the run
 * fails, naming `what`). Returns the latencies in milliseconds.
 */
export async function callsUntil(
  what: string,
  call: () => Promise<number>,
  until: Promise<unknown>,
  intervalMs = 0,
): Promise<number[]> {
  let done = false;
  void until.then(() => (done = true));
  const latencies: number[] = [];
  while (!done) {
    const start = performance.now();
    const status = await call();
    if (status !== 200) throw new Error(`${what} answered ${status}`);
    const elapsed = performance.now() - start;
    latencies.push(elapsed);
    if (intervalMs > elapsed) await new Promise((resolve) => setTimeout(resolve, intervalMs - elapsed));
  }
  return latencies;
}

/** Counts one answer of each status. */
export function countStatus(counts: Map<number, number>, status: number): void {
  counts.set(status, (counts.get(status) ?? 0) + 1);
}
