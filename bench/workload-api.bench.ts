/**
 * `npm run bench:workload`: FetchX509SVID first-response latency with 100 (`--clients`) concurrent clients and the
 * agent's CPU time per call, then 1,000 concurrent clients held with 0 errors.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless
 * `DATABASE_URL` is set), registers one entry for this process's uid under the agent's node alias, waits until the
 * agent serves it (its cache is warm), then runs rounds in which `--clients` plain @grpc/grpc-js clients, each on
 * its own connection, open a FetchX509SVID stream at the same moment. A sample is the time from opening the stream
 * (connection included) to its first message, which must hold the entry's SVID; a call that fails or answers
 * anything else is an error, counted (the run fails when there is any). One unrecorded round warms both sides up
 * first. Prints p50/p90/p99/max over every sample and the CPU time the agent and the clients spent per call; `--json`
 * adds one JSON object on the last line. `--cpu-prof DIR` runs the agent under `node --cpu-prof`.
 *
 * `--baseline DIR` also starts the agent of another built checkout (e.g. `/work/main` or a worktree of the commit to
 * compare with) against the same server, and alternates the rounds between the two agents (which one goes first
 * alternates too), so both are measured side by side under the same load; the ratio of their CPU per call is printed.
 *
 * `--floor 1` also runs a bare node:http2 server (support/bare-grpc-server.ts) that answers the same calls with a
 * message of the same size and does nothing else: what node:http2 alone costs per connection and call, side by side.
 *
 * Then `--hold-clients` (default 1,000; 0 skips it) concurrent clients for `--hold-rounds` rounds on every server:
 * every call must get its SVID (the run fails on any error). Past 240 clients, the rounds that follow each other
 * could meet the agent's per-uid Workload API limits (512 connections, 1,024 open calls, 512 new calls at once)
 * before it has seen the last round's connections close: the agents then run with limits sized to twice a round
 * (the flags are printed).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execFileSync } from 'node:child_process';
import { type AgentProcess, Harness, NODE_ALIAS_ID, ROOT, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds } from './support/proc.js';
import { formatLatency, latencyJson, summarize } from './support/stats.js';
import { X509SvidStream, newWorkloadClient, timeFirstX509Response } from './support/workload-client.js';

const RESPONSE_TIMEOUT_MS = 30_000;
// A held round's last client waits for the agent to serve all the others first: at ~4 ms of agent CPU per call on a
// loaded 2-core machine (load 15-20, the agent getting a fraction of a core), 1,000 calls took ~30 s.
const HOLD_RESPONSE_TIMEOUT_MS = 180_000;
// Rounds of this many clients fit twice (with 32 to spare) in the agent's default per-uid limits (WORKLOAD_API_LIMITS;
// README, Workload API limits): 2 × 240 + 32 = 512.
const DEFAULT_LIMITS_HOLD = 240;

/** One Workload API server measured: an agent, or the bare node:http2 floor. */
interface Target {
  readonly label: string;
  readonly pid: number;
  readonly socketPath: string;
}

/** What one phase (`clients` per round) measured on one target. */
interface Measure {
  readonly target: Target;
  readonly samples: number[];
  errors: number;
  readonly firstErrors: string[];
  agentCpu: number;
  clientCpu: number;
  /** Server CPU seconds of each recorded round, in order. */
  readonly roundCpu: number[];
}

function limitFlags(clients: number): string[] {
  if (clients <= DEFAULT_LIMITS_HOLD) return [];
  // Room for the warm-up client and the connections of the round before, which the agent may not have seen close
  // yet; the rate refills a whole round within a quarter second.
  const room = String(2 * clients + 32);
  return [
    '--workload-api-max-connections-per-uid',
    room,
    '--workload-api-max-streams-per-uid',
    room,
    '--workload-api-stream-burst-per-uid',
    room,
    '--workload-api-stream-rate-per-uid',
    String(clients * 4),
  ];
}

function load(): string {
  return execFileSync('uptime', { encoding: 'utf8' }).trim();
}

const log = (line: string): void => console.log(line);

/**
 * One unrecorded round per target, then `rounds` rounds of `clients` calls at once on each target, alternating
 * (which target goes first alternates too, so none always meets the machine right after another's burst).
 */
