/**
 * `npm run bench:fleet`: a fleet of simulated agents (`--agents`, 1,000) against two server replicas on one
 * PostgreSQL database (issue 12 item 5).
 *
 * Starts two built `sigil-server run` replicas on one fresh database of the PostgreSQL server of `DATABASE_URL`
 * (dropped afterwards; without `DATABASE_URL` the benchmark says it is skipped and why), sharing one KEK, x509pop
 * enabled with a node CA made here. Each simulated agent is a host of its own: its own loopback source address
 * (127.20.1.1, …), its own x509pop node certificate, and `--svids` entries registered for it beforehand through the
 * admin API of replica A, parented to its agent ID (`spiffe://<td>/sigil/agent/x509pop/<sha-1 of the leaf>`).
 * Agents alternate between the replicas (agent i talks to replica i mod 2), as a round-robin balancer spreads
 * connection-sticky clients.
 *
 * The load generator runs in a child process on its own core (`taskset`, {@link ATTACKER_CPU}) and speaks the real
 * agent API over TLS 1.3 (the server checked against the bundle and its SPIFFE ID): every agent at once, as after a
 * fleet-wide restart, (1) attests with x509pop (challenge, signed nonce, CSR of a fresh agent key), (2) makes its
 * first sync over mTLS with the agent SVID it got (every one of its entries must be there) and (3) gets its entries'
 * X.509-SVIDs signed in one batch (every leaf must name its entry's SPIFFE ID). Its CSRs are made before the clock
 * starts. Like the real agent, it waits out a 429 or 503 (the server's `Retry-After`, or its backoff from 1 s to
 * 30 s, whichever is longer) and retries a connection the server closed; each such retry is counted by cause. An
 * error is an agent that did not get through: any other refusal, a wrong answer, or 8 attempts of one step failing.
 *
 * Reported: total time, each step's p50/p99 (retries included), the two replicas' CPU seconds from /proc per agent,
 * their RSS, errors and retries. Then, with every agent holding its sync long-poll open as real agents do, one more
 * agent on replica B long-polls while entries for it are created one at a time through replica A's admin API
 * (`--writes`, one every 500 ms, within the agent's sync rate): propagation is the time from just before the POST to
 * the sync answer on B that holds the entry.
 */
import {
  AGENT_API_ROUTES,
  type AgentApiRoute,
  X509POP_ATTESTOR,
  parseSyncResponse,
  parseX509SignResults,
  serializeX509SvidBatchRequest,
  syncPath,
} from '@sigil/agent-api';
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCsr, generateKeyPair } from '@sigil/pki';
import { sigilAgentId } from '@sigil/runtime';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import pg from 'pg';
import {
  AgentApiClient,
  AgentApiError,
  type AgentApiOptions,
  type AgentCredentials,
} from './support/agent-api-client.js';
import { ATTACKER_CPU, forkAttackWorker, isAttackWorker } from './support/attack-worker.js';
import { Harness, TRUST_DOMAIN, currentUid, type ServerProcess } from './support/harness.js';
import { hostAddress } from './support/loopback.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds, formatMiB, residentMemory, sampleRss } from './support/proc.js';
import { formatLatency, latencyJson, summarize } from './support/stats.js';
import { type NodeCertificate, X509popPki } from './support/x509pop.js';

const ATTEMPTS = 10;
const FIRST_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;
const LONG_POLL_MS = 30_000;
const WRITE_INTERVAL_MS = 500;
const PROPAGATION_TIMEOUT_MS = 30_000;
const PROPAGATION_TARGET_P99_MS = 250;

// ---- the plan and the messages between the benchmark and its load generator ----------------------------------

interface AgentPlan {
  readonly port: number;
  readonly localAddress: string;
  readonly node: { certificates: string[]; certificatePem: string; privateKeyPem: string };
  readonly agentId: string;
  readonly entries: ReadonlyArray<{ id: string; spiffeId: string }>;
}

interface FleetPlan {
  readonly bundlePem: string;
  /** Agent i starts at i * rampMs / agents (0: all at once). */
  readonly rampMs: number;
  readonly agents: readonly AgentPlan[];
}

/** What one agent went through: the ms of each step it finished, and why it stopped if it did. */
interface AgentOutcome {
  readonly attestMs?: number;
  readonly syncMs?: number;
  readonly signMs?: number;
  readonly error?: string;
}

interface FleetResult {
  readonly kind: 'fleet';
  readonly totalMs: number;
  readonly outcomes: AgentOutcome[];
  /** `step: cause` → retries. */
  readonly retries: Record<string, number>;
}

