/**
 * Issue 16, finding 2: one attested agent floods the server with X.509-SVID batches. `npm run build && npx tsc -b
 * bench && node dist/bench/dos/signing-flood.bench.js`.
 *
 * The built sigil-server runs on 127.0.0.1 under `taskset -c 0` (one core, embedded database unless `DATABASE_URL` is
 * set) with its default signing limits. Two kinds of agents attest with join tokens: a legitimate one, which has one
 * entry and posts 1-CSR batches one after another (`POST /agent/v1/svids/x509`, 20 ms apart, as an agent rotating one
 * SVID would), timed first alone for `--baseline` seconds, then beside `--attackers` attacking agents. Each attacker
 * runs in a child process under `taskset -c 1` with `--connections` kept-alive mTLS connections, each posting full
 * batches of `--batch` CSRs as fast as the server answers, for `--seconds` seconds. `--attacker-entries` is how many
 * distinct entries an attacker's batch names: 1 is the batch of one CSR repeated (the measurement: every copy
 * used to be signed), `--batch` makes every CSR of the batch one to sign.
 *
 * It prints the legitimate agent's latency before and during the attack, what the attackers got (200 with how many
 * CSRs signed, 429, 503, other), and the server's CPU and RSS. Goals: the legitimate p99 under 100 ms, the server's
 * RSS growth under 50 MiB, the server still running, and the attackers refused (429).
 */
import { AGENT_API_ROUTES, type BatchX509SvidResponseWire, serializeX509SvidBatchRequest } from '@sigil/agent-api';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCsr, generateKeyPair } from '@sigil/pki';
import { SpiffeId } from '@sigil/spiffe';
import { ATTACKER_CPU } from '../support/attack-worker.js';
import { AgentApiClient, type AgentApiOptions, type AgentCredentials } from '../support/agent-api-client.js';
import { Harness, TRUST_DOMAIN, currentUid } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';

const SERVER_CPU = '0';
const P99_GOAL_MS = 100;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;
const SAMPLE_INTERVAL_MS = 20;

/** What one attacking agent's connections got, as its program prints on stdout. */
interface AttackCounts {
  requests: number;
  ok: number;
  signed: number;
  refused429: number;
  unavailable503: number;
  other: Record<string, number>;
  errors: number;
}

/**
 * The attacker: a node program with no imports of ours, so its load is its own process's. It reads its credentials
 * and the body from files, posts the body on every connection until the time is up and prints its counts.
 */
const ATTACKER = `
const https = require('https'), fs = require('fs');
const [port, dir, connections, seconds] = process.argv.slice(1);
const read = (name) => fs.readFileSync(dir + '/' + name, 'utf8');
const body = read('body.json');
const agent = new https.Agent({ keepAlive: true, maxSockets: Number(connections), ca: read('ca.pem'),
  cert: read('cert.pem'), key: read('key.pem'), checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
const counts = { requests: 0, ok: 0, signed: 0, refused429: 0, unavailable503: 0, other: {}, errors: 0 };
const deadline = Date.now() + Number(seconds) * 1000;
const post = () => new Promise((resolve) => {
  const req = https.request({ host: '127.0.0.1', port: Number(port), method: 'POST', path: ${JSON.stringify(AGENT_API_ROUTES.signX509Svids.path)},
    agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
    const chunks = [];
    res.on('data', (chunk) => chunks.push(chunk));
    res.on('end', () => {
      counts.requests++;
      if (res.statusCode === 200) {
        counts.ok++;
        const { results } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        counts.signed += results.filter((result) => result.status.code === 'ok').length;
      } else if (res.statusCode === 429) counts.refused429++;
      else if (res.statusCode === 503) counts.unavailable503++;
      else counts.other[res.statusCode] = (counts.other[res.statusCode] || 0) + 1;
      resolve();
    });
  });
  req.on('error', () => { counts.errors++; resolve(); });
  req.end(body);
});
const connection = async () => { while (Date.now() < deadline) await post(); };
Promise.all(Array.from({ length: Number(connections) }, connection)).then(() => {
  agent.destroy();
  process.stdout.write(JSON.stringify(counts) + '\\n');
});
`;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A CSR for `spiffeId` with a fresh P-256 key. */
async function csrFor(spiffeId: string): Promise<string> {
  return (await createCsr({ keys: await generateKeyPair('ec-p256'), spiffeId: SpiffeId.parse(spiffeId) })).pem;
}

