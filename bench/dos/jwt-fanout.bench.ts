/**
 * Issue 16, finding 5: a local user fans JWT-SVID requests out through the agent. `npm run build && npx tsc -b bench
 * && node dist/bench/dos/jwt-fanout.bench.js` as root (the attacker must be another uid than the legitimate caller,
 * since the limits count per uid).
 *
 * The built sigil-server and sigil-agent run on 127.0.0.1 (embedded database unless `DATABASE_URL` is set), the
 * agent reaching the server through a TCP relay of this process that counts the connections it opens. Entries for
 * this process's uid and for `nobody`. A legitimate workload (this process) calls FetchJWTSVID every 100 ms,
 * alternately for one audience (a cache hit after the first) and for a new one (a miss: the agent asks the server),
 * first alone for `--baseline` seconds, then beside an attacker running as `nobody` that keeps `--concurrency`
 * FetchJWTSVID calls in flight for `--seconds` seconds, each for `--audiences` new audiences of `--audience-bytes`
 * bytes (the largest the agent takes by default). It prints the workload's hit and miss latency before and during
 * the attack, what the attacker's calls got, the agent's CPU and RSS, and the TLS connections the agent opened.
 * Goals: the workload's hit p99 under 100 ms (the goal for Workload API fetches) and miss p99 under 250 ms during the attack, the agent's RSS growth under
 * 50 MiB, at most the agent's connection pool (4 + 8) of new connections during the attack, the agent still running.
 */
import { chmod } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from '../support/proc.js';
import { type LatencySummary, formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';
import { fetchJwtSvid, newWorkloadClient } from '../support/workload-client.js';

const NOBODY = 65534;
// The issue's goal for Workload API fetches (issue 16: "under 100 ms for agent-API signing and Workload API
// fetches"); until 2026-12-05 this bench held cache hits to a stricter 50 ms of its own.
const HIT_P99_GOAL_MS = 100;
const MISS_P99_GOAL_MS = 250;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;
// The agent's kept-alive connections: 4 in the control lane, 8 in the JWT-SVID lane (SERVER_LANE_CONNECTIONS).
const CONNECTIONS_GOAL = 12;
const CALL_TIMEOUT_MS = 30_000;
const SAMPLE_INTERVAL_MS = 100;

/** What the attacker's calls got, as its program reports on stdout. */
interface AttackCounts {
  calls: number;
  ok: number;
  exhausted: number;
  otherStatus: Record<string, number>;
  /** Calls that ended without a gRPC status (reset, connection closed). */
  unanswered: number;
}

/**
 * The attacker: a node program with no imports of ours (it runs as nobody, who may not read the checkout) that keeps
 * `concurrency` FetchJWTSVID calls in flight on one HTTP/2 connection, each for ever-new audiences, and prints its
 * counts when the time is up. The request is encoded by hand: field 1 (audience), length-delimited, per audience.
 */
const ATTACKER = `
const http2 = require('http2'), net = require('net');
const [path, concurrency, audiences, audienceBytes, seconds] = process.argv.slice(1).map((v, i) => i ? Number(v) : v);
const counts = { calls: 0, ok: 0, exhausted: 0, otherStatus: {}, unanswered: 0 };
let ending = false, serial = 0;
const session = http2.connect('http://localhost', { createConnection: () => net.connect(path) });
session.on('error', () => undefined);
function varint(n) { const out = []; while (n > 127) { out.push((n & 127) | 128); n >>>= 7; } out.push(n); return out; }
function request() {
  const parts = [];
  for (let i = 0; i < audiences; i++) {
    const value = Buffer.from((serial++ + '-').padEnd(audienceBytes, 'x'));
    parts.push(Buffer.from([0x0a, ...varint(value.length)]), value);
  }
  const message = Buffer.concat(parts);
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}
function call() {
  if (ending) return;
  counts.calls++;
  const stream = session.request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchJWTSVID',
    'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
  let answered = false;
  const status = (headers) => {
    const code = headers['grpc-status'];
    if (code === undefined) return;
    answered = true;
    if (code === '0') counts.ok++;
    else if (code === '8') counts.exhausted++;
    else counts.otherStatus[code] = (counts.otherStatus[code] || 0) + 1;
  };
  stream.on('response', status);
  stream.on('trailers', status);
  stream.on('data', () => undefined);
  stream.on('error', () => undefined);
  stream.on('close', () => { if (!answered && !ending) counts.unanswered++; setImmediate(call); });
  stream.end(request());
}
for (let i = 0; i < concurrency; i++) call();
setTimeout(() => {
  ending = true;
  process.stdout.write(JSON.stringify(counts) + '\\n', () => process.exit(0));
  session.destroy();
}, seconds * 1000);
`;

/** A TCP relay on 127.0.0.1 to `port` that counts the connections made through it. */
async function countingRelay(port: number): Promise<{ port: number; opened(): number; close(): void }> {
  let opened = 0;
  const sockets = new Set<Socket>();
  const relay = createServer((inbound) => {
    opened++;
    const outbound = connect(port, '127.0.0.1');
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('close', () => sockets.delete(socket));
    }
    inbound.pipe(outbound).pipe(inbound);
    inbound.once('close', () => outbound.destroy());
    outbound.once('close', () => inbound.destroy());
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as AddressInfo).port,
    opened: () => opened,
    close: () => {
      for (const socket of sockets) socket.destroy();
      relay.close();
    },
  };
}