interface HoldResult {
  readonly kind: 'held';
  readonly answers: number;
  readonly errors: Record<string, number>;
}

type FromGenerator = { kind: 'ready'; csrSeconds: number } | FleetResult | { kind: 'holding' } | HoldResult;
type ToGenerator = { kind: 'plan'; plan: FleetPlan } | { kind: 'go' } | { kind: 'stop' };

// ---- the load generator (child process) --------------------------------------------------------------------------

/** Why a step failed, short enough to count: the status, or the network error's code. */
function cause(error: unknown): string {
  if (error instanceof AgentApiError) return String(error.status);
  const code = (error as NodeJS.ErrnoException).code;
  return code ?? (error instanceof Error ? error.message.slice(0, 80) : String(error));
}

/** Whether a real agent would retry after `error`: a 429 or 503, or a connection the server closed or refused. */
function retriable(error: unknown): boolean {
  if (error instanceof AgentApiError) return error.status === 429 || error.status === 503;
  const code = (error as NodeJS.ErrnoException).code;
  return code !== undefined && RETRIED_NETWORK_ERRORS.has(code);
}

/** Network failures the agent retries (a connection closed, refused or timed out). */
const RETRIED_NETWORK_ERRORS = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT']);

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `step` as an agent would: retried after a retriable failure, waiting the longer of Retry-After and backoff. */
async function withRetries<T>(name: string, retries: Record<string, number>, step: () => Promise<T>): Promise<T> {
  let backoffMs = FIRST_BACKOFF_MS;
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      if (!retriable(error) || attempt === ATTEMPTS) throw error;
      const key = `${name}: ${cause(error)}`;
      retries[key] = (retries[key] ?? 0) + 1;
      const retryAfterMs = error instanceof AgentApiError ? (error.retryAfterSeconds ?? 0) * 1000 : 0;
      await sleep(Math.max(retryAfterMs, backoffMs * (0.5 + Math.random() / 2)));
      backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    }
  }
}

/** A sync from `revision`; the server answers at once unless the caller already holds bundle `bundleSequence`. */
const syncRoute = (revision: number, bundleSequence: number | undefined, waitMs: number): AgentApiRoute => ({
  method: 'GET',
  path: syncPath({ revision, bundleSequence, waitMs }),
});

/** One simulated agent, from its node certificate to its first SVIDs, then its long-poll until stopped. */
class SimulatedAgent {
  private client: AgentApiClient | undefined;
  private revision = 0;
  private bundleSequence: number | undefined;
  private csrs: Array<{ entryId: string; spiffeId: string; csrPem: string }> = [];

  constructor(
    private readonly plan: AgentPlan,
    private readonly bundlePem: string,
  ) {}

  private get api(): AgentApiOptions {
    return {
      port: this.plan.port,
      trustDomain: TRUST_DOMAIN,
      bundlePem: this.bundlePem,
      localAddress: this.plan.localAddress,
    };
  }

  /** The CSRs of its entries (own P-256 key each, URI SAN = the entry's SPIFFE ID), made before the clock starts. */
  async prepare(): Promise<void> {
    for (const entry of this.plan.entries) {
      const { pem } = await createCsr({
        keys: await generateKeyPair('ec-p256'),
        spiffeId: SpiffeId.parse(entry.spiffeId),
      });
      this.csrs.push({ entryId: entry.id, spiffeId: entry.spiffeId, csrPem: pem });
    }
  }

