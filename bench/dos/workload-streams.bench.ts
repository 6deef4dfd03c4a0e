/**
 * Issue 16, finding 6: one local user opens thousands of Workload API streams. `npm run build && npx tsc -b bench &&
 * node dist/bench/dos/workload-streams.bench.js` as root (the attacker must be another uid than the legitimate
 * caller, since the limits count per uid).
 *
 * The built sigil-server and sigil-agent run on 127.0.0.1 (embedded database unless `DATABASE_URL` is set), with an
 * entry for this process's uid and one for `nobody`. A legitimate workload (this process) opens a FetchX509SVID
 * stream on its own connection and times its first message, every 50 ms, first alone for `--baseline`
 * seconds, then beside an attacker running as `nobody` that opens `--connections` connections with
 * `--streams-per-connection` FetchX509SVID streams each and holds them for `--seconds` seconds (every stream it gets
 * is a real SVID stream: nobody has an entry). It prints the workload's latency before and during the attack, what
 * the attacker's streams got (served, RESOURCE_EXHAUSTED, refused, connections closed), and the agent's CPU and RSS.
 * Goals: the workload's p99 under 100 ms, the agent's RSS growth under 50 MiB, the agent still running.
 */
import { chmod } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';
import { RESPONSE_TIMEOUT_MS, legitimateCaller, sleep } from '../support/legitimate-caller.js';
import { X509SvidStream, newWorkloadClient } from '../support/workload-client.js';

const NOBODY = 65534;
const P99_GOAL_MS = 100;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;

/** What the attacker's streams got, as its program reports on stdout. */
interface AttackCounts {
  opened: number;
  served: number;
  exhausted: number;
  /** Streams that ended with neither a message nor a status: refused (RST_STREAM) or on a closed connection. */
  unanswered: number;
  otherStatus: Record<string, number>;
  /** Connections the agent closed during the attack. */
  sessionsClosed: number;
}

/**
 * The attacker: a node program with no imports of ours (it runs as nobody, who may not read the checkout) that opens
 * the connections and streams, reads and drops what it gets, and prints its counts when the time is up.
 */