async function measure(
  targets: readonly Target[],
  clients: number,
  rounds: number,
  spiffeId: string,
  timeoutMs: number,
): Promise<Measure[]> {
  const measures = targets.map((target): Measure => ({
    target,
    samples: [],
    errors: 0,
    firstErrors: [],
    agentCpu: 0,
    clientCpu: 0,
    roundCpu: [],
  }));
  const round = async (run: Measure, record: boolean): Promise<string> => {
    const agentBefore = cpuSeconds(run.target.pid);
    const clientBefore = process.cpuUsage();
    const results = await Promise.allSettled(
      Array.from({ length: clients }, () => timeFirstX509Response(run.target.socketPath, spiffeId, timeoutMs)),
    );
    const clientUsed = process.cpuUsage(clientBefore);
    const agentRound = cpuSeconds(run.target.pid) - agentBefore;
    const clientRound = (clientUsed.user + clientUsed.system) / 1e6;
    const latencies: number[] = [];
    let errors = 0;
    for (const result of results) {
      if (result.status === 'fulfilled') {
        latencies.push(result.value);
        continue;
      }
      errors++;
      const message = result.reason instanceof Error ? result.reason.message : String(result.reason);
      if (run.firstErrors.length < 5) run.firstErrors.push(message);
    }
    // A warm-up round's errors count too: 0 errors is required of every call.
    run.errors += errors;
    if (!record) return '';
    run.samples.push(...latencies);
    run.agentCpu += agentRound;
    run.roundCpu.push(agentRound);
    run.clientCpu += clientRound;
    const summary = latencies.length > 0 ? formatLatency(summarize(latencies)) : 'no sample';
    return (
      `${summary}${errors > 0 ? ` | ${errors} ERRORS` : ''}` +
      ` | cpu: server ${Math.round(agentRound * 1000)} ms, clients ${Math.round(clientRound * 1000)} ms`
    );
  };
  for (const run of measures) await round(run, false);
  for (let index = 1; index <= rounds; index++) {
    const order = index % 2 === 1 ? measures : [...measures].reverse();
    for (const run of order) {
      const line = await round(run, true);
      log(`round ${String(index).padStart(2)}${measures.length > 1 ? ` ${run.target.label}` : ''}: ${line}`);
    }
  }
  return measures;
}

const perCall = (run: Measure, seconds: number): number =>
  Math.round((seconds / Math.max(1, run.samples.length)) * 1e6) / 1000;