  async run(retries: Record<string, number>): Promise<AgentOutcome> {
    const times: { attestMs?: number; syncMs?: number; signMs?: number } = {};
    try {
      const node: NodeCertificate = {
        ...this.plan.node,
        privateKey: createPrivateKey(this.plan.node.privateKeyPem),
      };
      let started = performance.now();
      const credentials: AgentCredentials = await withRetries('attest', retries, () =>
        AgentApiClient.attestWithX509pop(this.api, node),
      );
      if (credentials.spiffeId !== this.plan.agentId) {
        throw new Error(`attested as ${credentials.spiffeId}, expected ${this.plan.agentId}`);
      }
      times.attestMs = performance.now() - started;
      // Two connections, as the agent keeps: one for the long-poll, one for everything else.
      this.client = new AgentApiClient(this.api, credentials, 2);
      const client = this.client;

      started = performance.now();
      const sync = parseSyncResponse(
        await withRetries('sync', retries, () => client.call(syncRoute(0, undefined, 0))),
        TrustDomain.parse(TRUST_DOMAIN),
      );
      const got = new Set(sync.entries.map((entry) => entry.id));
      const missing = this.plan.entries.filter((entry) => !got.has(entry.id));
      if (missing.length > 0 || got.size !== this.plan.entries.length) {
        throw new Error(
          `first sync: ${got.size} entries, ${missing.length} of its ${this.plan.entries.length} missing`,
        );
      }
      this.revision = sync.revision;
      this.bundleSequence = sync.bundle.sequenceNumber;
      times.syncMs = performance.now() - started;

      started = performance.now();
      const body = JSON.stringify(serializeX509SvidBatchRequest(this.csrs));
      const results = parseX509SignResults(
        await withRetries('sign', retries, () => client.call(AGENT_API_ROUTES.signX509Svids, body)),
      );
      if (results.length !== this.csrs.length)
        throw new Error(`sign: ${results.length} results for ${this.csrs.length}`);
      results.forEach((result, index) => {
        const csr = this.csrs[index]!;
        if (!result.ok) throw new Error(`sign: ${result.code} ${result.message}`);
        if (result.entryId !== csr.entryId) throw new Error(`sign: result ${index} for entry ${result.entryId}`);
        const san = new X509Certificate(result.chain[0]!).subjectAltName;
        if (san !== `URI:${csr.spiffeId}`) throw new Error(`sign: leaf SAN ${san}, expected ${csr.spiffeId}`);
      });
      times.signMs = performance.now() - started;
      return times;
    } catch (error) {
      return { ...times, error: error instanceof Error ? error.message.slice(0, 200) : String(error) };
    }
  }

  /** Holds its sync long-poll open, as a running agent does, until `stopped`; counts answers and failures. */
  async hold(stopped: () => boolean, result: { answers: number; errors: Record<string, number> }): Promise<void> {
    const client = this.client;
    if (!client) return;
    while (!stopped()) {
      try {
        const sync = parseSyncResponse(
          await client.call(syncRoute(this.revision, this.bundleSequence, LONG_POLL_MS)),
          TrustDomain.parse(TRUST_DOMAIN),
        );
        this.revision = sync.revision;
        this.bundleSequence = sync.bundle.sequenceNumber;
        result.answers++;
      } catch (error) {
        if (stopped()) return;
        const key = cause(error);
        result.errors[key] = (result.errors[key] ?? 0) + 1;
        await sleep(
          Math.max(FIRST_BACKOFF_MS, error instanceof AgentApiError ? (error.retryAfterSeconds ?? 0) * 1000 : 0),
        );
      }
    }
  }

  close(): void {
    this.client?.close();
  }
}

/** The load generator's side: plan → CSRs → `ready`; `go` → the fleet → its result, then long-polls until `stop`. */
async function serveFleet(): Promise<void> {
  const send = (message: FromGenerator): void => void process.send!(message);
  let agents: SimulatedAgent[] = [];
  let plan: FleetPlan | undefined;
  let stopped = false;
  const holding = { answers: 0, errors: {} as Record<string, number> };
  let holds: Promise<void>[] = [];
  process.on('message', (message: ToGenerator) => {
    void (async () => {
      if (message.kind === 'plan') {
        plan = message.plan;
        const started = performance.now();
        agents = message.plan.agents.map((plan) => new SimulatedAgent(plan, message.plan.bundlePem));
        for (const agent of agents) await agent.prepare();
        send({ kind: 'ready', csrSeconds: (performance.now() - started) / 1000 });
      } else if (message.kind === 'go') {
        const retries: Record<string, number> = {};
        const started = performance.now();
        const { rampMs } = plan!;
        const outcomes = await Promise.all(
          agents.map(async (agent, index) => {
            await sleep((index * rampMs) / agents.length);
            return agent.run(retries);
          }),
        );
        send({ kind: 'fleet', totalMs: performance.now() - started, outcomes, retries });
        holds = agents.map((agent) => agent.hold(() => stopped, holding));
        send({ kind: 'holding' });
      } else {
        stopped = true;
        for (const agent of agents) agent.close();
        await Promise.all(holds);
        send({ kind: 'held', ...holding });
        process.disconnect();
      }
    })().catch((error: unknown) => {
      console.error(`load generator failed: ${error instanceof Error ? error.stack : String(error)}`);
      process.exit(1);
    });
  });
}

// ---- the benchmark -----------------------------------------------------------------------------------------------

