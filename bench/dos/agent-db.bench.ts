/**
 * Issue 16, finding 8 (and the long-poll cap of finding 7): an attested agent floods the agent API with syncs while
 * anyone floods `/metrics` and `/readyz`, then an operator writes big entry batches. `npm run build && npx tsc -b
 * bench && node dist/bench/dos/agent-db.bench.js`.
 *
 * The built sigil-server runs on 127.0.0.1 (embedded database unless `DATABASE_URL` is set). A legitimate agent
 * signs one X.509-SVID CSR at a time (one request every `--sign-interval` ms, within its signing limit), first alone
 * for `--baseline` seconds, then beside an attacking agent that keeps `--syncs` sync requests in flight on as many
 * TLS connections (each a long-poll of `--wait-ms`, as an agent sends them) plus `--scrapers` connections looping
 * over `GET /metrics` and `GET /readyz`, for `--seconds` seconds (at most `--max-requests` attack requests); then
 * beside `--batches` concurrent admin batch creates of 500 entries each. A prober asks `/readyz` every 200 ms
 * throughout. It prints the legitimate agent's latency (p50/p99/max) in each phase, the attacker's answers, the
 * `/readyz` answers, and the server's CPU time and RSS. Goals (the for agent-API signing): the legitimate
 * p99 stays under 100 ms during the sync flood and during the batches, every `/readyz` answer is 200, the attacker
 * gets 429s, the server's RSS grows by less than 100 MiB.
 *
 * The flood runs in a child process of its own (an attacker on another host), so that its client work (1,000 TLS
 * handshakes, thousands of answers) shares nothing with the legitimate agent measured here but the cores. `--cpu-prof DIR` writes a CPU profile of the server.
 */
import {
  AGENT_API_ROUTES,
  type BatchX509SvidResponseWire,
  serializeX509SvidBatchRequest,
  syncPath,
} from '@sigil/agent-api';
import { createCsr, generateKeyPair } from '@sigil/pki';
import { SpiffeId } from '@sigil/spiffe';
import { Agent, request } from 'node:https';
import { createSecureContext } from 'node:tls';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { AdminApi } from '../support/admin-api.js';
import { AgentApiClient, type AgentApiOptions, type AgentCredentials } from '../support/agent-api-client.js';
import { isAttackWorker, runAttackWorker, serveAttack } from '../support/attack-worker.js';
import { currentUid, Harness, TRUST_DOMAIN } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize, type LatencySummary } from '../support/stats.js';

const SYNC_P99_GOAL_MS = 100;
const BATCH_P99_GOAL_MS = 100;
const RSS_GROWTH_GOAL_KIB = 100 * 1024;
const READYZ_PROBE_MS = 200;
const BATCH_SIZE = 500;
const SCRAPER_ADDRESS = '127.0.0.2';
const ATTACKER_ADDRESS = '127.0.0.3';

/** One request on `agent`; resolves with the status once the answer is read (0 when the connection failed). */
function send(port: number, agent: Agent, method: string, path: string, localAddress?: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, agent, ...(localAddress && { localAddress }) },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(0));
      },
    );
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** What the attacker is told to do. */
interface FloodPlan {
  readonly port: number;
  readonly attacker: AgentCredentials;
  readonly seconds: number;
  readonly syncs: number;
  readonly waitMs: number;
  readonly scrapers: number;
  readonly maxRequests: number;
}

/** The answers the flood got, by status. */
interface FloodResult {
  readonly syncAnswers: [number, number][];
  readonly scrapeAnswers: [number, number][];
}

/**
 * In the attacker's process: `syncs` sync long-polls kept in flight on as many connections of the attacking agent, and
 * `scrapers` connections looping over `/metrics` and `/readyz`, until the time or the request cap is reached.
 */
