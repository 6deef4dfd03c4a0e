/**
 * `npm run bench:rss`: resident memory of sigil-agent with 1,000 entries and their SVIDs cached.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless
 * `DATABASE_URL` is set), reads the agent's VmRSS from /proc once it has synced (no workload entries yet), opens a
 * FetchX509SVID stream with a plain @grpc/grpc-js client under one first entry, then creates `--entries` - 1 more
 * entries for this process's uid through the admin API, 500 per request (the API's largest batch), one request
 * after the other while the agent signs what the previous ones brought. The stream sends the full set on every
 * change, so a message with all `--entries` SVIDs proves that the agent holds every entry and its signed SVID (the
 * rotator signs before the cache changes). Then VmRSS and VmHWM (peak) are read: at that moment, and again after
 * `--settle` seconds without changes (the garbage collector has had time to run). The agent's CPU time for the fill
 * (user + system, `/proc/<pid>/stat`) is printed with it.
 *
 * Then (`--server 1`, the default) the embedded server's memory, whatever `DATABASE_URL` says: `sigil-server run`
 * on a fresh data dir (first start: initdb, migrations, CA keys), VmRSS/VmHWM when it listens and `--settle` s later;
 * stopped, then started again on the same data dir (resume), the same readings.
 *
 * `--baseline DIR` names another built checkout (e.g. the commit before a change, in a worktree with `npm run build`
 * done): every measurement runs for it first, then for this checkout, in the same run, and the figures are printed
 * side by side. `uptime`'s load averages are printed before and after.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { Harness, NODE_ALIAS_ID, ROOT, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds, formatMiB, residentMemory, type ResidentMemory } from './support/proc.js';
import { X509SvidStream, newWorkloadClient } from './support/workload-client.js';

const FILL_TIMEOUT_MS = 90_000;
/** Entries per `POST /v1/entries` (the API's largest batch). */
const ENTRY_BATCH = 500;

interface AgentFigures {
  readonly database: string;
  readonly idle: ResidentMemory;
  readonly filled: ResidentMemory;
  readonly settled: ResidentMemory;
  readonly fillSeconds: number;
  readonly fillCpuSeconds: number;
}

interface ServerReading {
  readonly ready: ResidentMemory;
  readonly settled: ResidentMemory;
  readonly readySeconds: number;
}

interface ServerFigures {
  readonly first: ServerReading;
  readonly resume: ServerReading;
}

const log = (line: string): void => console.log(line);
const mib = (kib: number): string => formatMiB(kib).replace(' MiB', '');

function loadAverage(): string {
  return execFileSync('uptime', { encoding: 'utf8' }).trim();
}

/** The agent of the checkout at `root`: idle, then with `entries` SVIDs cached (see the file comment). */
async function measureAgent(root: string, label: string, entries: number, settle: number): Promise<AgentFigures> {
  return Harness.run('rss', async (harness) => {
    const server = await harness.startServer({ root });
    const agent = await harness.startAgent(server, { root });
    const pid = agent.process.pid;
    const uid = currentUid();
    const specs = Array.from({ length: entries }, (_, index) => ({
      spiffeId: `spiffe://${TRUST_DOMAIN}/bench/rss/workload-${index}`,
      parentId: NODE_ALIAS_ID,
      selectors: [`unix:uid:${uid}`],
    }));
    const idle = residentMemory(pid);
    log(`[${label}] ${root}: ${server.database} database, agent pid ${pid}, uid ${uid}`);
    log(
      `[${label}] agent synced, no workload entries:  VmRSS ${formatMiB(idle.rssKiB)} (peak ${formatMiB(idle.peakKiB)}; file-backed ${formatMiB(idle.fileKiB)})`,
    );

    await server.admin.createEntries(specs.slice(0, 1));
    const client = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(client);
    try {
      await stream.waitFor((message) => message.spiffeIds.has(specs[0]!.spiffeId), FILL_TIMEOUT_MS);
      const cpuBefore = cpuSeconds(pid);
      const started = performance.now();
      for (let created = 1; created < entries; created += ENTRY_BATCH) {
        await server.admin.createEntries(specs.slice(created, created + ENTRY_BATCH));
      }
      const full = await stream.waitFor((message) => message.spiffeIds.size === entries, FILL_TIMEOUT_MS);
      const fillCpuSeconds = cpuSeconds(pid) - cpuBefore;
      const missing = specs.filter((spec) => !full.spiffeIds.has(spec.spiffeId));
      if (missing.length > 0) throw new Error(`the stream lacks ${missing.length} SVIDs, e.g. ${missing[0]!.spiffeId}`);
      const filled = residentMemory(pid);
      const fillSeconds = (full.at - started) / 1000;
      log(
        `[${label}] ${entries - 1} entries created → all ${entries} SVIDs on the stream in ${fillSeconds.toFixed(1)} s` +
          ` (${ENTRY_BATCH} per request, back to back), agent CPU ${fillCpuSeconds.toFixed(2)} s`,
      );
      log(
        `[${label}] ${entries} SVIDs cached, at once:      VmRSS ${formatMiB(filled.rssKiB)} (peak ${formatMiB(filled.peakKiB)})`,
      );
      await sleep(settle * 1000);
      const settled = residentMemory(pid);
      log(
        `[${label}] ${entries} SVIDs cached, after ${settle} s:    VmRSS ${formatMiB(settled.rssKiB)} (peak ${formatMiB(settled.peakKiB)}; file-backed ${formatMiB(settled.fileKiB)})`,
      );
      return { database: server.database, idle, filled, settled, fillSeconds, fillCpuSeconds };
    } finally {
      stream.cancel();
      client.close();
    }
  });
}

