/**
 * `npm run bench:agent-fill`: how long one agent takes to get `--entries` new entries signed and onto a workload's
 * open FetchX509SVID stream, and what it costs the agent (CPU seconds, resident memory) and the server (CPU seconds).
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless `DATABASE_URL`
 * is set), creates one first entry for this process's uid and opens a FetchX509SVID stream with a plain
 * @grpc/grpc-js client under it; once that SVID is on the stream, creates `--entries` - 1 more through the admin
 * API, 500 per request (the API's largest batch), back to back, and waits for a message with all `--entries` SVIDs.
 * The clock runs from the first create request to that message. CPU seconds are read from /proc before and after
 * (user + system, all threads), so they hold up on a loaded machine where the wall time does not; the load is
 * printed with the figures. `--cpu-prof DIR` runs the agent and the server under `node --cpu-prof` and leaves their
 * profiles in DIR. `--svid-cache-max-size N` passes that agent flag (lazy signing with an LRU cap, 0: off).
 */
import { mkdir } from 'node:fs/promises';
import os, { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from './support/proc.js';
import { X509SvidStream, newWorkloadClient } from './support/workload-client.js';

/** Entries per `POST /v1/entries` (the API's largest batch). */
const ENTRY_BATCH = 500;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'agent-fill.bench.js',
    numbers: {
      entries: { default: 1000, min: 2, max: 100_000, integer: true, description: 'entries for the one agent' },
      timeout: { default: 180, min: 1, max: 3600, integer: false, description: 'seconds to wait for the full set' },
      signBurst: {
        default: 0,
        min: 0,
        max: 1_000_000,
        integer: true,
        description:
          "the server's --agent-sign-burst (0: the larger of its default, 5,000, and --entries, so the agent's own " +
          'speed is measured rather than the per-agent signing rate of 500 CSRs/s)',
      },
      svidCacheMaxSize: {
        default: 0,
        min: 0,
        max: 1_000_000,
        integer: true,
        description: "the agent's --svid-cache-max-size (0: not passed, every entry signed at once)",
      },
    },
    strings: { cpuProf: 'write CPU profiles of the agent and the server (node --cpu-prof) into this directory' },
  });
  const { entries, timeout, svidCacheMaxSize } = options.numbers;
  const signBurst = options.numbers.signBurst > 0 ? options.numbers.signBurst : Math.max(5000, entries);
  const profileDir = options.strings.cpuProf === undefined ? undefined : resolve(options.strings.cpuProf);
  if (profileDir) await mkdir(profileDir, { recursive: true });
  const nodeArgs = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const log = (line: string): void => console.log(line);
  await Harness.run('agent-fill', async (harness) => {
    const server = await harness.startServer({ nodeArgs, args: ['--agent-sign-burst', String(signBurst)] });
    log(`server --agent-sign-burst ${signBurst} (agent_sign_rate at its default, 500 CSRs/s)`);
    const agent = await harness.startAgent(server, {
      nodeArgs,
      args: svidCacheMaxSize > 0 ? ['--svid-cache-max-size', String(svidCacheMaxSize)] : [],
    });
    const agentPid = agent.process.pid;
    const serverPid = server.process.pid;
    const uid = currentUid();
    const specs = Array.from({ length: entries }, (_, index) => ({
      spiffeId: `spiffe://${TRUST_DOMAIN}/bench/fill/workload-${index}`,
      parentId: NODE_ALIAS_ID,
      selectors: [`unix:uid:${uid}`],
    }));
    log(`node ${process.version}, ${server.database} database, agent pid ${agentPid}, uid ${uid}`);
    const idle = residentMemory(agentPid);

    await server.admin.createEntries(specs.slice(0, 1));
    const client = newWorkloadClient(agent.socketPath);
    const opened = performance.now();
    const stream = new X509SvidStream(client);
    try {
      const firstCall = await stream.waitFor((message) => message.spiffeIds.has(specs[0]!.spiffeId), timeout * 1000);
      const firstCallMs = firstCall.at - opened;
      const messagesBefore = stream.messages;
      const loadBefore = loadavg()[0]!;
      const agentCpu0 = cpuSeconds(agentPid);
      const serverCpu0 = cpuSeconds(serverPid);
      const rss = sampleRss(agentPid);
      const started = performance.now();
      for (let created = 1; created < entries; created += ENTRY_BATCH) {
        await server.admin.createEntries(specs.slice(created, created + ENTRY_BATCH));
      }
      const createdAt = performance.now();
      const full = await stream.waitFor((message) => message.spiffeIds.size === entries, timeout * 1000);
      const agentCpu = cpuSeconds(agentPid) - agentCpu0;
      const serverCpu = cpuSeconds(serverPid) - serverCpu0;
      const peakRss = rss.stop();
      const loadAfter = loadavg()[0]!;
      const missing = specs.filter((spec) => !full.spiffeIds.has(spec.spiffeId));
      if (missing.length > 0) throw new Error(`the stream lacks ${missing.length} SVIDs, e.g. ${missing[0]!.spiffeId}`);
      const filled = residentMemory(agentPid);
      const fillSeconds = (full.at - started) / 1000;
      const messages = stream.messages - messagesBefore;
      const createSeconds = (createdAt - started) / 1000;
      const afterCreateSeconds = (full.at - createdAt) / 1000;
      log(
        `first FetchX509SVID call (1 entry${svidCacheMaxSize > 0 ? ', signed lazily for it' : ''}) served in ` +
          `${firstCallMs.toFixed(0)} ms`,
      );
      log(`load average (1 min) ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after, on ${cpuCount()} CPUs`);
      log(
        `${entries - 1} entries created in ${createSeconds.toFixed(1)} s (${ENTRY_BATCH} per request)` +
          ` → all ${entries} SVIDs on the stream in ${fillSeconds.toFixed(2)} s, ${messages} stream messages`,
      );
      log(`  of which after the last create request returned: ${afterCreateSeconds.toFixed(2)} s`);
      log(`agent CPU ${agentCpu.toFixed(2)} s (${((agentCpu / (entries - 1)) * 1000).toFixed(2)} ms per SVID)`);
      log(`server CPU ${serverCpu.toFixed(2)} s (${((serverCpu / (entries - 1)) * 1000).toFixed(2)} ms per SVID)`);
      log(
        `agent VmRSS idle ${formatMiB(idle.rssKiB)} → ${formatMiB(filled.rssKiB)} with ${entries} SVIDs` +
          ` (sampled peak ${formatMiB(peakRss)})`,
      );
      if (profileDir) log(`CPU profiles: written to ${profileDir} when the processes stop`);
      if (options.json) {
        log(
          JSON.stringify({
            bench: 'agent_fill',
            database: server.database,
            entries,
            svid_cache_max_size: svidCacheMaxSize,
            fill_seconds: Math.round(fillSeconds * 100) / 100,
            create_seconds: Math.round(createSeconds * 100) / 100,
            after_create_seconds: Math.round(afterCreateSeconds * 100) / 100,
            stream_messages: messages,
            first_call_ms: Math.round(firstCallMs),
            agent_cpu_seconds: Math.round(agentCpu * 100) / 100,
            server_cpu_seconds: Math.round(serverCpu * 100) / 100,
            agent_idle_rss_kib: idle.rssKiB,
            agent_rss_kib: filled.rssKiB,
            agent_peak_rss_kib: peakRss,
            load_before: Math.round(loadBefore * 100) / 100,
            load_after: Math.round(loadAfter * 100) / 100,
          }),
        );
      }
    } finally {
      stream.cancel();
      client.close();
    }
  });
}

function cpuCount(): number {
  return os.availableParallelism();
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