/**
 * The workload: FetchJWTSVID every 100 ms on its own connection, alternately for the same audience (a hit after the
 * first call) and a new one (a miss), until `until` resolves.
 */
async function legitimateCaller(
  socketPath: string,
  spiffeId: string,
  until: Promise<unknown>,
  tag: string,
): Promise<{ hits: number[]; misses: number[]; slowest: { latency: number; startedAt: number; miss: boolean } }> {
  let done = false;
  let slowest = { latency: 0, startedAt: 0, miss: false };
  void until.then(() => (done = true));
  const client = newWorkloadClient(socketPath, { ownConnection: true });
  const hits: number[] = [];
  const misses: number[] = [];
  try {
    await fetchJwtSvid(client, ['bench-hit'], spiffeId, CALL_TIMEOUT_MS);
    for (let n = 0; !done; n++) {
      const miss = n % 2 === 1;
      const started = performance.now();
      await fetchJwtSvid(client, [miss ? `bench-miss-${tag}-${n}` : 'bench-hit'], spiffeId, CALL_TIMEOUT_MS);
      const latency = performance.now() - started;
      (miss ? misses : hits).push(latency);
      if (latency > slowest.latency) slowest = { latency, startedAt: started, miss };
      await sleep(SAMPLE_INTERVAL_MS);
    }
  } finally {
    client.close();
  }
  return { hits, misses, slowest };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/jwt-fanout.bench.js',
    strings: {
      agentNodeArgs: "options for the agent's node, space-separated (e.g. --cpu-prof --cpu-prof-dir=DIR)",
    },
    numbers: {
      seconds: { default: 10, min: 1, max: 60, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the workload alone' },
      concurrency: { default: 64, min: 1, max: 1000, integer: true, description: "attacker's calls in flight" },
      audiences: { default: 16, min: 1, max: 64, integer: true, description: 'new audiences per attacking call' },
      audienceBytes: { default: 2048, min: 8, max: 8192, integer: true, description: 'bytes per audience' },
    },
  });
  const { seconds, baseline, concurrency, audiences, audienceBytes } = options.numbers;
  const uid = currentUid();
  if (uid !== 0) throw new Error('run as root: the attacker runs as nobody, another uid than the workload');
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-jwt-fanout', async (harness) => {
    const server = await harness.startServer();
    const relay = await countingRelay(server.port);
    harness.onClose(async () => relay.close());
    const agent = await harness.startAgent(
      { ...server, port: relay.port },
      { nodeArgs: options.strings.agentNodeArgs?.split(' ').filter(Boolean) },
    );
    // nobody must reach the agent's socket in the scratch directory (traverse only, no listing).
    await chmod(harness.scratch, 0o711);
    const pid = agent.process.pid;
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/workload`;
    await server.admin.createEntries([
      { spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${uid}`] },
      { spiffeId: `spiffe://${TRUST_DOMAIN}/bench/nobody`, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${NOBODY}`] },
    ]);
    // Until the entry has reached the agent, the call answers PERMISSION_DENIED.
    const warm = newWorkloadClient(agent.socketPath);
    for (let attempt = 0; ; attempt++) {
      try {
        await fetchJwtSvid(warm, ['bench-warm'], spiffeId, CALL_TIMEOUT_MS);
        break;
      } catch (error) {
        if (attempt >= 300) throw error;
        await sleep(100);
      }
    }
    warm.close();
    log(`node ${process.version}, ${server.database} database, agent pid ${pid}`);

    const rssStart = residentMemory(pid).rssKiB;
    const connectionsStart = relay.opened();
    const baselineRss = sampleRss(pid);
    const before = await legitimateCaller(agent.socketPath, spiffeId, sleep(baseline * 1000), 'before');
    const rssBefore = baselineRss.stop();
    const connectionsBefore = relay.opened() - connectionsStart;
    const beforeHits = summarize(before.hits);
    const beforeMisses = summarize(before.misses);
    log(`workload alone, hits:           ${formatLatency(beforeHits)}`);
    log(`workload alone, misses:         ${formatLatency(beforeMisses)}`);

    const cpuBefore = cpuSeconds(pid);
    const connectionsAttackStart = relay.opened();
    const attackRss = sampleRss(pid);
    const attacker = spawn('setpriv', [
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      '--clear-groups',
      process.execPath,
      '-e',
      ATTACKER,
      agent.socketPath,
      String(concurrency),
      String(audiences),
      String(audienceBytes),
      String(seconds),
    ]);
    let output = '';
    attacker.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    attacker.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    const exited = new Promise<number | null>((resolve) => attacker.once('exit', (code) => resolve(code)));
    const startedAt = performance.now();
    const during = await legitimateCaller(agent.socketPath, spiffeId, exited, 'during');
    const { slowest } = during;
    log(
      `slowest call during the attack: a ${slowest.miss ? 'miss' : 'hit'} of ${slowest.latency.toFixed(1)} ms, started ` +
        `${((slowest.startedAt - startedAt) / 1000).toFixed(2)} s after the attacker (` +
        `${new Date(performance.timeOrigin + slowest.startedAt).toISOString()})`,
    );
    const rssMax = attackRss.stop();
    const attackSeconds = (performance.now() - startedAt) / 1000;
    const code = await exited;
    if (code !== 0) throw new Error(`the attacker exited with ${code}: ${output}`);
    const counts = JSON.parse(output) as AttackCounts;
    const cpu = cpuSeconds(pid) - cpuBefore;
    const connectionsDuring = relay.opened() - connectionsAttackStart;
    const rss = residentMemory(pid);
    const agentRunning = agent.process.isRunning;
    const duringHits = summarize(during.hits);
    const duringMisses = summarize(during.misses);

    log(`workload during attack, hits:   ${formatLatency(duringHits)}`);
    log(`workload during attack, misses: ${formatLatency(duringMisses)}`);
    log(
      `attacker (uid ${NOBODY}): ${formatCount(counts.calls)} FetchJWTSVID calls of ${audiences} x ${audienceBytes} ` +
        `bytes in ${attackSeconds.toFixed(1)} s: ${formatCount(counts.ok)} signed, ${formatCount(counts.exhausted)} ` +
        `RESOURCE_EXHAUSTED, other statuses ${JSON.stringify(counts.otherStatus)}, ` +
        `${formatCount(counts.unanswered)} unanswered`,
    );
    log(
      `agent: CPU ${cpu.toFixed(2)} s during the attack, RSS ${formatMiB(rssStart)} at start, ` +
        `max ${formatMiB(rssBefore)} with the workload alone, max ${formatMiB(rssMax)} during the attack, ` +
        `now ${formatMiB(rss.rssKiB)}${agentRunning ? '' : ', EXITED'}`,
    );
    log(
      `new TLS connections to the server: ${connectionsStart} to start and warm up, ${connectionsBefore} with the ` +
        `workload alone, ${connectionsDuring} during the attack`,
    );
    const p99 = (summary: LatencySummary, goal: number, what: string): string[] =>
      summary.p99 < goal ? [] : [`the workload's ${what} p99 was ${summary.p99.toFixed(1)} ms (goal < ${goal} ms)`];
    const failures = [
      ...(agentRunning ? [] : ['the agent exited']),
      ...(rssMax - rssBefore < RSS_GROWTH_GOAL_KIB
        ? []
        : [`the agent's RSS grew ${formatMiB(rssMax - rssBefore)} (goal < 50 MiB)`]),
      ...p99(duringHits, HIT_P99_GOAL_MS, 'hit'),
      ...p99(duringMisses, MISS_P99_GOAL_MS, 'miss'),
      ...(connectionsDuring <= CONNECTIONS_GOAL
        ? []
        : [`the agent opened ${connectionsDuring} connections during the attack (goal <= ${CONNECTIONS_GOAL})`]),
    ];
    log(failures.length === 0 ? 'PASS: goals met' : `FAIL: ${failures.join('; ')}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-jwt-fanout',
          database: server.database,
          workload_before: { hits: latencyJson(beforeHits), misses: latencyJson(beforeMisses) },
          workload_during: { hits: latencyJson(duringHits), misses: latencyJson(duringMisses) },
          attack: { ...counts, audiences, audience_bytes: audienceBytes, concurrency, seconds: attackSeconds },
          agent_cpu_s: Math.round(cpu * 100) / 100,
          agent_rss_start_kib: rssStart,
          agent_rss_before_kib: rssBefore,
          agent_rss_max_kib: rssMax,
          agent_running: agentRunning,
          tls_connections: { start: connectionsStart, before: connectionsBefore, during: connectionsDuring },
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