/** The embedded server of the checkout at `root`: a first start on a fresh data dir, then a resume on it. */
async function measureServer(root: string, label: string, settle: number): Promise<ServerFigures> {
  return Harness.run('rss-server', async (harness) => {
    const reading = async (phase: string): Promise<ServerReading> => {
      const started = performance.now();
      const server = await harness.startServer({ root, embedded: true });
      const readySeconds = (performance.now() - started) / 1000;
      const pid = server.process.pid;
      const ready = residentMemory(pid);
      await sleep(settle * 1000);
      const settled = residentMemory(pid);
      await server.process.stop();
      log(
        `[${label}] embedded server, ${phase}: listening after ${readySeconds.toFixed(1)} s, VmRSS ` +
          `${formatMiB(ready.rssKiB)}; ${settle} s later ${formatMiB(settled.rssKiB)} (peak ${formatMiB(settled.peakKiB)}; ` +
          `file-backed ${formatMiB(settled.fileKiB)})`,
      );
      return { ready, settled, readySeconds };
    };
    const first = await reading('first start');
    const resume = await reading('resume');
    return { first, resume };
  });
}

function agentJson(figures: AgentFigures): Record<string, number | string> {
  return {
    idle_rss_kib: figures.idle.rssKiB,
    rss_kib: figures.filled.rssKiB,
    settled_rss_kib: figures.settled.rssKiB,
    peak_rss_kib: figures.settled.peakKiB,
    fill_seconds: Math.round(figures.fillSeconds * 10) / 10,
    fill_cpu_seconds: Math.round(figures.fillCpuSeconds * 100) / 100,
  };
}

function serverJson(figures: ServerFigures): Record<string, number> {
  return {
    first_start_rss_kib: figures.first.settled.rssKiB,
    first_start_peak_kib: figures.first.settled.peakKiB,
    first_start_ready_seconds: Math.round(figures.first.readySeconds * 10) / 10,
    resume_rss_kib: figures.resume.settled.rssKiB,
    resume_peak_kib: figures.resume.settled.peakKiB,
    resume_ready_seconds: Math.round(figures.resume.readySeconds * 10) / 10,
  };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'agent-rss.bench.js',
    numbers: {
      entries: { default: 1000, min: 2, max: 10_000, integer: true, description: 'entries (and SVIDs) cached' },
      settle: { default: 5, min: 0, max: 60, integer: false, description: 'seconds before the second reading' },
      server: {
        default: 1,
        min: 0,
        max: 1,
        integer: true,
        description: '1: also the embedded server (first start, resume)',
      },
    },
    strings: {
      baseline: 'another built checkout to measure first, side by side (e.g. a worktree of the previous commit)',
    },
  });
  const { entries, settle } = options.numbers;
  const baseline = options.strings.baseline === undefined ? undefined : resolve(options.strings.baseline);
  if (baseline !== undefined && !existsSync(join(baseline, 'dist/apps/agent/main.js'))) {
    throw new Error(`--baseline ${baseline}: no built agent there (dist/apps/agent/main.js); run npm run build in it`);
  }
  const withServer = options.numbers.server === 1;
  const loadBefore = loadAverage();
  log(`node ${process.version}; ${loadBefore}`);

  const builds =
    baseline === undefined
      ? [['this', ROOT]]
      : [
          ['baseline', baseline],
          ['this', ROOT],
        ];
  const results: { label: string; root: string; agent: AgentFigures; server?: ServerFigures }[] = [];
  for (const [label, root] of builds as [string, string][]) {
    const agent = await measureAgent(root, label, entries, settle);
    const server = withServer ? await measureServer(root, label, settle) : undefined;
    results.push({ label, root, agent, ...(server && { server }) });
  }
  const loadAfter = loadAverage();

  log('');
  log(`| MiB (VmRSS; peak VmHWM)              | ${results.map((result) => result.label).join(' | ')} |`);
  log(`| ${'-'.repeat(37)} | ${results.map(() => '---').join(' | ')} |`);
  const row = (name: string, value: (result: (typeof results)[number]) => string): void =>
    log(`| ${name.padEnd(37)} | ${results.map(value).join(' | ')} |`);
  row('agent idle', (r) => mib(r.agent.idle.rssKiB));
  row(
    `agent, ${entries} SVIDs (after ${settle} s)`,
    (r) => `${mib(r.agent.settled.rssKiB)} (peak ${mib(r.agent.settled.peakKiB)})`,
  );
  row('agent CPU for the fill, s', (r) => r.agent.fillCpuSeconds.toFixed(2));
  if (withServer) {
    row(
      'embedded server, first start',
      (r) => `${mib(r.server!.first.settled.rssKiB)} (peak ${mib(r.server!.first.settled.peakKiB)})`,
    );
    row(
      'embedded server, resume',
      (r) => `${mib(r.server!.resume.settled.rssKiB)} (peak ${mib(r.server!.resume.settled.peakKiB)})`,
    );
  }
  log(`load before: ${loadBefore}`);
  log(`load after:  ${loadAfter}`);
  if (options.json) {
    const current = results.at(-1)!;
    log(
      JSON.stringify({
        bench: 'agent_rss',
        entries,
        database: current.agent.database,
        ...agentJson(current.agent),
        ...(current.server && { server: serverJson(current.server) }),
        ...(results.length > 1 && {
          baseline: {
            root: results[0]!.root,
            ...agentJson(results[0]!.agent),
            ...(results[0]!.server && { server: serverJson(results[0]!.server) }),
          },
        }),
        load_before: loadBefore,
        load_after: loadAfter,
      }),
    );
  }
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
