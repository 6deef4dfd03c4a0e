/**
 * `npm run bench:signing-server`: X.509-SVID signing throughput of the server through the agent API on one core,
 * side by side with Debian's cfssl in the same run.
 *
 * Sigil: the built sigil-server runs under `taskset -c 0` (embedded database unless `DATABASE_URL` is set; the
 * embedded one runs inside the server process, so on that core too), with its per-agent signing rate limit raised
 * out of the way. This script attests an agent itself with a join token and holds the agent X509-SVID; it creates
 * `--batch` entries parented by that agent and one CSR for each (own P-256 key, URI SAN = the entry's SPIFFE ID),
 * then `--connections` kept-alive mTLS (TLS 1.3) connections post the
 * whole batch to `POST /agent/v1/svids/x509` over and over: every request pays agent authentication (SVID checked
 * once per connection, agent record looked up per request), authorisation of each entry, CSR parsing and signature
 * check, and leaf signing.
 *
 * cfssl: `cfssl serve` (GOMAXPROCS=1, `taskset -c 0`) with a P-256 CA made by openssl signs the same CSRs, one per
 * request over plain HTTP (`/api/v1/cfssl/sign`, cfssl has no batch API), driven by wrk. When cfssl or wrk is not
 * installed only that half is skipped, with the command to install them; no number is made up.
 *
 * The load generators (this process, or wrk) run under `taskset -c 1`. Rounds alternate the order of the two so
 * load from the rest of the machine falls on both alike. For each run the signer's CPU time is read from /proc, so
 * signatures per CPU-second are printed next to signatures per second. `--cpu-prof DIR` runs the server under
 * `node --cpu-prof` and leaves the profile in DIR.
 *
 * `--cores all`: the whole machine instead. The server runs unpinned with `--signing-workers` worker threads (default
 * one per CPU), cfssl unpinned with GOMAXPROCS = the number of CPUs, and the load generators unpinned too, so they
 * share the cores with the signer on both sides alike. The one-core mode (`--cores one`, the default) signs on the
 * server's event loop (`--signing-workers 0`, what the server does by itself on one CPU).
 *
 * The load average (`os.loadavg()`, as `uptime` shows it) is printed before and after the measured rounds and is in
 * the JSON line: quote the figures with it.
 */
import {
  AGENT_API_ROUTES,
  type BatchX509SvidResponseWire,
  parseX509SignResults,
  serializeX509SvidBatchRequest,
} from '@sigil/agent-api';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCsr, exportPublicKeySpki, generateKeyPair, pemBlocks } from '@sigil/pki';
import { SpiffeId } from '@sigil/spiffe';
import { AgentApiClient, type AgentApiOptions } from './support/agent-api-client.js';
import {
  CFSSL_INSTALL_HINT,
  type CfsslServer,
  cfsslVersion,
  checkCfsslSigns,
  missingCfsslTools,
  runWrk,
  startCfssl,
  writeWrkScript,
} from './support/cfssl.js';
import { Harness, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds } from './support/proc.js';
import { formatCount, median } from './support/stats.js';

const SIGNER_CPU = '0';
const LOAD_CPU = '1';
const WARM_UP_SECONDS = 2;
/** Issue 13's goals: Sigil/cfssl ≥ 1.2 on one core, ≥ 1.0 on the whole machine. */
const TARGET_RATIO = { one: 1.2, all: 1.0 } as const;
/** `taskset -c` list of every CPU. */
const ALL_CPUS = (cpus: number): string => `0-${cpus - 1}`;

/** One measured run of a signer. */
interface Run {
  readonly signatures: number;
  readonly seconds: number;
  /** CPU seconds the signer process used during the run. */
  readonly cpuSeconds: number;
}

const rate = (run: Run): number => run.signatures / run.seconds;
const perCpuSecond = (run: Run): number => run.signatures / run.cpuSeconds;
const describe = (run: Run): string =>
  `${formatCount(rate(run)).padStart(6)} signatures/s, ${formatCount(perCpuSecond(run)).padStart(6)} per CPU-second` +
  ` (${Math.round((run.cpuSeconds / run.seconds) * 100)} % of a core busy)`;

