/**
 * Issue 16, finding 1: an unauthenticated client fills the x509pop challenge table. `npx tsc -b bench && node
 * dist/bench/dos/x509pop-challenges.bench.js` after `npm run build`.
 *
 * The built sigil-server runs on 127.0.0.1 with x509pop enabled (embedded database unless `DATABASE_URL` is set).
 * The attacker holds `--attacker-certificates` node certificates that chain to the x509pop CA (certificates are
 * public) but none of their keys, and asks for challenges as fast as the server answers over `--connections` TLS
 * connections spread over `--attacker-addresses` loopback addresses (127.0.0.10, …) for `--seconds` seconds. Beside
 * it, a legitimate node attests with x509pop (challenge, signed nonce) from 127.0.0.2 every `--interval-ms`,
 * first alone for `--baseline` seconds, then during the attack; and a real `sigil-agent` process attests with
 * x509pop in the middle of the attack and must come up and stay up. `--attestation-rate N` raises the server's
 * per-address attestation limit (and burst) to N, to measure the challenge caps alone.
 *
 * The attacker runs in a child process of its own, so that its client work shares nothing with the legitimate
 * callers but the cores.
 *
 * Goals: every legitimate attestation succeeds, the real agent is serving and has not exited, the legitimate p99
 * stays under 250 ms, the server's RSS grows by less than 50 MiB.
 */
import { AGENT_API_ROUTES } from '@sigil/agent-api';
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isAttackWorker, runAttackWorker, serveAttack } from '../support/attack-worker.js';
import { Harness } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';
import { CLOSED_UNANSWERED, X509popPki, attestRepeatedly, postJson, tlsAgent } from '../support/x509pop.js';

const P99_GOAL_MS = 250;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;
const LEGIT_ADDRESS = '127.0.0.2';

/** What the attacker is told to do. */
interface AttackPlan {
  readonly port: number;
  readonly seconds: number;
  readonly maxRequests: number;
  readonly connections: number;
  readonly attackerAddresses: number;
  /** Each certificate's chain (base64 DER); the attacker has none of their keys. */
  readonly certificates: readonly (readonly string[])[];
}

interface AttackResult {
  readonly sent: number;
  /** Connections it opened (attempted), counting the ones refused at accept. */
  readonly connectionsOpened: number;
  readonly answers: [number, number][];
}