async function flood(plan: FloodPlan): Promise<FloodResult> {
  const attackAgent = new Agent(agentOptions(plan.attacker, plan.syncs));
  const scrapeAgent = new Agent({ keepAlive: true, maxSockets: Math.max(plan.scrapers, 1), rejectUnauthorized: false });
  const syncAnswers = new Tally();
  const scrapeAnswers = new Tally();
  let sent = 0;
  const deadline = performance.now() + plan.seconds * 1000;
  const pathOfSync = syncPath({ revision: 0, bundleSequence: undefined, waitMs: plan.waitMs });
  const loop = (work: () => Promise<void>) => async () => {
    while (sent < plan.maxRequests && performance.now() < deadline) {
      sent += 1;
      await work();
    }
  };
  await Promise.all([
    ...Array.from(
      { length: plan.syncs },
      loop(async () => syncAnswers.add(await send(plan.port, attackAgent, AGENT_API_ROUTES.sync.method, pathOfSync))),
    ),
    ...Array.from({ length: plan.scrapers }, (_, index) =>
      loop(async () =>
        // From another loopback address: the public routes are limited per source address, and the load
        // balancer's probe (127.0.0.1) must keep its own budget.
        scrapeAnswers.add(
          await send(plan.port, scrapeAgent, 'GET', index % 2 === 0 ? '/metrics' : '/readyz', SCRAPER_ADDRESS),
        ),
      )(),
    ),
  ]);
  attackAgent.destroy();
  scrapeAgent.destroy();
  return { syncAnswers: [...syncAnswers.byStatus], scrapeAnswers: [...scrapeAnswers.byStatus] };
}