interface SampleCsr {
  readonly entryId: string;
  readonly spiffeId: string;
  readonly pem: string;
  readonly spkiDer: Uint8Array;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as { port: number };
  await new Promise((done) => server.close(done));
  return port;
}

/** Posts the batch on every connection until `seconds` have passed; every CSR of every answer must be signed. */
async function runSigil(
  client: AgentApiClient,
  body: string,
  batch: number,
  connections: number,
  seconds: number,
  pid: number,
): Promise<Run> {
  const cpuBefore = cpuSeconds(pid);
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let signatures = 0;
  const connection = async (): Promise<void> => {
    while (performance.now() < deadline) {
      // Only the statuses: decoding every certificate here would load the machine the server is measured on.
      const { results } = (await client.call(AGENT_API_ROUTES.signX509Svids, body)) as BatchX509SvidResponseWire;
      const refused = results.find((result) => result.status.code !== 'ok');
      if (refused) throw new Error(`sigil refused a CSR: ${refused.status.code} ${refused.status.message}`);
      if (results.length !== batch) throw new Error(`sigil answered ${results.length} results for ${batch} CSRs`);
      signatures += batch;
    }
  };
  await Promise.all(Array.from({ length: connections }, connection));
  const elapsed = (performance.now() - started) / 1000;
  return { signatures, seconds: elapsed, cpuSeconds: cpuSeconds(pid) - cpuBefore };
}