/** Prints one phase's totals and ratios; returns its JSON. */
function report(measures: readonly Measure[], clients: number): Record<string, unknown> {
  const json: Record<string, unknown>[] = [];
  for (const run of measures) {
    const summary = run.samples.length > 0 ? summarize(run.samples) : undefined;
    const { label } = run.target;
    log(
      `${label}, ${clients} clients, all rounds: ${summary ? formatLatency(summary) : 'no sample'} | errors ${run.errors}`,
    );
    log(
      `${label}, ${clients} clients, cpu per call: server ${perCall(run, run.agentCpu)} ms, clients ` +
        `${perCall(run, run.clientCpu)} ms (both include connection setup)`,
    );
    for (const error of run.firstErrors) log(`  error: ${error}`);
    json.push({
      server: label,
      ...(summary && latencyJson(summary)),
      errors: run.errors,
      agent_cpu_ms_per_call: perCall(run, run.agentCpu),
      client_cpu_ms_per_call: perCall(run, run.clientCpu),
    });
  }
  const ratios: Record<string, number> = {};
  const medians: Record<string, number> = {};
  const current = measures[0]!;
  const round3 = (value: number): number => Math.round(value * 1000) / 1000;
  for (const other of measures.slice(1)) {
    const ratio = round3(perCall(current, current.agentCpu) / perCall(other, other.agentCpu));
    // Each round's ratio pairs rounds run one after the other, so a burst of other work on the machine weighs on
    // one pair, not on the total; their median is the steadier figure on a loaded machine.
    const paired = current.roundCpu
      .map((cpu, index) => cpu / (other.roundCpu[index] ?? Number.NaN))
      .filter((value) => Number.isFinite(value))
      .sort((a, b) => a - b);
    const median = round3(paired[Math.floor(paired.length / 2)] ?? Number.NaN);
    log(
      `server cpu per call, ${current.target.label} / ${other.target.label}: ${ratio} over all rounds, ` +
        `median of the rounds' ratios ${median} (range ${round3(paired[0] ?? NaN)}-${round3(paired.at(-1) ?? NaN)})`,
    );
    ratios[other.target.label] = ratio;
    medians[other.target.label] = median;
  }
  return { clients, results: json, cpu_ratio_of_this_build_to: ratios, median_round_cpu_ratio_to: medians };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'workload-api.bench.js',
    numbers: {
      clients: { default: 100, min: 1, max: 1000, integer: true, description: 'concurrent clients per round' },
      rounds: { default: 10, min: 1, max: 100, integer: true, description: 'measured rounds (per server)' },
      holdClients: {
        default: 1000,
        min: 0,
        max: 1000,
        integer: true,
        description: 'then rounds of this many concurrent clients, 0 errors required (0: skip)',
      },
      holdRounds: { default: 2, min: 1, max: 100, integer: true, description: 'measured rounds of --hold-clients' },
      floor: {
        default: 0,
        min: 0,
        max: 1,
        integer: true,
        description: '1: also measure a bare node:http2 server answering the same calls, rounds alternating',
      },
    },
    strings: {
      cpuProf: 'write a CPU profile of the agent (node --cpu-prof) into this directory',
      baseline: 'a built checkout whose agent (bin/sigil-agent.js) is measured beside this one, rounds alternating',
    },
  });
  const profileDir = options.strings.cpuProf === undefined ? undefined : resolve(options.strings.cpuProf);
  const baselineDir = options.strings.baseline === undefined ? undefined : resolve(options.strings.baseline);
  if (baselineDir !== undefined && !existsSync(join(baselineDir, 'dist/apps/agent/main.js'))) {
    throw new Error(`--baseline ${baselineDir}: no built agent there (dist/apps/agent/main.js)`);
  }
  const { clients, rounds, holdClients, holdRounds } = options.numbers;
  await Harness.run('workload', async (harness) => {
    const server = await harness.startServer();
    const args = limitFlags(Math.max(clients, holdClients));
    const nodeArgs = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    const targets: Target[] = [];
    const target = (label: string, agent: Pick<AgentProcess, 'process' | 'socketPath'>): Target => ({
      label,
      pid: agent.process.pid,
      socketPath: agent.socketPath,
    });
    targets.push(target('this build', await harness.startAgent(server, { args, nodeArgs })));
    if (baselineDir !== undefined) {
      const agent = await harness.startAgent(server, { args, nodeArgs, name: 'baseline', root: baselineDir });
      targets.push(target(`baseline ${baselineDir}`, agent));
    }
    const uid = currentUid();
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/workload`;
    await server.admin.createEntries([{ spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${uid}`] }]);

    // Warm caches: the entry has reached every agent and its SVID is signed before anything is timed.
    for (const { socketPath } of targets) {
      const warm = newWorkloadClient(socketPath);
      const stream = new X509SvidStream(warm);
      await stream.waitFor((message) => message.spiffeIds.has(spiffeId), RESPONSE_TIMEOUT_MS);
      stream.cancel();
      warm.close();
    }
    if (options.numbers.floor === 1) {
      // Answers with a message of about the real one's size (chain, key and bundle of the bench's SVID).
      const socketPath = join(harness.scratch, 'floor.sock');
      const bin = join(ROOT, 'dist/bench/support/bare-grpc-server.js');
      const floor = harness.spawn('floor', process.execPath, [bin, socketPath, spiffeId, '1400']);
      await floor.waitForLine(/^listening$/, RESPONSE_TIMEOUT_MS, 'the floor server listening');
      targets.push(target('floor: bare node:http2', { process: floor, socketPath }));
    }

    log(`node ${process.version}, ${server.database} database, uid ${uid}, load before: ${load()}`);
    for (const each of targets) log(`${each.label}: pid ${each.pid}`);
    if (args.length > 0) log(`agent limits sized to the clients: ${args.join(' ')}`);
    log(`FetchX509SVID first response, ${clients} concurrent clients (one connection each), ${rounds} rounds each`);
    const main = report(await measure(targets, clients, rounds, spiffeId, RESPONSE_TIMEOUT_MS), clients);
    let hold: Record<string, unknown> | undefined;
    let holdErrors = 0;
    if (holdClients > 0) {
      log(`held: ${holdClients} concurrent clients, ${holdRounds} rounds each (0 errors required)`);
      const measures = await measure(targets, holdClients, holdRounds, spiffeId, HOLD_RESPONSE_TIMEOUT_MS);
      hold = report(measures, holdClients);
      holdErrors = measures.reduce((sum, run) => sum + run.errors, 0);
    }
    const after = load();
    log(`load after: ${after}`);
    if (profileDir) log(`agent CPU profile: written to ${profileDir} when the agent stops`);
    if (options.json) {
      const [first] = main['results'] as Record<string, unknown>[];
      log(
        JSON.stringify({
          bench: 'workload_api_fetch_x509',
          clients,
          rounds,
          load_after: after,
          ...first,
          side_by_side: main,
          ...(hold && { hold }),
        }),
      );
    }
    const mainErrors = (main['results'] as { errors: number }[]).reduce((sum, each) => sum + each.errors, 0);
    if (mainErrors + holdErrors > 0) throw new Error(`${mainErrors + holdErrors} calls failed (0 errors required)`);
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
