/**
 * `npm run bench:workload`: FetchX509SVID first-response latency with 100 concurrent clients.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless
 * `DATABASE_URL` is set), registers one entry for this process's uid under the agent's node alias, waits until the
 * agent serves it (its cache is warm), then runs rounds in which `--clients` plain @grpc/grpc-js clients, each on
 * its own connection, open a FetchX509SVID stream at the same moment. A sample is the time from opening the stream
 * (connection included) to its first message, which must hold the entry's SVID. One unrecorded round warms both
 * sides up first. Prints p50/p90/p99/max over every sample and the CPU time the agent and the clients spent per
 * call; `--json` adds one JSON object on the last line. `--cpu-prof DIR` runs the agent under `node --cpu-prof`.
 */
import { resolve } from 'node:path';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds } from './support/proc.js';
import { formatLatency, latencyJson, summarize } from './support/stats.js';
import { X509SvidStream, newWorkloadClient, timeFirstX509Response } from './support/workload-client.js';

const RESPONSE_TIMEOUT_MS = 30_000;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'workload-api.bench.js',
    numbers: {
      clients: { default: 100, min: 1, max: 1000, integer: true, description: 'concurrent clients per round' },
      rounds: { default: 10, min: 1, max: 100, integer: true, description: 'measured rounds' },
    },
    strings: { cpuProf: 'write a CPU profile of the agent (node --cpu-prof) into this directory' },
  });
  const profileDir = options.strings.cpuProf === undefined ? undefined : resolve(options.strings.cpuProf);
  const { clients, rounds } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('workload', async (harness) => {
    const server = await harness.startServer();
    const agent = await harness.startAgent(server, {
      ...(profileDir && { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profileDir] }),
    });
    const uid = currentUid();
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/workload`;
    await server.admin.createEntries([{ spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${uid}`] }]);

    // Warm cache: the entry has reached the agent and its SVID is signed before anything is timed.
    const warm = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(warm);
    await stream.waitFor((message) => message.spiffeIds.has(spiffeId), RESPONSE_TIMEOUT_MS);
    stream.cancel();
    warm.close();

    log(`node ${process.version}, ${server.database} database, agent pid ${agent.process.pid}, uid ${uid}`);
    log(`FetchX509SVID first response, ${clients} concurrent clients (one connection each), ${rounds} rounds`);
    const round = (): Promise<number[]> =>
      Promise.all(
        Array.from({ length: clients }, () => timeFirstX509Response(agent.socketPath, spiffeId, RESPONSE_TIMEOUT_MS)),
      );
    await round();
    const samples: number[] = [];
    let agentCpu = 0;
    let clientCpu = 0;
    for (let index = 1; index <= rounds; index++) {
      const agentBefore = cpuSeconds(agent.process.pid);
      const clientBefore = process.cpuUsage();
      const latencies = await round();
      const clientUsed = process.cpuUsage(clientBefore);
      const agentRound = cpuSeconds(agent.process.pid) - agentBefore;
      const clientRound = (clientUsed.user + clientUsed.system) / 1e6;
      agentCpu += agentRound;
      clientCpu += clientRound;
      samples.push(...latencies);
      log(
        `round ${String(index).padStart(2)}: ${formatLatency(summarize(latencies))}` +
          ` | cpu: agent ${Math.round(agentRound * 1000)} ms, clients ${Math.round(clientRound * 1000)} ms`,
      );
    }
    const summary = summarize(samples);
    const perCall = (seconds: number): number => Math.round((seconds / samples.length) * 1e6) / 1000;
    log(`all rounds: ${formatLatency(summary)}`);
    log(
      `cpu per call: agent ${perCall(agentCpu)} ms, clients ${perCall(clientCpu)} ms (both include connection setup)`,
    );
    if (profileDir) log(`agent CPU profile: written to ${profileDir} when the agent stops`);
    if (options.json) {
      log(
        JSON.stringify({
          bench: 'workload_api_fetch_x509',
          clients,
          rounds,
          ...latencyJson(summary),
          agent_cpu_ms_per_call: perCall(agentCpu),
          client_cpu_ms_per_call: perCall(clientCpu),
        }),
      );
    }
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