/** The attacker, in its own process: asks for challenges for the certificates in turn until the deadline. */
async function attack(plan: AttackPlan): Promise<AttackResult> {
  const agent = tlsAgent(plan.connections);
  const answers = new Map<number, number>();
  let sent = 0;
  let connectionsOpened = 0;
  const deadline = performance.now() + plan.seconds * 1000;
  await Promise.all(
    Array.from({ length: plan.connections }, async (_, worker) => {
      const address = `127.0.0.${10 + (worker % plan.attackerAddresses)}`;
      while (sent < plan.maxRequests && performance.now() < deadline) {
        const certificates = plan.certificates[sent++ % plan.certificates.length]!;
        const path = AGENT_API_ROUTES.x509popChallenge.path;
        // A connection refused at accept (no answer) is counted as status 0, and the attacker goes on.
        const answer = await postJson(plan.port, agent, path, { certificates }, address).catch(() => CLOSED_UNANSWERED);
        answers.set(answer.status, (answers.get(answer.status) ?? 0) + 1);
        if (answer.newConnection) connectionsOpened += 1;
      }
    }),
  );
  agent.destroy();
  return { sent, connectionsOpened, answers: [...answers] };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/x509pop-challenges.bench.js',
    numbers: {
      seconds: { default: 10, min: 1, max: 60, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the legitimate node alone' },
      connections: { default: 32, min: 1, max: 256, integer: true, description: 'attacking TLS connections' },
      attackerAddresses: { default: 4, min: 1, max: 200, integer: true, description: 'attacking source addresses' },
      attackerCertificates: { default: 64, min: 1, max: 1000, integer: true, description: 'certificates it holds' },
      maxRequests: { default: 200_000, min: 1, max: 2_000_000, integer: true, description: 'attack requests cap' },
      intervalMs: { default: 250, min: 10, max: 10_000, integer: true, description: 'legitimate attestation period' },
      attestationRate: { default: 0, min: 0, max: 1_000_000, integer: true, description: 'server limit; 0: default' },
    },
    strings: { cpuProf: 'write a CPU profile of the server (node --cpu-prof) into this directory' },
  });
  const { seconds, baseline, connections, attackerAddresses, attackerCertificates, maxRequests, intervalMs } =
    options.numbers;
  const rate = options.numbers.attestationRate;
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-x509pop-challenges', async (harness) => {
    const pki = await X509popPki.create();
    const caFile = join(harness.scratch, 'x509pop-ca.pem');
    await writeFile(caFile, pki.caPem);
    const limits = rate > 0 ? ['--attestation-rate', String(rate), '--attestation-burst', String(rate)] : [];
    const profileDir = options.strings.cpuProf;
    const server = await harness.startServer({
      args: ['--x509pop-ca-bundle', caFile, ...limits],
      ...(profileDir !== undefined && { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', resolve(profileDir)] }),
    });
    const pid = server.process.pid;
    log(`node ${process.version}, ${server.database} database, server pid ${pid}`);

    const legitNode = await pki.issueNode('legit-node');
    const legitimate = (until: Promise<void>) =>
      attestRepeatedly(server.port, legitNode, LEGIT_ADDRESS, intervalMs, until);

    const before = await legitimate(sleep(baseline * 1000));
    log(`legitimate x509pop attestation alone:  ${formatLatency(summarize(before.latencies))}`);

    // Certificates chaining to the CA, whose keys the attacker does not have (they are thrown away here).
    const stolen = await Promise.all(
      Array.from({ length: attackerCertificates }, (_, index) => pki.issueNode(`attacked-node-${index}`)),
    );
    const cpuBefore = cpuSeconds(pid);
    const rssBefore = residentMemory(pid).rssKiB;
    const started = performance.now();
    const plan: AttackPlan = {
      port: server.port,
      seconds,
      maxRequests,
      connections,
      attackerAddresses,
      certificates: stolen.map((node) => node.certificates),
    };
    const result = runAttackWorker<AttackPlan, AttackResult>(import.meta.url, plan);
    const attack = result.then(() => undefined);

    // A real agent attests with x509pop a third of the way into the attack (it retries 429 and must not exit).
    const realNode = await pki.issueNode('real-agent-node');
    await writeFile(join(harness.scratch, 'node.pem'), realNode.certificatePem);
    await writeFile(join(harness.scratch, 'node.key'), realNode.privateKeyPem, { mode: 0o600 });
    const realAgent = (async () => {
      await sleep((seconds * 1000) / 3);
      const agentStart = performance.now();
      const agent = await harness.startAgent(server, {
        x509pop: { certFile: join(harness.scratch, 'node.pem'), keyFile: join(harness.scratch, 'node.key') },
      });
      return { agent, readyMs: performance.now() - agentStart };
    })();

    const during = await legitimate(attack);
    const cpu = cpuSeconds(pid) - cpuBefore;
    const attackSeconds = (performance.now() - started) / 1000;
    const rss = residentMemory(pid);
    const real = await realAgent.catch((error: unknown) => ({ error: (error as Error).message }));
    await sleep(500);
    const realRunning = 'agent' in real && real.agent.process.isRunning;
    const { sent, connectionsOpened } = await result;
    const statuses = new Map((await result).answers);

    const duringSummary = summarize(during.latencies.length > 0 ? during.latencies : [Number.NaN]);
    const refused = statuses.get(429) ?? 0;
    log(`legitimate during attack:              ${formatLatency(duringSummary)}`);
    log(
      `legitimate attestations: ${before.latencies.length + during.latencies.length} succeeded, refused ` +
        JSON.stringify(Object.fromEntries([...before.refused, ...during.refused])),
    );
    log(
      `real sigil-agent (x509pop): ${'agent' in real ? `serving after ${(real.readyMs / 1000).toFixed(1)} s, ${realRunning ? 'still running' : 'EXITED'}` : `failed: ${real.error}`}`,
    );
    log(
      `attacker: ${formatCount(sent)} challenge requests in ${attackSeconds.toFixed(1)} s from ${attackerAddresses} ` +
        `address(es) on ${connections} connections at a time (${formatCount(connectionsOpened)} opened) with ` +
        `${attackerCertificates} certificates, answers ${JSON.stringify(Object.fromEntries(statuses))} ` +
        '(0: connection closed unanswered)',
    );
    log(
      `server: CPU ${cpu.toFixed(2)} s (${((100 * cpu) / attackSeconds).toFixed(0)} % of a core), ` +
        `RSS ${formatMiB(rssBefore)} -> ${formatMiB(rss.rssKiB)} (peak ${formatMiB(rss.peakKiB)})`,
    );
    const legitFailures = before.refused.size + during.refused.size;
    const goals: [string, boolean][] = [
      ['every legitimate attestation succeeds', legitFailures === 0 && during.latencies.length > 0],
      ['the real x509pop agent serves and has not exited', realRunning],
      [`legitimate p99 < ${P99_GOAL_MS} ms`, duringSummary.p99 < P99_GOAL_MS],
      ['server RSS growth < 50 MiB', rss.rssKiB - rssBefore < RSS_GROWTH_GOAL_KIB],
      ['the attacker is refused (429)', refused > 0],
    ];
    for (const [goal, met] of goals) log(`${met ? 'PASS' : 'FAIL'} ${goal}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-x509pop-challenges',
          database: server.database,
          legit_before: latencyJson(summarize(before.latencies)),
          legit_during: latencyJson(duringSummary),
          legit_refused: legitFailures,
          real_agent_ready_s: 'agent' in real ? Math.round(real.readyMs / 100) / 10 : null,
          real_agent_running: realRunning,
          attack_requests: sent,
          attack_connections: connectionsOpened,
          attack_answers: Object.fromEntries(statuses),
          server_cpu_s: Math.round(cpu * 100) / 100,
          server_rss_kib: rss.rssKiB,
          server_rss_growth_kib: rss.rssKiB - rssBefore,
          goals_met: goals.every(([, met]) => met),
        }),
      );
    }
    if (!goals.every(([, met]) => met)) process.exitCode = 1;
  });
}

if (isAttackWorker) await serveAttack(attack);
else await main();