/** Checks one batch answer in full: every leaf issued by the bundle's CA, for the CSR's key and the entry's ID. */
function checkSigilAnswer(answer: unknown, csrs: readonly SampleCsr[], bundlePem: string): void {
  const cas = pemBlocks(bundlePem).map((block) => new X509Certificate(Buffer.from(block.der)));
  parseX509SignResults(answer).forEach((result, index) => {
    const csr = csrs[index]!;
    if (!result.ok || result.entryId !== csr.entryId) {
      const status = result.ok ? 'ok' : `${result.code} ${result.message}`;
      throw new Error(`sigil did not sign the CSR of entry ${csr.entryId}: ${status}`);
    }
    const leaf = new X509Certificate(result.chain[0]!);
    const issuer = cas.find((ca) => leaf.checkIssued(ca));
    if (!issuer || !leaf.verify(issuer.publicKey)) throw new Error('sigil leaf is not signed by a bundle CA');
    if (leaf.subjectAltName !== `URI:${csr.spiffeId}`) throw new Error(`sigil leaf SAN: ${leaf.subjectAltName}`);
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(csr.spkiDer)) {
      throw new Error("sigil leaf does not carry the CSR's key");
    }
  });
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'server-signing.bench.js',
    numbers: {
      seconds: { default: 6, min: 1, max: 60, integer: false, description: 'seconds per measured run' },
      rounds: { default: 3, min: 1, max: 10, integer: true, description: 'rounds (one run of each signer)' },
      batch: { default: 50, min: 1, max: 500, integer: true, description: 'CSRs per Sigil request' },
      connections: { default: 4, min: 1, max: 64, integer: true, description: 'Sigil mTLS connections' },
      cfsslConnections: { default: 16, min: 1, max: 256, integer: true, description: 'wrk connections to cfssl' },
      workers: {
        default: 0,
        min: 0,
        max: 256,
        integer: true,
        description: "with --cores all: the server's --signing-workers (0: one per CPU)",
      },
    },
    strings: {
      cpuProf: 'write a CPU profile of the server (node --cpu-prof) into this directory',
      cores: "'one' (default: signers on CPU 0, load on CPU 1) or 'all' (signers and load on every CPU)",
    },
  });
  const { seconds, rounds, batch, cfsslConnections } = options.numbers;
  const cores = options.strings.cores ?? 'one';
  if (cores !== 'one' && cores !== 'all') throw new Error(`--cores: must be 'one' or 'all', got '${cores}'`);
  const allCores = cores === 'all';
  const cpus = availableParallelism();
  const workers = allCores ? (options.numbers.workers === 0 ? cpus : options.numbers.workers) : 0;
  const loadAverage = (): string =>
    loadavg()
      .map((load) => load.toFixed(2))
      .join(', ');
  const log = (line: string): void => console.log(line);
  if (availableParallelism() < 2)
    throw new Error('this benchmark needs 2 CPUs: the signer on one, the load on the other');
  const missing = missingCfsslTools();
  const profileDir = options.strings.cpuProf === undefined ? undefined : resolve(options.strings.cpuProf);
  if (profileDir) await mkdir(profileDir, { recursive: true });

  await Harness.run('signing', async (harness) => {
    const server = await harness.startServer({
      ...(!allCores && { cpus: SIGNER_CPU }),
      // The per-agent limits (500 CSRs/s, 4 batches in progress) would measure the limiter; both are still checked.
      args: [
        ...['--agent-sign-rate', '100000', '--agent-sign-burst', '100000', '--agent-sign-max-in-flight', '1000'],
        ...['--signing-workers', String(workers)],
        // The connections wait idle while cfssl runs (two runs in a row between rounds): past the 10 s default.
        ...['--http-idle-timeout', '5m'],
      ],
      ...(profileDir && { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profileDir] }),
    });
    const bundlePem = await server.admin.bundlePem();
    const api: AgentApiOptions = { port: server.port, trustDomain: TRUST_DOMAIN, bundlePem };
    const credentials = await AgentApiClient.attestWithJoinToken(api, await server.admin.joinToken());
    const uid = currentUid();
    const entries = await server.admin.createEntries(
      Array.from({ length: batch }, (_, index) => ({
        spiffeId: `spiffe://${TRUST_DOMAIN}/bench/signing/workload-${index}`,
        parentId: credentials.spiffeId,
        selectors: [`unix:uid:${uid}`],
      })),
    );
    const csrs: SampleCsr[] = [];
    for (const entry of entries) {
      const keys = await generateKeyPair('ec-p256');
      const { pem } = await createCsr({ keys, spiffeId: SpiffeId.parse(entry.spiffeId) });
      csrs.push({ entryId: entry.id, spiffeId: entry.spiffeId, pem, spkiDer: exportPublicKeySpki(keys.publicKey) });
    }
    const body = JSON.stringify(
      serializeX509SvidBatchRequest(csrs.map((csr) => ({ entryId: csr.entryId, csrPem: csr.pem }))),
    );
    const connections = options.numbers.connections;
    const client = new AgentApiClient(api, credentials, connections);
    try {
      checkSigilAnswer(await client.call(AGENT_API_ROUTES.signX509Svids, body), csrs, bundlePem);

      let cfssl: CfsslServer | undefined;
      let wrkScript = '';
      if (missing.length === 0) {
        cfssl = allCores
          ? await startCfssl(harness, await freePort(), ALL_CPUS(cpus), cpus)
          : await startCfssl(harness, await freePort(), SIGNER_CPU);
        await checkCfsslSigns(cfssl, csrs[0]!.pem, csrs[0]!.spkiDer);
        wrkScript = await writeWrkScript(
          harness,
          csrs.map((csr) => csr.pem),
        );
      }
      // From here on this process only generates load: keep it (all its threads) off the signers' core.
      if (!allCores) execFileSync('taskset', ['-a', '-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' });

      const sigilRun = (runSeconds: number): Promise<Run> =>
        runSigil(client, body, batch, connections, runSeconds, server.process.pid);
      const cfsslRun = async (runSeconds: number): Promise<Run> => {
        const pid = cfssl!.process.pid;
        const cpuBefore = cpuSeconds(pid);
        const result = await runWrk(harness, {
          port: cfssl!.port,
          script: wrkScript,
          seconds: runSeconds,
          connections: cfsslConnections,
          cpus: allCores ? ALL_CPUS(cpus) : LOAD_CPU,
        });
        if (result.failures > 0) throw new Error(`cfssl failed ${result.failures} sign requests`);
        return { signatures: result.signatures, seconds: result.seconds, cpuSeconds: cpuSeconds(pid) - cpuBefore };
      };

      log(
        allCores
          ? `node ${process.version}, ${server.database} database; all ${cpus} CPUs: sigil with ${workers} signing ` +
              `workers, cfssl with GOMAXPROCS=${cpus}, load generators on the same CPUs`
          : `node ${process.version}, ${server.database} database; signers on CPU ${SIGNER_CPU}, load on CPU ${LOAD_CPU}` +
              ' (sigil signs on its event loop)',
      );
      log(
        `sigil: ${batch} CSRs per request, ${connections} mTLS connection${connections === 1 ? '' : 's'} (TLS 1.3), agent ${credentials.spiffeId}`,
      );
      if (cfssl) log(`cfssl ${cfsslVersion()}: 1 CSR per request, wrk with ${cfsslConnections} connections`);
      else log(`cfssl: SKIPPED, ${missing.join(' and ')} not installed; install with: ${CFSSL_INSTALL_HINT}`);

      // With workers, each worker thread compiles the signing path on its own: warm them up longer.
      await sigilRun(allCores ? 3 * WARM_UP_SECONDS : WARM_UP_SECONDS);
      if (cfssl) await cfsslRun(WARM_UP_SECONDS);
      const loadBefore = loadAverage();
      log(`load average before the rounds: ${loadBefore} (1, 5, 15 min)`);
      const sigilRuns: Run[] = [];
      const cfsslRuns: Run[] = [];
      for (let round = 1; round <= rounds; round++) {
        const order = round % 2 === 1 ? ['sigil', 'cfssl'] : ['cfssl', 'sigil'];
        for (const signer of order) {
          if (signer === 'sigil') {
            const run = await sigilRun(seconds);
            sigilRuns.push(run);
            log(`round ${round}: sigil ${describe(run)}`);
          } else if (cfssl) {
            const run = await cfsslRun(seconds);
            cfsslRuns.push(run);
            log(`round ${round}: cfssl ${describe(run)}`);
          }
        }
      }

      const loadAfter = loadAverage();
      log(`load average after the rounds: ${loadAfter} (1, 5, 15 min)`);
      const sigilRate = median(sigilRuns.map(rate));
      const sigilPerCpu = median(sigilRuns.map(perCpuSecond));
      log(`median: sigil ${formatCount(sigilRate)} signatures/s, ${formatCount(sigilPerCpu)} per CPU-second`);
      let summary: Record<string, unknown> = {
        bench: 'server_signing',
        cores,
        cpus: allCores ? cpus : 1,
        signing_workers: workers,
        database: server.database,
        load_before: loadBefore,
        load_after: loadAfter,
        batch,
        sigil_signatures_per_s: Math.round(sigilRate),
        sigil_signatures_per_cpu_s: Math.round(sigilPerCpu),
      };
      if (cfssl) {
        const cfsslRate = median(cfsslRuns.map(rate));
        const cfsslPerCpu = median(cfsslRuns.map(perCpuSecond));
        const ratio = sigilRate / cfsslRate;
        const ratioPerCpu = sigilPerCpu / cfsslPerCpu;
        log(`median: cfssl ${formatCount(cfsslRate)} signatures/s, ${formatCount(cfsslPerCpu)} per CPU-second`);
        log(
          `ratio sigil/cfssl: ${ratio.toFixed(2)} per second, ${ratioPerCpu.toFixed(2)} per CPU-second` +
            ` (target ≥ ${TARGET_RATIO[cores].toFixed(1)}: ${ratio >= TARGET_RATIO[cores] ? 'met' : 'NOT met'})`,
        );
        summary = {
          ...summary,
          cfssl_signatures_per_s: Math.round(cfsslRate),
          cfssl_signatures_per_cpu_s: Math.round(cfsslPerCpu),
          ratio: Number(ratio.toFixed(3)),
          ratio_per_cpu_s: Number(ratioPerCpu.toFixed(3)),
        };
      } else {
        summary = { ...summary, cfssl_skipped: `${missing.join(' and ')} not installed (${CFSSL_INSTALL_HINT})` };
      }
      if (profileDir) log(`server CPU profile: written to ${profileDir} when the server stops`);
      if (options.json) log(JSON.stringify(summary));
    } finally {
      client.close();
    }
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
