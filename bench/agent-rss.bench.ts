/**
 * `npm run bench:rss`: resident memory of sigil-agent with 1,000 entries and their SVIDs cached.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless
 * `DATABASE_URL` is set), reads the agent's VmRSS from /proc once it has synced (no workload entries yet), opens a
 * FetchX509SVID stream with a plain @grpc/grpc-js client under one first entry, then creates `--entries` - 1 more
 * entries for this process's uid through the admin API, 500 per request (the API's largest batch), one request
 * after the other while the agent signs what the previous ones brought. The stream sends the full set on every
 * change, so a message with all `--entries` SVIDs proves that the agent holds every entry and its signed SVID (the
 * rotator signs before the cache changes). Then VmRSS and VmHWM (peak) are read: at that moment, and again after
 * `--settle` seconds without changes (the garbage collector has had time to run).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { formatMiB, residentMemory } from './support/proc.js';
import { X509SvidStream, newWorkloadClient } from './support/workload-client.js';

const FILL_TIMEOUT_MS = 90_000;
/** Entries per `POST /v1/entries` (the API's largest batch). */
const ENTRY_BATCH = 500;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'agent-rss.bench.js',
    numbers: {
      entries: { default: 1000, min: 2, max: 10_000, integer: true, description: 'entries (and SVIDs) cached' },
      settle: { default: 5, min: 0, max: 60, integer: false, description: 'seconds before the second reading' },
    },
  });
  const { entries, settle } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('rss', async (harness) => {
    const server = await harness.startServer();
    const agent = await harness.startAgent(server);
    const pid = agent.process.pid;
    const uid = currentUid();
    const specs = Array.from({ length: entries }, (_, index) => ({
      spiffeId: `spiffe://${TRUST_DOMAIN}/bench/rss/workload-${index}`,
      parentId: NODE_ALIAS_ID,
      selectors: [`unix:uid:${uid}`],
    }));
    const idle = residentMemory(pid);
    log(`node ${process.version}, ${server.database} database, agent pid ${pid}, uid ${uid}`);
    log(`agent synced, no workload entries:  VmRSS ${formatMiB(idle.rssKiB)} (peak ${formatMiB(idle.peakKiB)})`);

    await server.admin.createEntries(specs.slice(0, 1));
    const client = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(client);
    try {
      await stream.waitFor((message) => message.spiffeIds.has(specs[0]!.spiffeId), FILL_TIMEOUT_MS);
      const started = performance.now();
      for (let created = 1; created < entries; created += ENTRY_BATCH) {
        await server.admin.createEntries(specs.slice(created, created + ENTRY_BATCH));
      }
      const full = await stream.waitFor((message) => message.spiffeIds.size === entries, FILL_TIMEOUT_MS);
      const missing = specs.filter((spec) => !full.spiffeIds.has(spec.spiffeId));
      if (missing.length > 0) throw new Error(`the stream lacks ${missing.length} SVIDs, e.g. ${missing[0]!.spiffeId}`);
      const filled = residentMemory(pid);
      const fillSeconds = (full.at - started) / 1000;
      log(
        `${entries - 1} entries created → all ${entries} SVIDs on the stream in ${fillSeconds.toFixed(1)} s` +
          ` (${ENTRY_BATCH} per request, back to back)`,
      );
      log(
        `${entries} SVIDs cached, at once:      VmRSS ${formatMiB(filled.rssKiB)} (peak ${formatMiB(filled.peakKiB)})`,
      );
      await sleep(settle * 1000);
      const settled = residentMemory(pid);
      log(
        `${entries} SVIDs cached, after ${settle} s:    VmRSS ${formatMiB(settled.rssKiB)} (peak ${formatMiB(settled.peakKiB)})`,
      );
      log(`growth over the idle agent: ${formatMiB(settled.rssKiB - idle.rssKiB)}`);
      if (options.json) {
        log(
          JSON.stringify({
            bench: 'agent_rss',
            entries,
            idle_rss_kib: idle.rssKiB,
            rss_kib: filled.rssKiB,
            settled_rss_kib: settled.rssKiB,
            peak_rss_kib: settled.peakKiB,
            fill_seconds: Math.round(fillSeconds * 10) / 10,
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
