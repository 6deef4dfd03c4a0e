/**
 * Issue 16, finding 9: a local user makes the agent hash a large executable again and again. `npm run build && npx
 * tsc -b bench && node dist/bench/dos/sha256-rehash.bench.js` as root (the attacker must be another uid than the
 * legitimate caller, since the hashing quota counts per uid).
 *
 * The built sigil-server and sigil-agent run on 127.0.0.1 (embedded database unless `DATABASE_URL` is set). Every
 * entry is pinned by `unix:sha256`, so the agent must hash the executable of every caller: this process's (node
 * itself: hashed once, then cached) and nobody's. A legitimate workload (this process) opens a FetchX509SVID stream
 * on its own connection and times its first message, every 50 ms, first alone for `--baseline` seconds, then beside
 * `--concurrency` attacking processes of `nobody`, each running from its own copy of node padded to `--size-mib`
 * MiB (127: just under the 128 MiB size limit), which for `--seconds` seconds loop on `touch` of their own
 * executable (a new file version: new mtime and ctime, so no cached digest applies) and a FetchX509SVID call. An
 * attacker's call served with its SVID was hashed (its entry needs the digest); PERMISSION_DENIED means it got no
 * digest (over its uid's quota); RESOURCE_EXHAUSTED is the Workload API's rate of new calls per uid. Prints the
 * workload's latency before and during, the attackers' calls served and denied against the hashes the quota allows,
 * and the agent's CPU and RSS. Goals: the workload's p99 under 100 ms, no more hashes than the quota allows
 * (`--quota-mib`, passed to the agent), the agent's RSS growth under 50 MiB, the agent still running.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, currentUid } from '../support/harness.js';
import { RESPONSE_TIMEOUT_MS, legitimateCaller, sleep } from '../support/legitimate-caller.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';
import { X509SvidStream, newWorkloadClient } from '../support/workload-client.js';

const NOBODY = 65534;
const MIB = 1024 * 1024;
const P99_GOAL_MS = 100;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;
// The agent's defaults (README, Workload API limits), unless the run passes other --agent-args.
const DEFAULT_QUOTA_MIB_PER_MINUTE = 512;

/** What the attacker's calls got, as its program reports on stdout. */
interface AttackCounts {
  calls: number;
  touches: number;
  served: number;
  denied: number;
  otherStatus: Record<string, number>;
  /** Calls that ended with neither a message nor a status. */
  unanswered: number;
}

/**
 * The attacker: a node program with no imports of ours (it runs as nobody, who may not read the checkout), run from
 * its own padded copy of node, that touches that executable and calls FetchX509SVID in `concurrency` loops, and
 * prints its counts when the time is up.
 */