/** The legitimate agent's 1-CSR batch latencies, one request after another, until `until` resolves. */
async function legitimateAgent(client: AgentApiClient, body: string, until: Promise<unknown>): Promise<number[]> {
  let done = false;
  void until.then(() => (done = true));
  const latencies: number[] = [];
  while (!done) {
    const started = performance.now();
    const { results } = (await client.call(AGENT_API_ROUTES.signX509Svids, body)) as BatchX509SvidResponseWire;
    if (results[0]?.status.code !== 'ok') throw new Error(`legitimate CSR refused: ${JSON.stringify(results[0])}`);
    latencies.push(performance.now() - started);
    await sleep(SAMPLE_INTERVAL_MS);
  }
  return latencies;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/signing-flood.bench.js',
    numbers: {
      seconds: { default: 10, min: 1, max: 60, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the legitimate agent alone' },
      attackers: { default: 1, min: 1, max: 16, integer: true, description: 'attacking agents' },
      connections: { default: 16, min: 1, max: 64, integer: true, description: 'connections per attacking agent' },
      batch: { default: 500, min: 1, max: 500, integer: true, description: 'CSRs per attacking request' },
      attackerEntries: {
        default: 500,
        min: 1,
        max: 500,
        integer: true,
        description: 'distinct entries per attacking batch (1: one CSR repeated)',
      },
    },
    strings: { cpuProf: 'write a CPU profile of the server (node --cpu-prof) into this directory' },
  });
  const { seconds, baseline, attackers, connections, batch } = options.numbers;
  const attackerEntries = Math.min(options.numbers.attackerEntries, batch);
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-signing-flood', async (harness) => {
    const profileDir = options.strings.cpuProf;
    const server = await harness.startServer({
      cpus: SERVER_CPU,
      ...(profileDir !== undefined && { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', resolve(profileDir)] }),
    });
    const pid = server.process.pid;
    const bundlePem = await server.admin.bundlePem();
    const api: AgentApiOptions = { port: server.port, trustDomain: TRUST_DOMAIN, bundlePem };
    const uid = currentUid();
    const attest = async (): Promise<AgentCredentials> =>
      AgentApiClient.attestWithJoinToken(api, await server.admin.joinToken());

    const legit = await attest();
    const [entry] = await server.admin.createEntries([
      { spiffeId: `spiffe://${TRUST_DOMAIN}/bench/legit`, parentId: legit.spiffeId, selectors: [`unix:uid:${uid}`] },
    ]);
    const legitBody = JSON.stringify(
      serializeX509SvidBatchRequest([{ entryId: entry!.id, csrPem: await csrFor(entry!.spiffeId) }]),
    );

    const attackerDirs: string[] = [];
    for (let a = 0; a < attackers; a++) {
      const credentials = await attest();
      const entries = await server.admin.createEntries(
        Array.from({ length: attackerEntries }, (_, i) => ({
          spiffeId: `spiffe://${TRUST_DOMAIN}/bench/attacker-${a}/${i}`,
          parentId: credentials.spiffeId,
          selectors: [`unix:uid:${uid}`],
        })),
      );
      const csrs = await Promise.all(entries.map((created) => csrFor(created.spiffeId)));
      const body = JSON.stringify(
        serializeX509SvidBatchRequest(
          Array.from({ length: batch }, (_, i) => ({
            entryId: entries[i % attackerEntries]!.id,
            csrPem: csrs[i % attackerEntries]!,
          })),
        ),
      );
      const dir = join(harness.scratch, `attacker-${a}`);
      await mkdir(dir);
      await writeFile(join(dir, 'body.json'), body);
      await writeFile(join(dir, 'ca.pem'), bundlePem);
      await writeFile(join(dir, 'cert.pem'), credentials.certificatePem);
      await writeFile(join(dir, 'key.pem'), credentials.privateKeyPem, { mode: 0o600 });
      attackerDirs.push(dir);
    }

    const client = new AgentApiClient(api, legit, 1);
    try {
      await client.call(AGENT_API_ROUTES.signX509Svids, legitBody);
      log(`node ${process.version}, ${server.database} database, server pid ${pid} on CPU ${SERVER_CPU}`);
      log(
        `attack: ${attackers} agent(s) x ${connections} connections, batches of ${batch} CSRs naming ` +
          `${attackerEntries} distinct entr${attackerEntries === 1 ? 'y' : 'ies'}, for ${seconds} s`,
      );
      const rssStart = residentMemory(pid).rssKiB;
      const baselineRss = sampleRss(pid);
      const before = summarize(await legitimateAgent(client, legitBody, sleep(baseline * 1000)));
      const rssBefore = baselineRss.stop();
      log(`legitimate agent alone:         ${formatLatency(before)}`);

      const cpuBefore = cpuSeconds(pid);
      const attackRss = sampleRss(pid);
      const startedAt = performance.now();
      const runs = attackerDirs.map((dir) => {
        const child = spawn('taskset', [
          '-c',
          ATTACKER_CPU,
          process.execPath,
          '-e',
          ATTACKER,
          String(server.port),
          dir,
          String(connections),
          String(seconds),
        ]);
        let output = '';
        child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
        return new Promise<AttackCounts>((resolve, reject) =>
          child.once('exit', (code) =>
            code === 0 ? resolve(JSON.parse(output) as AttackCounts) : reject(new Error(`attacker exited ${code}`)),
          ),
        );
      });
      const attacks = Promise.all(runs);
      const during = summarize(await legitimateAgent(client, legitBody, attacks));
      const counts = await attacks;
      const attackSeconds = (performance.now() - startedAt) / 1000;
      const rssMax = attackRss.stop();
      const cpu = cpuSeconds(pid) - cpuBefore;
      const running = server.process.isRunning;
      const total = counts.reduce(
        (sum, c) => ({
          requests: sum.requests + c.requests,
          ok: sum.ok + c.ok,
          signed: sum.signed + c.signed,
          refused429: sum.refused429 + c.refused429,
          unavailable503: sum.unavailable503 + c.unavailable503,
          errors: sum.errors + c.errors,
          other: { ...sum.other, ...c.other },
        }),
        { requests: 0, ok: 0, signed: 0, refused429: 0, unavailable503: 0, errors: 0, other: {} } as AttackCounts,
      );

      log(`legitimate agent under attack: ${formatLatency(during)}`);
      log(
        `attackers: ${formatCount(total.requests)} requests in ${attackSeconds.toFixed(1)} s: ${formatCount(total.ok)} ` +
          `answered 200 (${formatCount(total.signed)} CSRs signed, ${formatCount(total.signed / attackSeconds)}/s), ` +
          `${formatCount(total.refused429)} refused 429, ${formatCount(total.unavailable503)} 503, other ` +
          `${JSON.stringify(total.other)}, ${total.errors} connection errors`,
      );
      log(
        `server: CPU ${cpu.toFixed(2)} s during the attack (${Math.round((cpu / attackSeconds) * 100)} % of a core), ` +
          `RSS ${formatMiB(rssStart)} at start, max ${formatMiB(rssBefore)} alone, max ${formatMiB(rssMax)} during ` +
          `the attack${running ? '' : ', EXITED'}`,
      );
      const goals: [string, boolean][] = [
        [`legitimate p99 ${during.p99.toFixed(1)} ms < ${P99_GOAL_MS} ms`, during.p99 < P99_GOAL_MS],
        [`server RSS growth ${formatMiB(rssMax - rssBefore)} < 50 MiB`, rssMax - rssBefore < RSS_GROWTH_GOAL_KIB],
        ['server still running', running],
        [`attackers refused (${formatCount(total.refused429)} x 429)`, total.refused429 > 0],
      ];
      for (const [goal, met] of goals) log(`${met ? 'PASS' : 'FAIL'} ${goal}`);
      const met = goals.every(([, ok]) => ok);
      if (options.json) {
        log(
          JSON.stringify({
            bench: 'dos-signing-flood',
            database: server.database,
            attackers,
            connections,
            batch,
            attacker_entries: attackerEntries,
            legit_before: latencyJson(before),
            legit_during: latencyJson(during),
            attack: total,
            attack_seconds: Math.round(attackSeconds * 10) / 10,
            server_cpu_s: Math.round(cpu * 100) / 100,
            server_rss_start_kib: rssStart,
            server_rss_before_kib: rssBefore,
            server_rss_max_kib: rssMax,
            server_running: running,
            goals_met: met,
          }),
        );
      }
      if (!met) process.exitCode = 1;
    } finally {
      client.close();
    }
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