/** Talks to the load generator: messages it sends are queued until the benchmark asks for the next one. */
class Generator {
  private readonly child = forkAttackWorker(import.meta.url);
  private readonly received: FromGenerator[] = [];
  private wake: (() => void) | undefined;
  private exitReason: string | undefined;

  constructor() {
    this.child.on('message', (message: FromGenerator) => {
      this.received.push(message);
      this.wake?.();
    });
    this.child.once('exit', (code, signal) => {
      this.exitReason = `the load generator exited (${signal ?? `code ${code}`})`;
      this.wake?.();
    });
  }

  /** Sends `send` (if any), then resolves with the generator's next message, which must be of `kind`. */
  async next<K extends FromGenerator['kind']>(
    kind: K,
    send?: ToGenerator,
  ): Promise<Extract<FromGenerator, { kind: K }>> {
    if (send) this.child.send(send);
    while (this.received.length === 0) {
      if (this.exitReason !== undefined) throw new Error(this.exitReason);
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    const message = this.received.shift()!;
    if (message.kind !== kind) throw new Error(`load generator: expected ${kind}, got ${message.kind}`);
    return message as Extract<FromGenerator, { kind: K }>;
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

const sha1Hex = (der: Buffer): string => createHash('sha1').update(der).digest('hex');

/** The agent ID x509pop gives the holder of `node` (SPIRE's: the SHA-1 fingerprint of the leaf's DER). */
function x509popAgentId(node: NodeCertificate): string {
  const leaf = Buffer.from(node.certificates[0]!, 'base64');
  return sigilAgentId(TrustDomain.parse(TRUST_DOMAIN), X509POP_ATTESTOR.type, sha1Hex(leaf)).toString();
}

/** CPU seconds of the PostgreSQL backends serving `databaseUrl`'s database now, by pid. */
async function backendCpu(databaseUrl: string): Promise<Map<number, number>> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'sigil-bench-probe' });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      'SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
    );
    const cpu = new Map<number, number>();
    for (const { pid } of rows) {
      try {
        cpu.set(pid, cpuSeconds(pid));
      } catch {
        // Gone since the query, or on another host (then no figure at all: see below).
      }
    }
    return cpu;
  } finally {
    await client.end();
  }
}

