/**
 * Issue 16, findings 3 and 8: unauthenticated clients make the server verify forged x509pop chains and look up
 * guessed join tokens. `npx tsc -b bench && node dist/bench/dos/attestation-flood.bench.js` after `npm run build`.
 *
 * The built sigil-server runs on 127.0.0.1 with x509pop enabled (embedded database unless `DATABASE_URL` is set).
 * The attacker, from `--attacker-addresses` loopback addresses (127.0.0.10, …), sends for `--seconds` seconds, as
 * fast as the server answers: over `--chain-connections` TLS connections, forged x509pop chains of 8 certificates
 * of `--forged-bytes` bytes each, all named like the CA, without key identifiers, each intermediate signed by the
 * next and listed in reverse (the most signature checks a chain can ask for; 8 × 12 KB was the issue's chain, now
 * refused by the size cap); over `--guess-connections` connections, join token guesses with a valid CSR (so the
 * token is looked up in the database). Beside it, a legitimate node attests with x509pop from 127.0.0.2 every
 * `--interval-ms`, and an admin calls `GET /v1/entries/count` with a bearer token from 127.0.0.3 every
 * `--admin-interval-ms` (paced, so that the legitimate load is the same alone and during the attack); both first alone
 * for `--baseline` seconds, then during the attack.
 *
 * The attacker runs in a child process of its own, so that its client work shares nothing with the legitimate
 * callers but the cores.
 *
 * Goals: every legitimate attestation succeeds with p99 < 250 ms, the admin's p99 < 100 ms, fewer than 20 join token
 * guesses per second reach the database (was 271/s), the server uses less than half a core during the attack (the
 * legitimate callers' own share, measured alone, is printed beside it), its RSS grows by less than 50 MiB.
 */
import { AGENT_API_ROUTES } from '@sigil/agent-api';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { createCsr, generateKeyPair } from '@sigil/pki';
import { isAttackWorker, runAttackWorker, serveAttack } from '../support/attack-worker.js';
import { Harness } from '../support/harness.js';
import { callsUntil, countStatus, httpsGetStatus } from '../support/https-caller.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';
import { CLOSED_UNANSWERED, X509popPki, attestRepeatedly, postJson, tlsAgent } from '../support/x509pop.js';

const ATTESTATION_P99_GOAL_MS = 250;
const ADMIN_P99_GOAL_MS = 100;
const CHECKED_GUESSES_GOAL_PER_SECOND = 20;
const CPU_GOAL_CORES = 0.5;
const RSS_GROWTH_GOAL_KIB = 50 * 1024;

const count = countStatus;

/** What the attacker is told to do. */
interface AttackPlan {
  readonly port: number;
  readonly seconds: number;
  readonly maxRequests: number;
  readonly chainConnections: number;
  readonly guessConnections: number;
  readonly attackerAddresses: number;
  /** Base64 DER certificates of the forged chain. */
  readonly forged: readonly string[];
  /** A valid CSR, so that each guess reaches the token lookup. */
  readonly csr: string;
}

interface AttackResult {
  readonly sent: number;
  /** Connections it opened (attempted), counting the ones refused at accept. */
  readonly connectionsOpened: number;
  readonly chainAnswers: [number, number][];
  readonly guessAnswers: [number, number][];
}