const ATTACKER = `
const http2 = require('http2'), net = require('net'), fs = require('fs');
const [path, seconds] = process.argv.slice(1);
const counts = { calls: 0, touches: 0, served: 0, denied: 0, otherStatus: {}, unanswered: 0 };
const deadline = Date.now() + Number(seconds) * 1000;
let session;
function connect() {
  if (session && !session.closed && !session.destroyed) return session;
  session = http2.connect('http://localhost', { createConnection: () => net.connect(path) });
  session.on('error', () => undefined);
  return session;
}
function call() {
  return new Promise((resolve) => {
    let request;
    try {
      request = connect().request({ ':method': 'POST', ':path': '/SpiffeWorkloadAPI/FetchX509SVID',
        'content-type': 'application/grpc', te: 'trailers', 'workload.spiffe.io': 'true' });
    } catch {
      session = undefined;
      counts.unanswered++;
      return setTimeout(resolve, 10);
    }
    counts.calls++;
    let answered = false;
    const status = (headers) => {
      const code = headers['grpc-status'];
      if (code === undefined || answered) return;
      answered = true;
      if (code === '7') counts.denied++;
      else counts.otherStatus[code] = (counts.otherStatus[code] || 0) + 1;
    };
    request.on('response', status);
    request.on('trailers', status);
    // A served stream stays open (it is a watch): it is cancelled once its first message is in.
    request.on('data', () => { if (!answered) { answered = true; counts.served++; request.close(); } });
    request.on('error', () => undefined);
    request.on('close', () => { if (!answered) counts.unanswered++; resolve(); });
    request.end(Buffer.alloc(5));
  });
}
(async () => {
  while (Date.now() < deadline) {
    const now = new Date();
    fs.utimesSync(process.execPath, now, now);
    counts.touches++;
    await call();
  }
  process.stdout.write(JSON.stringify(counts) + '\\n', () => process.exit(0));
  session?.destroy();
})();
`;

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/sha256-rehash.bench.js',
    numbers: {
      seconds: { default: 20, min: 1, max: 120, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the workload alone' },
      concurrency: {
        default: 2,
        min: 1,
        max: 8,
        integer: true,
        description: 'attacking processes, each with its own executable',
      },
      sizeMib: {
        default: 127,
        min: 1,
        max: 1024,
        integer: true,
        description: "size of the attacker's executable in MiB (a padded copy of node)",
      },
      quotaMib: {
        default: DEFAULT_QUOTA_MIB_PER_MINUTE,
        min: 0,
        max: 1024 * 1024,
        integer: true,
        description: "the agent's --unix-sha256-quota-mib-per-uid, passed to it (the goal is computed from it)",
      },
    },
    strings: {
      agentArgs: 'extra `sigil-agent run` flags, space-separated',
      agentNodeArgs: "options for the agent's node, space-separated (e.g. --cpu-prof --cpu-prof-dir=DIR)",
    },
  });
  const { seconds, baseline, concurrency, sizeMib, quotaMib } = options.numbers;
  const uid = currentUid();
  if (uid !== 0) throw new Error('run as root: the attacker runs as nobody, another uid than the workload');
  if (sizeMib * MIB < statSync(process.execPath).size) {
    throw new Error(`--size-mib: the attacker's executable is a copy of node, which is larger than ${sizeMib} MiB`);
  }
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-sha256-rehash', async (harness) => {
    // The attackers' executables: copies of node, padded with zeros (the ELF loader ignores them), owned by nobody
    // in a directory of its own, so that it may touch them; one per attacking process, so that every call follows a
    // touch of the file its own process runs and every call served was hashed (two processes touching one file
    // within one kernel clock tick would make one version, hashed once for both).
    const attackerDir = join(harness.scratch, 'nobody');
    await mkdir(attackerDir);
    await chown(attackerDir, NOBODY, NOBODY);
    const attackerExes: string[] = [];
    for (let i = 0; i < concurrency; i++) {
      const exe = join(attackerDir, `node-${i}`);
      await copyFile(process.execPath, exe);
      await truncate(exe, sizeMib * MIB);
      await chown(exe, NOBODY, NOBODY);
      await chmod(exe, 0o755);
      attackerExes.push(exe);
    }
    const attackerExe = attackerExes[0]!;
    const [workloadDigest, attackerDigest] = await Promise.all([
      sha256OfFile(process.execPath),
      sha256OfFile(attackerExe),
    ]);

    const server = await harness.startServer();
    const agent = await harness.startAgent(server, {
      args: [
        '--unix-sha256-quota-mib-per-uid',
        String(quotaMib),
        ...(options.strings.agentArgs?.split(' ').filter(Boolean) ?? []),
      ],
      nodeArgs: options.strings.agentNodeArgs?.split(' ').filter(Boolean),
    });
    // nobody must reach the agent's socket and its own directory in the scratch directory (traverse only).
    await chmod(harness.scratch, 0o711);
    const pid = agent.process.pid;
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/workload`;
    await server.admin.createEntries([
      { spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${uid}`, `unix:sha256:${workloadDigest}`] },
      {
        spiffeId: `spiffe://${TRUST_DOMAIN}/bench/nobody`,
        parentId: NODE_ALIAS_ID,
        selectors: [`unix:uid:${NOBODY}`, `unix:sha256:${attackerDigest}`],
      },
    ]);
    // The first call hashes node for this uid: from then on its digest is cached (node is not touched).
    const warm = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(warm);
    await stream.waitFor((message) => message.spiffeIds.has(spiffeId), RESPONSE_TIMEOUT_MS);
    stream.cancel();
    warm.close();
    log(`node ${process.version}, ${server.database} database, agent pid ${pid}`);

    const baselineRss = sampleRss(pid);
    const before = summarize(await legitimateCaller(agent.socketPath, spiffeId, sleep(baseline * 1000)));
    const rssBefore = baselineRss.stop();
    log(`workload alone:         ${formatLatency(before)}`);

    const cpuBefore = cpuSeconds(pid);
    const attackRss = sampleRss(pid);
    const attackers = attackerExes.map((exe) => {
      const attacker = spawn('setpriv', [
        `--reuid=${NOBODY}`,
        `--regid=${NOBODY}`,
        '--clear-groups',
        exe,
        '-e',
        ATTACKER,
        agent.socketPath,
        String(seconds),
      ]);
      let output = '';
      attacker.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      attacker.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
      return new Promise<AttackCounts>((resolve, reject) =>
        attacker.once('exit', (code) =>
          code === 0
            ? resolve(JSON.parse(output) as AttackCounts)
            : reject(new Error(`an attacker exited with ${code}: ${output}`)),
        ),
      );
    });
    const exited = Promise.allSettled(attackers);
    const startedAt = performance.now();
    const during = summarize(await legitimateCaller(agent.socketPath, spiffeId, exited));
    const rssMax = attackRss.stop();
    const attackSeconds = (performance.now() - startedAt) / 1000;
    const counts: AttackCounts = { calls: 0, touches: 0, served: 0, denied: 0, otherStatus: {}, unanswered: 0 };
    for (const each of await Promise.all(attackers)) {
      for (const key of ['calls', 'touches', 'served', 'denied', 'unanswered'] as const) counts[key] += each[key];
      for (const [status, n] of Object.entries(each.otherStatus)) {
        counts.otherStatus[status] = (counts.otherStatus[status] ?? 0) + n;
      }
    }
    const cpu = cpuSeconds(pid) - cpuBefore;
    const agentRunning = agent.process.isRunning;

    // Each served call of an attacker followed its touch of its own executable: one hash of a new file version. The
    // quota allows quota/size hashes per minute window; the attack spans at most ceil(seconds/60) + 1 windows.
    const hashesAllowed = quotaMib === 0 ? 0 : Math.floor(quotaMib / sizeMib) * (Math.ceil(attackSeconds / 60) + 1);
    log(`workload during attack: ${formatLatency(during)}`);
    log(
      `attackers (uid ${NOBODY}, ${concurrency} processes, each its own ${sizeMib} MiB executable, ` +
        `${attackSeconds.toFixed(1)} s): ` +
        `${formatCount(counts.touches)} touches, ${formatCount(counts.calls)} calls: ${formatCount(counts.served)} ` +
        `served (hashed), ${formatCount(counts.denied)} PERMISSION_DENIED (no digest), other statuses ` +
        `${JSON.stringify(counts.otherStatus)}, ${formatCount(counts.unanswered)} unanswered; the quota allows at ` +
        `most ${hashesAllowed} hashes`,
    );
    log(
      `agent: CPU ${cpu.toFixed(2)} s during the attack (${((cpu / attackSeconds) * 100).toFixed(0)} % of a core), ` +
        `RSS max ${formatMiB(rssBefore)} with the workload alone, max ${formatMiB(rssMax)} during the attack ` +
        `(+${formatMiB(rssMax - rssBefore)}), now ` +
        `${formatMiB(residentMemory(pid).rssKiB)}${agentRunning ? '' : ', EXITED'}`,
    );
    const failures = [
      ...(agentRunning ? [] : ['the agent exited']),
      ...(counts.served <= hashesAllowed
        ? []
        : [`the attacker had ${counts.served} calls hashed (the quota allows ${hashesAllowed})`]),
      ...(during.p99 < P99_GOAL_MS ? [] : [`the workload's p99 was ${during.p99.toFixed(1)} ms (goal < 100 ms)`]),
      ...(rssMax - rssBefore < RSS_GROWTH_GOAL_KIB
        ? []
        : [`the agent's RSS grew ${formatMiB(rssMax - rssBefore)} (goal < 50 MiB)`]),
    ];
    log(failures.length === 0 ? 'goals met: PASS' : `goals missed: FAIL: ${failures.join('; ')}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-sha256-rehash',
          database: server.database,
          workload_before: latencyJson(before),
          workload_during: latencyJson(during),
          attack: { ...counts, seconds: attackSeconds, size_mib: sizeMib, concurrency },
          quota_mib_per_minute: quotaMib,
          hashes_allowed: hashesAllowed,
          agent_cpu_s: Math.round(cpu * 100) / 100,
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