const ATTACKER = `
const http2 = require('http2'), net = require('net');
const [path, connections, perConnection, seconds] = process.argv.slice(1);
const counts = { opened: 0, served: 0, exhausted: 0, unanswered: 0, otherStatus: {}, sessionsClosed: 0 };
let ending = false;
const sessions = [];
for (let c = 0; c < Number(connections); c++) {
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(path) });
  session.on('error', () => undefined);
  session.on('close', () => { if (!ending) counts.sessionsClosed++; });
  sessions.push(session);
  for (let i = 0; i < Number(perConnection); i++) {
    const request = session.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID',
      'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
    counts.opened++;
    let served = false;
    let answered = false;
    const status = (headers) => {
      const code = headers['grpc-status'];
      if (code !== undefined) answered = true;
      if (code === '8') counts.exhausted++;
      else if (code !== undefined) counts.otherStatus[code] = (counts.otherStatus[code] || 0) + 1;
    };
    request.on('response', status);
    request.on('trailers', status);
    request.on('data', () => { if (!served) { served = true; answered = true; counts.served++; } });
    request.on('error', () => undefined);
    request.on('close', () => { if (!answered && !ending) counts.unanswered++; });
    request.end(Buffer.alloc(5));
  }
}
setTimeout(() => {
  ending = true;
  process.stdout.write(JSON.stringify(counts) + '\\n', () => process.exit(0));
  for (const session of sessions) session.destroy();
}, Number(seconds) * 1000);
`;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/workload-streams.bench.js',
    strings: {
      agentArgs: 'extra `sigil-agent run` flags, space-separated (e.g. other Workload API limits)',
      agentNodeArgs: "options for the agent's node, space-separated (e.g. --cpu-prof --cpu-prof-dir=DIR)",
    },
    numbers: {
      seconds: { default: 10, min: 1, max: 60, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the workload alone' },
      connections: { default: 140, min: 1, max: 500, integer: true, description: 'attacking connections' },
      streamsPerConnection: {
        default: 50,
        min: 1,
        max: 5000,
        integer: true,
        description: 'FetchX509SVID streams per attacking connection',
      },
    },
  });
  const { seconds, baseline, connections, streamsPerConnection } = options.numbers;
  const uid = currentUid();
  if (uid !== 0) throw new Error('run as root: the attacker runs as nobody, another uid than the workload');
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-workload-streams', async (harness) => {
    const server = await harness.startServer();
    const agent = await harness.startAgent(server, {
      args: options.strings.agentArgs?.split(' ').filter(Boolean),
      nodeArgs: options.strings.agentNodeArgs?.split(' ').filter(Boolean),
    });
    // nobody must reach the agent's socket in the scratch directory (traverse only, no listing); after the start,
    // since the server makes the directory of its admin socket, this one, 0700.
    await chmod(harness.scratch, 0o711);
    const pid = agent.process.pid;
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/workload`;
    await server.admin.createEntries([
      { spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${uid}`] },
      { spiffeId: `spiffe://${TRUST_DOMAIN}/bench/nobody`, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${NOBODY}`] },
    ]);
    const warm = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(warm);
    await stream.waitFor((message) => message.spiffeIds.has(spiffeId), RESPONSE_TIMEOUT_MS);
    stream.cancel();
    warm.close();
    log(`node ${process.version}, ${server.database} database, agent pid ${pid}`);

    const rssStart = residentMemory(pid).rssKiB;
    const baselineRss = sampleRss(pid);
    const before = summarize(await legitimateCaller(agent.socketPath, spiffeId, sleep(baseline * 1000)));
    // The attack's growth is measured from the largest RSS of the workload alone: its own calls grow the heap too.
    const rssBefore = baselineRss.stop();
    log(`workload alone:         ${formatLatency(before)}`);

    const cpuBefore = cpuSeconds(pid);
    const attackRss = sampleRss(pid);
    const attacker = spawn('setpriv', [
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      '--clear-groups',
      process.execPath,
      '-e',
      ATTACKER,
      agent.socketPath,
      String(connections),
      String(streamsPerConnection),
      String(seconds),
    ]);
    let output = '';
    attacker.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    attacker.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    const exited = new Promise<number | null>((resolve) => attacker.once('exit', (code) => resolve(code)));
    const startedAt = performance.now();
    const during = summarize(await legitimateCaller(agent.socketPath, spiffeId, exited));
    const rssMax = attackRss.stop();
    const attackSeconds = (performance.now() - startedAt) / 1000;
    const code = await exited;
    if (code !== 0) throw new Error(`the attacker exited with ${code}: ${output}`);
    const counts = JSON.parse(output) as AttackCounts;
    const cpu = cpuSeconds(pid) - cpuBefore;
    const rss = residentMemory(pid);
    const agentRunning = agent.process.isRunning;

    log(`workload during attack: ${formatLatency(during)}`);
    log(
      `attacker (uid ${NOBODY}): ${formatCount(counts.opened)} streams on ${connections} connections for ` +
        `${attackSeconds.toFixed(1)} s: ${formatCount(counts.served)} served, ${formatCount(counts.exhausted)} ` +
        `RESOURCE_EXHAUSTED, ${formatCount(counts.unanswered)} refused or on a closed connection, other statuses ` +
        `${JSON.stringify(counts.otherStatus)}; ${formatCount(counts.sessionsClosed)} connections closed by the agent`,
    );
    log(
      `agent: CPU ${cpu.toFixed(2)} s during the attack, RSS ${formatMiB(rssStart)} at start, ` +
        `max ${formatMiB(rssBefore)} with the workload alone, max ${formatMiB(rssMax)} during the attack, ` +
        `now ${formatMiB(rss.rssKiB)}${agentRunning ? '' : ', EXITED'}`,
    );
    const failures = [
      ...(agentRunning ? [] : ['the agent exited']),
      ...(rssMax - rssBefore < RSS_GROWTH_GOAL_KIB
        ? []
        : [`the agent's RSS grew ${formatMiB(rssMax - rssBefore)} (goal < 50 MiB)`]),
      ...(during.p99 < P99_GOAL_MS ? [] : [`the workload's p99 was ${during.p99.toFixed(1)} ms (goal < 100 ms)`]),
    ];
    log(failures.length === 0 ? 'goals met' : `goals missed: ${failures.join('; ')}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-workload-streams',
          database: server.database,
          workload_before: latencyJson(before),
          workload_during: latencyJson(during),
          attack: counts,
          agent_cpu_s: Math.round(cpu * 100) / 100,
          agent_rss_start_kib: rssStart,
          agent_rss_before_kib: rssBefore,
          agent_rss_max_kib: rssMax,
          agent_running: agentRunning,
          goals_met: failures.length === 0,
        }),
      );
    }
    if (failures.length > 0) process.exitCode = 1;
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