/** The attacker, in its own process: forged chains and join token guesses until the deadline. */
async function attack(plan: AttackPlan): Promise<AttackResult> {
  const agent = tlsAgent(plan.chainConnections + plan.guessConnections);
  const chainAnswers = new Map<number, number>();
  const guessAnswers = new Map<number, number>();
  let sent = 0;
  let connectionsOpened = 0;
  const deadline = performance.now() + plan.seconds * 1000;
  const worker = async (index: number, guess: boolean) => {
    const address = `127.0.0.${10 + (index % plan.attackerAddresses)}`;
    while (sent < plan.maxRequests && performance.now() < deadline) {
      sent += 1;
      // A connection refused at accept (no answer) is counted as status 0, and the attacker goes on.
      const answer = guess
        ? await postJson(
            plan.port,
            agent,
            AGENT_API_ROUTES.attestJoinToken.path,
            { token: randomBytes(16).toString('hex'), csr: plan.csr },
            address,
          ).catch(() => CLOSED_UNANSWERED)
        : await postJson(
            plan.port,
            agent,
            AGENT_API_ROUTES.x509popChallenge.path,
            { certificates: plan.forged },
            address,
          ).catch(() => CLOSED_UNANSWERED);
      count(guess ? guessAnswers : chainAnswers, answer.status);
      if (answer.newConnection) connectionsOpened += 1;
    }
  };
  await Promise.all([
    ...Array.from({ length: plan.chainConnections }, (_, index) => worker(index, false)),
    ...Array.from({ length: plan.guessConnections }, (_, index) => worker(index, true)),
  ]);
  agent.destroy();
  return { sent, connectionsOpened, chainAnswers: [...chainAnswers], guessAnswers: [...guessAnswers] };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/attestation-flood.bench.js',
    numbers: {
      seconds: { default: 10, min: 1, max: 60, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the legitimate callers alone' },
      chainConnections: { default: 16, min: 0, max: 256, integer: true, description: 'connections sending chains' },
      guessConnections: { default: 16, min: 0, max: 256, integer: true, description: 'connections guessing tokens' },
      attackerAddresses: { default: 4, min: 1, max: 200, integer: true, description: 'attacking source addresses' },
      forgedBytes: { default: 4000, min: 500, max: 12_000, integer: true, description: 'bytes per forged certificate' },
      maxRequests: { default: 200_000, min: 1, max: 2_000_000, integer: true, description: 'attack requests cap' },
      intervalMs: { default: 250, min: 10, max: 10_000, integer: true, description: 'legitimate attestation period' },
      adminIntervalMs: {
        default: 50,
        min: 0,
        max: 10_000,
        integer: true,
        description: 'admin call period (0: back to back)',
      },
    },
    strings: { cpuProf: 'write a CPU profile of the server (node --cpu-prof) into this directory' },
  });
  const { seconds, baseline, chainConnections, guessConnections, attackerAddresses, forgedBytes, maxRequests } =
    options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-attestation-flood', async (harness) => {
    const pki = await X509popPki.create();
    const caFile = join(harness.scratch, 'x509pop-ca.pem');
    await writeFile(caFile, pki.caPem);
    const profileDir = options.strings.cpuProf;
    const server = await harness.startServer({
      args: ['--x509pop-ca-bundle', caFile],
      ...(profileDir !== undefined && { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', resolve(profileDir)] }),
    });
    const pid = server.process.pid;
    log(`node ${process.version}, ${server.database} database, server pid ${pid}`);

    const node = await pki.issueNode('legit-node');
    const { token } = (await server.admin.call('POST', '/v1/admin-tokens', { name: 'bench' })) as { token: string };
    const adminAgent = tlsAgent(1);
    const admin = () =>
      httpsGetStatus(server.port, adminAgent, '/v1/entries/count', { authorization: `Bearer ${token}` }, '127.0.0.3');
    const legitimate = async (until: Promise<void>) => {
      const [attestations, adminLatencies] = await Promise.all([
        attestRepeatedly(server.port, node, '127.0.0.2', options.numbers.intervalMs, until),
        callsUntil("the admin's GET /v1/entries/count", admin, until, options.numbers.adminIntervalMs),
      ]);
      return { attestations, admin: adminLatencies };
    };

    const cpuAloneStart = cpuSeconds(pid);
    const aloneStarted = performance.now();
    const before = await legitimate(sleep(baseline * 1000));
    // What the legitimate callers alone cost, in cores, printed beside the CPU during the attack.
    const cpuAloneCores = (cpuSeconds(pid) - cpuAloneStart) / ((performance.now() - aloneStarted) / 1000);
    log(`legitimate x509pop attestation alone: ${formatLatency(summarize(before.attestations.latencies))}`);
    log(`admin GET /v1/entries/count alone:    ${formatLatency(summarize(before.admin))}`);

    const forged = await pki.forgedChain(8, forgedBytes);
    const forgedSize = forged.reduce((sum, certificate) => sum + Buffer.from(certificate, 'base64').length, 0);
    const csr = (await createCsr({ keys: await generateKeyPair('ec-p256') })).pem;
    const cpuBefore = cpuSeconds(pid);
    const rssBefore = residentMemory(pid).rssKiB;
    const started = performance.now();
    const plan: AttackPlan = {
      port: server.port,
      seconds,
      maxRequests,
      chainConnections,
      guessConnections,
      attackerAddresses,
      forged,
      csr,
    };
    const result = runAttackWorker<AttackPlan, AttackResult>(import.meta.url, plan);
    const attack = result.then(() => undefined);
    const during = await legitimate(attack);
    const attackSeconds = (performance.now() - started) / 1000;
    const cpu = cpuSeconds(pid) - cpuBefore;
    const rss = residentMemory(pid);
    adminAgent.destroy();
    const { sent, connectionsOpened } = await result;
    const chainAnswers = new Map((await result).chainAnswers);
    const guessAnswers = new Map((await result).guessAnswers);

    const attestDuring = summarize(
      during.attestations.latencies.length > 0 ? during.attestations.latencies : [Number.NaN],
    );
    const adminDuring = summarize(during.admin);
    const legitRefused = new Map([...before.attestations.refused, ...during.attestations.refused]);
    const checkedGuesses = (guessAnswers.get(403) ?? 0) / attackSeconds;
    const checkedChains = (chainAnswers.get(403) ?? 0) / attackSeconds;
    log(`legitimate x509pop attestation during: ${formatLatency(attestDuring)}`);
    log(`admin during attack:                   ${formatLatency(adminDuring)}`);
    const slowest = during.attestations.latencies.indexOf(Math.max(...during.attestations.latencies));
    if (slowest >= 0) {
      const offset = (during.attestations.startedAt[slowest]! - started) / 1000;
      log(
        `slowest legitimate attestation during: started ${offset.toFixed(2)} s into the attack (${new Date(performance.timeOrigin + during.attestations.startedAt[slowest]!).toISOString()})`,
      );
    }
    log(`legitimate attestations refused: ${JSON.stringify(Object.fromEntries(legitRefused))}`);
    log(
      `attacker: ${formatCount(sent)} requests in ${attackSeconds.toFixed(1)} s from ${attackerAddresses} address(es) ` +
        `on ${formatCount(connectionsOpened)} connections (0: connection closed unanswered); ` +
        `forged chains (${formatCount(forgedSize)} bytes) ${JSON.stringify(Object.fromEntries(chainAnswers))}, ` +
        `join token guesses ${JSON.stringify(Object.fromEntries(guessAnswers))}`,
    );
    log(
      `checked per second: ${checkedChains.toFixed(1)} forged chains, ${checkedGuesses.toFixed(1)} join token guesses`,
    );
    const attackCores = cpu / attackSeconds - cpuAloneCores;
    log(
      `server: CPU ${cpu.toFixed(2)} s (${((100 * cpu) / attackSeconds).toFixed(0)} % of a core; the legitimate ` +
        `callers alone: ${(100 * cpuAloneCores).toFixed(0)} %, so the attack: ${(100 * attackCores).toFixed(0)} %), ` +
        `RSS ${formatMiB(rssBefore)} -> ${formatMiB(rss.rssKiB)} (peak ${formatMiB(rss.peakKiB)}), ` +
        `${((1000 * cpu) / Math.max(1, sent)).toFixed(1)} ms of CPU per attack request`,
    );
    const goals: [string, boolean][] = [
      ['every legitimate attestation succeeds', legitRefused.size === 0 && during.attestations.latencies.length > 0],
      [`legitimate attestation p99 < ${ATTESTATION_P99_GOAL_MS} ms`, attestDuring.p99 < ATTESTATION_P99_GOAL_MS],
      [`admin p99 < ${ADMIN_P99_GOAL_MS} ms`, adminDuring.p99 < ADMIN_P99_GOAL_MS],
      [
        `join token guesses checked < ${CHECKED_GUESSES_GOAL_PER_SECOND}/s`,
        checkedGuesses < CHECKED_GUESSES_GOAL_PER_SECOND,
      ],
      [`server CPU < ${CPU_GOAL_CORES} core`, cpu / attackSeconds < CPU_GOAL_CORES],
      ['server RSS growth < 50 MiB', rss.rssKiB - rssBefore < RSS_GROWTH_GOAL_KIB],
    ];
    for (const [goal, met] of goals) log(`${met ? 'PASS' : 'FAIL'} ${goal}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-attestation-flood',
          database: server.database,
          attestation_before: latencyJson(summarize(before.attestations.latencies)),
          attestation_during: latencyJson(attestDuring),
          attestation_refused: Object.fromEntries(legitRefused),
          admin_before: latencyJson(summarize(before.admin)),
          admin_during: latencyJson(adminDuring),
          attack_requests: sent,
          attack_connections: connectionsOpened,
          forged_chain_bytes: forgedSize,
          forged_chain_answers: Object.fromEntries(chainAnswers),
          join_token_guess_answers: Object.fromEntries(guessAnswers),
          checked_chains_per_s: Math.round(checkedChains * 10) / 10,
          checked_guesses_per_s: Math.round(checkedGuesses * 10) / 10,
          server_cpu_s: Math.round(cpu * 100) / 100,
          server_cpu_cores: Math.round((cpu / attackSeconds) * 100) / 100,
          server_cpu_cores_alone: Math.round(cpuAloneCores * 100) / 100,
          server_cpu_cores_attack: Math.round(attackCores * 100) / 100,
          server_cpu_ms_per_attack_request: Math.round((10_000 * cpu) / Math.max(1, sent)) / 10,
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
