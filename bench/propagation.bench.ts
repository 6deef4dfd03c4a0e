/**
 * `npm run bench:propagation`: entry created through the admin API → its new SVID on an already open
 * FetchX509SVID stream.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless
 * `DATABASE_URL` is set), registers a first entry for this process's uid and opens one FetchX509SVID stream with a
 * plain @grpc/grpc-js client. Then, one after the other, it creates `--entries` entries, each a distinct SPIFFE ID
 * with the same `unix:uid` selector, through `POST /v1/entries` on the admin socket, and times each from just before
 * the POST to the first stream message holding that SPIFFE ID. The path measured: admin API → database (new
 * revision) → the server's entry index → the agent's sync long-poll → a CSR batch signed → the stream. A few
 * unrecorded entries warm the path up first. Target p99 < 1 s (SPIRE's default sync interval gives ~5–10 s).
 */
import { performance } from 'node:perf_hooks';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { formatLatency, latencyJson, summarize } from './support/stats.js';
import { X509SvidStream, newWorkloadClient } from './support/workload-client.js';

const STREAM_TIMEOUT_MS = 30_000;
const WARM_UP_ENTRIES = 5;
const TARGET_P99_MS = 1000;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'propagation.bench.js',
    numbers: { entries: { default: 100, min: 1, max: 1000, integer: true, description: 'entries timed' } },
  });
  const { entries } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('propagation', async (harness) => {
    const server = await harness.startServer();
    const agent = await harness.startAgent(server);
    const uid = currentUid();
    const entryFor = (name: string) => ({
      spiffeId: `spiffe://${TRUST_DOMAIN}/bench/propagation/${name}`,
      parentId: NODE_ALIAS_ID,
      selectors: [`unix:uid:${uid}`],
    });
    const first = entryFor('first');
    await server.admin.createEntries([first]);
    const client = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(client);
    try {
      await stream.waitFor((message) => message.spiffeIds.has(first.spiffeId), STREAM_TIMEOUT_MS);
      log(`node ${process.version}, ${server.database} database, uid ${uid}; stream open with 1 SVID`);

      /** Creates one entry and resolves with [ms until the POST answered, ms until the stream held the SVID]. */
      const propagate = async (name: string): Promise<[number, number]> => {
        const entry = entryFor(name);
        const started = performance.now();
        // Registered before the POST, so a message that arrives before its answer is not missed.
        const seen = stream.waitFor((message) => message.spiffeIds.has(entry.spiffeId), STREAM_TIMEOUT_MS, false);
        // Handled below; this only keeps a timeout during the POST from counting as an unhandled rejection.
        seen.catch(() => undefined);
        await server.admin.createEntries([entry]);
        const answered = performance.now();
        const message = await seen;
        return [answered - started, message.at - started];
      };
      for (let index = 0; index < WARM_UP_ENTRIES; index++) await propagate(`warm-up-${index}`);

      const apiLatencies: number[] = [];
      const latencies: number[] = [];
      for (let index = 0; index < entries; index++) {
        const [api, total] = await propagate(`entry-${index}`);
        apiLatencies.push(api);
        latencies.push(total);
      }
      const summary = summarize(latencies);
      const api = summarize(apiLatencies);
      log(`${entries} entries, one at a time, each a new SPIFFE ID on the open FetchX509SVID stream`);
      log(`  POST /v1/entries answered:     ${formatLatency(api)}`);
      log(`  POST → SVID on the stream:     ${formatLatency(summary)}`);
      const verdict = summary.p99 < TARGET_P99_MS ? 'met' : 'NOT met';
      log(`  target p99 < ${TARGET_P99_MS} ms: ${verdict}`);
      if (options.json) {
        log(
          JSON.stringify({
            bench: 'entry_propagation',
            entries,
            ...latencyJson(summary),
            post_p50_ms: latencyJson(api)['p50_ms'],
            post_p99_ms: latencyJson(api)['p99_ms'],
            target_p99_ms: TARGET_P99_MS,
          }),
        );
      }
    } finally {
      stream.cancel();
      client.close();
    }
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