/** Propagation across replicas: entries created through `writer`'s admin API, seen by an agent long-polling `reader`. */
async function measurePropagation(
  writer: ServerProcess,
  reader: ServerProcess,
  node: NodeCertificate,
  localAddress: string,
  bundlePem: string,
  writes: number,
  retries: Record<string, number>,
): Promise<number[]> {
  const api: AgentApiOptions = { port: reader.port, trustDomain: TRUST_DOMAIN, bundlePem, localAddress };
  // Every call retried as the fleet's are (a sample that needed a retry keeps its wait: it is part of the latency).
  const credentials = await withRetries('probe attest', retries, () => AgentApiClient.attestWithX509pop(api, node));
  const client = new AgentApiClient(api, credentials, 2);
  const td = TrustDomain.parse(TRUST_DOMAIN);
  const uid = currentUid();
  try {
    const first = parseSyncResponse(
      await withRetries('probe sync', retries, () => client.call(syncRoute(0, undefined, 0))),
      td,
    );
    let revision = first.revision;
    let bundleSequence = first.bundle.sequenceNumber;
    const latencies: number[] = [];
    for (let index = 0; index < writes; index++) {
      const spiffeId = `spiffe://${TRUST_DOMAIN}/fleet/probe/write-${index}`;
      const started = performance.now();
      // The long-poll starts from the revision before the write, so an answer that comes before the POST's is kept.
      const seen = (async (): Promise<number> => {
        for (;;) {
          const route = syncRoute(revision, bundleSequence, LONG_POLL_MS);
          const sync = parseSyncResponse(await withRetries('probe sync', retries, () => client.call(route)), td);
          revision = sync.revision;
          bundleSequence = sync.bundle.sequenceNumber;
          if (sync.entries.some((entry) => entry.spiffeId.toString() === spiffeId)) return performance.now();
          if (performance.now() - started > PROPAGATION_TIMEOUT_MS) {
            throw new Error(`propagation: ${spiffeId} not on replica B within ${PROPAGATION_TIMEOUT_MS} ms`);
          }
        }
      })();
      seen.catch(() => undefined);
      await writer.admin.createEntries([{ spiffeId, parentId: credentials.spiffeId, selectors: [`unix:uid:${uid}`] }]);
      latencies.push((await seen) - started);
      await sleep(Math.max(0, WRITE_INTERVAL_MS - (performance.now() - started)));
    }
    return latencies;
  } finally {
    client.close();
  }
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'fleet.bench.js',
    numbers: {
      agents: { default: 1000, min: 2, max: 20_000, integer: true, description: 'simulated agents' },
      svids: { default: 10, min: 1, max: 500, integer: true, description: 'entries (X.509-SVIDs) per agent' },
      writes: { default: 50, min: 1, max: 1000, integer: true, description: 'propagation samples' },
      ramp: {
        default: 0,
        min: 0,
        max: 3600,
        integer: false,
        description: 'seconds over which agents start (0: all at once)',
      },
    },
  });
  const { agents: agentCount, svids, writes, ramp } = options.numbers;
  const log = (line: string): void => console.log(line);
  if (!process.env['DATABASE_URL']) {
    log('bench:fleet skipped: two replicas share a PostgreSQL database; set DATABASE_URL (a server this bench may');
    log('create and drop a database on), e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres');
    if (options.json) log(JSON.stringify({ bench: 'fleet', skipped: 'DATABASE_URL is not set' }));
    return;
  }
  await Harness.run('fleet', async (harness) => {
    const pki = await X509popPki.create();
    const caFile = join(harness.scratch, 'node-ca.pem');
    await writeFile(caFile, pki.caPem);
    const [a, b] = await harness.startReplicaPair('server-', ['--x509pop-ca-bundle', caFile]);
    const replicas = [a, b];
    const bundlePem = await a.admin.bundlePem();
    const uid = currentUid();

    // The fleet's node certificates (one more for the propagation probe) and their entries, all before the clock.
    const nodes: NodeCertificate[] = [];
    for (let index = 0; index <= agentCount; index++) nodes.push(await pki.issueNode(`fleet-node-${index}`));
    const agentIds = nodes.map(x509popAgentId);
    const specs = Array.from({ length: agentCount * svids }, (_, n) => ({
      spiffeId: `spiffe://${TRUST_DOMAIN}/fleet/host-${Math.floor(n / svids)}/workload-${n % svids}`,
      parentId: agentIds[Math.floor(n / svids)]!,
      selectors: [`unix:uid:${uid}`],
    }));
    const started = performance.now();
    const created = await a.admin.createEntries(specs);
    const registerSeconds = (performance.now() - started) / 1000;
    const plan: FleetPlan = {
      bundlePem,
      rampMs: ramp * 1000,
      agents: Array.from({ length: agentCount }, (_, index) => ({
        port: replicas[index % 2]!.port,
        localAddress: hostAddress(index),
        node: {
          certificates: [...nodes[index]!.certificates],
          certificatePem: nodes[index]!.certificatePem,
          privateKeyPem: nodes[index]!.privateKeyPem,
        },
        agentId: agentIds[index]!,
        entries: created.slice(index * svids, (index + 1) * svids),
      })),
    };
    const { databaseUrl } = a;
    if (!databaseUrl) throw new Error('replica A has no database URL');

    const generator = new Generator();
    harness.onClose(async () => generator.kill());
    const { csrSeconds } = await generator.next('ready', { kind: 'plan', plan });
    log(
      `node ${process.version}, 2 replicas on PostgreSQL, ${agentCount} agents x ${svids} entries ` +
        `(registered through replica A in ${registerSeconds.toFixed(1)} s), load generator on core ${ATTACKER_CPU} ` +
        `(CSRs made in ${csrSeconds.toFixed(1)} s before the clock)`,
    );

    const cpuBefore = replicas.map((replica) => cpuSeconds(replica.process.pid));
    const backendsBefore = await backendCpu(databaseUrl);
    const rss = replicas.map((replica) => sampleRss(replica.process.pid));
    const fleet = await generator.next('fleet', { kind: 'go' });
    const cpuUsed = replicas.map((replica, index) => cpuSeconds(replica.process.pid) - cpuBefore[index]!);
    const backendsAfter = await backendCpu(databaseUrl);
    let backendSeconds = 0;
    for (const [pid, seconds] of backendsAfter) backendSeconds += seconds - (backendsBefore.get(pid) ?? 0);
    await generator.next('holding');

    const failed = fleet.outcomes.filter((outcome) => outcome.error !== undefined);
    const step = (pick: (outcome: AgentOutcome) => number | undefined) =>
      summarize(fleet.outcomes.map(pick).filter((value): value is number => value !== undefined));
    const attest = step((outcome) => outcome.attestMs);
    const sync = step((outcome) => outcome.syncMs);
    const sign = step((outcome) => outcome.signMs);
    const serverCpu = cpuUsed[0]! + cpuUsed[1]!;
    const start = ramp === 0 ? 'all at once' : `starting evenly over ${ramp} s`;
    log(`fleet: ${agentCount} agents ${start}, total ${(fleet.totalMs / 1000).toFixed(2)} s`);
    log(`  attest (x509pop):        ${formatLatency(attest)}`);
    log(`  first sync:              ${formatLatency(sync)}`);
    log(`  sign ${svids} X.509-SVIDs:     ${formatLatency(sign)}`);
    log(
      `  server CPU: A ${cpuUsed[0]!.toFixed(2)} s + B ${cpuUsed[1]!.toFixed(2)} s = ` +
        `${((serverCpu / agentCount) * 1000).toFixed(2)} ms per agent; PostgreSQL backends of the database ` +
        `${backendSeconds.toFixed(2)} s (${((backendSeconds / agentCount) * 1000).toFixed(2)} ms per agent)`,
    );
    log(`  errors: ${failed.length}${failed.length ? ` (first: ${failed[0]!.error})` : ''}`);
    const retryCount = Object.values(fleet.retries).reduce((sum, count) => sum + count, 0);
    log(`  retries: ${retryCount}${retryCount ? ` (${JSON.stringify(fleet.retries)})` : ''}`);

    const probeRetries: Record<string, number> = {};
    const propagation = summarize(
      await measurePropagation(a, b, nodes[agentCount]!, hostAddress(agentCount), bundlePem, writes, probeRetries),
    );
    const peakRss = rss.map((sampler) => sampler.stop());
    const memory = replicas.map((replica) => residentMemory(replica.process.pid));
    const held = await generator.next('held', { kind: 'stop' });
    const heldErrors = Object.values(held.errors).reduce((sum, count) => sum + count, 0);
    log(`propagation with the fleet's ${agentCount} long-polls open (write on A, long-poll on B, ${writes} writes):`);
    log(
      `  ${formatLatency(propagation)}; target p99 < ${PROPAGATION_TARGET_P99_MS} ms: ` +
        `${propagation.p99 < PROPAGATION_TARGET_P99_MS ? 'met' : 'NOT met'}`,
    );
    const probeRetryCount = Object.values(probeRetries).reduce((sum, count) => sum + count, 0);
    log(`  the probe's retries: ${probeRetryCount}${probeRetryCount ? ` (${JSON.stringify(probeRetries)})` : ''}`);
    log(
      `  fleet long-polls meanwhile: ${held.answers} answers, ${heldErrors} failures` +
        (heldErrors ? ` ${JSON.stringify(held.errors)}` : ''),
    );
    log(
      `RSS: A ${formatMiB(memory[0]!.rssKiB)} (peak sampled ${formatMiB(peakRss[0]!)}, VmHWM ${formatMiB(memory[0]!.peakKiB)}), ` +
        `B ${formatMiB(memory[1]!.rssKiB)} (peak sampled ${formatMiB(peakRss[1]!)}, VmHWM ${formatMiB(memory[1]!.peakKiB)})`,
    );
    if (options.json) {
      log(
        JSON.stringify({
          bench: 'fleet',
          agents: agentCount,
          svids_per_agent: svids,
          ramp_s: ramp,
          total_ms: Math.round(fleet.totalMs),
          attest: latencyJson(attest),
          sync: latencyJson(sync),
          sign: latencyJson(sign),
          server_cpu_ms_per_agent: Math.round((serverCpu / agentCount) * 1000 * 100) / 100,
          server_cpu_s: { a: cpuUsed[0], b: cpuUsed[1] },
          postgres_backend_cpu_s: backendSeconds,
          errors: failed.length,
          retries: fleet.retries,
          propagation: latencyJson(propagation),
          propagation_target_p99_ms: PROPAGATION_TARGET_P99_MS,
          propagation_probe_retries: probeRetries,
          rss_mib: memory.map((value) => Math.round(value.rssKiB / 102.4) / 10),
          peak_rss_mib: memory.map((value) => Math.round(value.peakKiB / 102.4) / 10),
          long_poll_answers: held.answers,
          long_poll_failures: heldErrors,
        }),
      );
    }
    if (failed.length > 0) process.exitCode = 1;
  });
}

if (isAttackWorker) {
  void serveFleet();
} else {
  main().catch((error: unknown) => {
    console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  });
}