/** Counts answers by status. */
class Tally {
  readonly byStatus: Map<number, number>;
  constructor(counts: Iterable<[number, number]> = []) {
    this.byStatus = new Map(counts);
  }
  add(status: number): void {
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
  }
  get(status: number): number {
    return this.byStatus.get(status) ?? 0;
  }
  get total(): number {
    return [...this.byStatus.values()].reduce((sum, count) => sum + count, 0);
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries(this.byStatus);
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/agent-db.bench.js',
    numbers: {
      seconds: { default: 6, min: 1, max: 60, integer: false, description: 'sync flood duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the legitimate agent alone' },
      syncs: { default: 1000, min: 1, max: 2000, integer: true, description: 'attacking syncs in flight' },
      waitMs: { default: 25_000, min: 0, max: 30_000, integer: true, description: 'wait_ms of each attacking sync' },
      scrapers: { default: 8, min: 0, max: 64, integer: true, description: 'connections flooding /metrics, /readyz' },
      maxRequests: { default: 200_000, min: 1, max: 1_000_000, integer: true, description: 'attack requests cap' },
      batches: { default: 5, min: 0, max: 20, integer: true, description: 'concurrent 500-entry admin batches' },
      signInterval: { default: 50, min: 0, max: 1000, integer: true, description: 'ms between legitimate signs' },
    },
    strings: { cpuProf: 'write a CPU profile of the server (node --cpu-prof) into this directory' },
  });
  const { seconds, baseline, syncs, waitMs, scrapers, maxRequests, batches, signInterval } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-agent-db', async (harness) => {
    const profileDir = options.strings.cpuProf;
    const server = await harness.startServer(
      profileDir === undefined ? {} : { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', resolve(profileDir)] },
    );
    const pid = server.process.pid;
    const bundlePem = await server.admin.bundlePem();
    const api: AgentApiOptions = { port: server.port, trustDomain: TRUST_DOMAIN, bundlePem };
    const legit = await AgentApiClient.attestWithJoinToken(api, await server.admin.joinToken());
    const attacker = await AgentApiClient.attestWithJoinToken(api, await server.admin.joinToken());
    const [entry] = await server.admin.createEntries([
      {
        spiffeId: `spiffe://${TRUST_DOMAIN}/bench/agent-db/legit`,
        parentId: legit.spiffeId,
        selectors: ['unix:uid:1'],
      },
    ]);
    const keys = await generateKeyPair('ec-p256');
    const { pem } = await createCsr({ keys, spiffeId: SpiffeId.parse(entry!.spiffeId) });
    const signBody = JSON.stringify(serializeX509SvidBatchRequest([{ entryId: entry!.id, csrPem: pem }]));
    const signer = new AgentApiClient(api, legit, 1);
    log(`node ${process.version}, ${server.database} database, server pid ${pid}`);

    /** Failed legitimate signs, by reason (the first words of the error). */
    const legitFailures = new Map<string, number>();
    /** The slowest legitimate sign of the last phase and when it started (`performance.now()`). */
    let slowest = { latency: 0, startedAt: 0 };
    /** The legitimate agent's signs, one at a time, until `until` resolves; latencies in milliseconds. */
    const legitimateSigns = async (until: Promise<unknown>): Promise<number[]> => {
      slowest = { latency: 0, startedAt: 0 };
      let done = false;
      void until.then(() => (done = true));
      const latencies: number[] = [];
      while (!done) {
        const start = performance.now();
        try {
          const answer = (await signer.call(AGENT_API_ROUTES.signX509Svids, signBody)) as BatchX509SvidResponseWire;
          const status = answer.results[0]!.status;
          if (status.code !== 'ok') throw new Error(`sign: ${status.code} ${status.message}`);
        } catch (error) {
          const reason = (error as Error).message.slice(0, 80);
          legitFailures.set(reason, (legitFailures.get(reason) ?? 0) + 1);
        }
        const latency = performance.now() - start;
        latencies.push(latency);
        if (latency > slowest.latency) slowest = { latency, startedAt: start };
        if (signInterval > 0) await sleep(signInterval);
      }
      return latencies;
    };

    // /readyz, as a load balancer asks it, all along.
    const readyz = new Tally();
    const probeAgent = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
    let probing = true;
    const prober = (async () => {
      while (probing) {
        readyz.add(await send(server.port, probeAgent, 'GET', '/readyz'));
        await sleep(READYZ_PROBE_MS);
      }
    })();

    const before = summarize(await legitimateSigns(sleep(baseline * 1000)));
    log(`legitimate agent alone:           ${formatLatency(before)}`);

    // The sync flood and the scrape flood, in the attacker's process.
    const cpuBefore = cpuSeconds(pid);
    const rssBefore = residentMemory(pid).rssKiB;
    const plan: FloodPlan = { port: server.port, attacker, seconds, syncs, waitMs, scrapers, maxRequests };
    const floodStarted = performance.now();
    const result = runAttackWorker<FloodPlan, FloodResult>(import.meta.url, plan);
    const attack = result.then(() => undefined);
    const during = summarize(await legitimateSigns(attack));
    const slowestDuring = slowest;
    const attackCpu = cpuSeconds(pid) - cpuBefore;
    const attackRss = residentMemory(pid);
    const syncAnswers = new Tally((await result).syncAnswers);
    const scrapeAnswers = new Tally((await result).scrapeAnswers);
    log(`legitimate agent during the flood: ${formatLatency(during)}`);
    log(
      `slowest legitimate sign during the flood: started ${((slowestDuring.startedAt - floodStarted) / 1000).toFixed(2)} s ` +
        `into it (${new Date(performance.timeOrigin + slowestDuring.startedAt).toISOString()})`,
    );
    log(
      `attacker: ${formatCount(syncAnswers.total)} syncs on ${syncs} connections, answers ` +
        `${JSON.stringify(syncAnswers)}; ${formatCount(scrapeAnswers.total)} scrapes, answers ${JSON.stringify(scrapeAnswers)}`,
    );
    log(
      `server during the flood: CPU ${attackCpu.toFixed(2)} s, RSS ${formatMiB(rssBefore)} -> ` +
        `${formatMiB(attackRss.rssKiB)} (peak ${formatMiB(attackRss.peakKiB)})`,
    );

    // The operator's batches.
    let batchPhase: LatencySummary | undefined;
    const batchFailures: string[] = [];
    let batchSeconds = 0;
    if (batches > 0) {
      const uid = currentUid();
      const admins = Array.from({ length: batches }, () => new AdminApi(server.adminSocket));
      const start = performance.now();
      const writes = Promise.all(
        admins.map((admin, b) =>
          admin
            .createEntries(
              Array.from({ length: BATCH_SIZE }, (_, i) => ({
                spiffeId: `spiffe://${TRUST_DOMAIN}/bench/agent-db/batch-${b}/w-${i}`,
                parentId: attacker.spiffeId,
                selectors: [`unix:uid:${uid}`, `unix:gid:${i}`],
              })),
            )
            .catch((error: unknown) => batchFailures.push((error as Error).message.slice(0, 120))),
        ),
      ).then(() => (batchSeconds = (performance.now() - start) / 1000));
      batchPhase = summarize(await legitimateSigns(writes));
      for (const admin of admins) admin.close();
      log(
        `legitimate agent during ${batches} batches of ${BATCH_SIZE} (${batchSeconds.toFixed(1)} s): ` +
          formatLatency(batchPhase),
      );
      if (batchFailures.length > 0) log(`batches failed: ${JSON.stringify(batchFailures)}`);
    }
    probing = false;
    await prober;
    probeAgent.destroy();
    signer.close();
    log(`/readyz answers throughout: ${JSON.stringify(readyz)}`);

    const rssGrowth = attackRss.rssKiB - rssBefore;
    const failures = [
      ...(during.p99 < SYNC_P99_GOAL_MS
        ? []
        : [`legitimate p99 during the flood ${during.p99.toFixed(1)} ms (goal < ${SYNC_P99_GOAL_MS} ms)`]),
      ...(batchPhase === undefined || batchPhase.p99 < BATCH_P99_GOAL_MS
        ? []
        : [`legitimate p99 during the batches ${batchPhase.p99.toFixed(1)} ms (goal < ${BATCH_P99_GOAL_MS} ms)`]),
      ...(batchFailures.length === 0 ? [] : [`${batchFailures.length} admin batches failed`]),
      ...(readyz.get(200) === readyz.total ? [] : [`/readyz answered ${JSON.stringify(readyz)} (goal: all 200)`]),
      ...(syncAnswers.get(429) > 0 ? [] : ['the attacker got no 429']),
      ...(legitFailures.size === 0
        ? []
        : [`legitimate signs failed: ${JSON.stringify(Object.fromEntries(legitFailures))}`]),
      ...(rssGrowth < RSS_GROWTH_GOAL_KIB ? [] : [`RSS grew ${formatMiB(rssGrowth)} (goal < 100 MiB)`]),
    ];
    log(failures.length === 0 ? 'PASS: goals met' : `FAIL: ${failures.join('; ')}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-agent-db',
          database: server.database,
          legit_before: latencyJson(before),
          legit_during_flood: latencyJson(during),
          ...(batchPhase && {
            legit_during_batches: latencyJson(batchPhase),
            batch_seconds: batchSeconds,
            batch_failures: batchFailures,
          }),
          attack_syncs: syncAnswers.toJSON(),
          attack_scrapes: scrapeAnswers.toJSON(),
          readyz: readyz.toJSON(),
          legit_failures: Object.fromEntries(legitFailures),
          server_cpu_s: Math.round(attackCpu * 100) / 100,
          server_rss_kib: attackRss.rssKiB,
          server_rss_growth_kib: rssGrowth,
          goals_met: failures.length === 0,
        }),
      );
    }
    if (failures.length > 0) process.exitCode = 1;
  });
}

/**
 * An https Agent presenting the agent's SVID on up to `connections` kept-alive connections, through one TLS context
 * (with `cert` and `key` instead, Node parses them again for every connection: the attacker's own CPU went into that).
 */
function agentOptions(credentials: AgentCredentials, connections: number) {
  return {
    keepAlive: true,
    maxSockets: connections,
    minVersion: 'TLSv1.3' as const,
    rejectUnauthorized: false,
    // Its own source address: the server's per-address budgets (connections, handshakes) are not what is measured.
    localAddress: ATTACKER_ADDRESS,
    secureContext: createSecureContext({
      minVersion: 'TLSv1.3',
      cert: credentials.certificatePem,
      key: credentials.privateKeyPem,
    }),
  };
}

if (isAttackWorker) await serveAttack(flood);
else await main();
