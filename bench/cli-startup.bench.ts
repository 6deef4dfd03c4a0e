/**
 * `npm run bench:cli`: how long the client commands take of their own, from `node` starting to the process exiting.
 *
 * Starts the built sigil-server and sigil-agent (temp data dirs and sockets, embedded database unless `DATABASE_URL`
 * is set), registers one entry for this process's uid and waits until the agent serves its SVID. Then, in each
 * round, runs once each, in an order that rotates from round to round so load from the rest of the machine falls on
 * every command alike: `node -e 0` (the baseline: Node's own start-up), `sigil-server --help`, `sigil-agent --help`,
 * `sigil-agent api fetch x509` against the running agent (which must print the entry's SPIFFE ID) and
 * `sigil-agent api fetch jwt --audience bench`. A command's own time is the median (and p90) of its wall times minus
 * the median (p90) of the baseline's. `--json` adds one JSON object on the last line. Target: every median own time
 * < 150 ms. On a shared, loaded machine the figures are indicative only: Node's own start-up varies several-fold.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { Harness, NODE_ALIAS_ID, ROOT, TRUST_DOMAIN, currentUid } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { median, percentile } from './support/stats.js';
import { X509SvidStream, newWorkloadClient } from './support/workload-client.js';

const RESPONSE_TIMEOUT_MS = 30_000;
const TARGET_MS = 150;

interface Measured {
  readonly name: string;
  readonly args: readonly string[];
  /** What its standard output must contain, when it must contain something. */
  readonly expect?: string;
}

/** Runs `node args…` from the repository root; its wall time in ms. Fails unless it exits 0 (and prints `expect`). */
function timeRun({ name, args, expect }: Measured): number {
  const started = performance.now();
  const result = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  const elapsed = performance.now() - started;
  if (result.status !== 0) throw new Error(`${name} exited ${result.status ?? result.signal}: ${result.stderr.trim()}`);
  if (expect !== undefined && !result.stdout.includes(expect)) {
    throw new Error(`${name} did not print ${expect}: ${result.stdout.trim()}`);
  }
  return elapsed;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'cli-startup.bench.js',
    numbers: {
      rounds: { default: 21, min: 3, max: 500, integer: true, description: 'runs of each command' },
    },
  });
  const { rounds } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('cli', async (harness) => {
    const server = await harness.startServer();
    const agent = await harness.startAgent(server);
    const spiffeId = `spiffe://${TRUST_DOMAIN}/bench/cli`;
    await server.admin.createEntries([{ spiffeId, parentId: NODE_ALIAS_ID, selectors: [`unix:uid:${currentUid()}`] }]);
    const warm = newWorkloadClient(agent.socketPath);
    const stream = new X509SvidStream(warm);
    await stream.waitFor((message) => message.spiffeIds.has(spiffeId), RESPONSE_TIMEOUT_MS);
    stream.cancel();
    warm.close();

    const baseline: Measured = { name: 'node -e 0', args: ['-e', '0'] };
    const measured: Measured[] = [
      { name: 'sigil-server --help', args: [join(ROOT, 'bin/sigil-server.js'), '--help'] },
      { name: 'sigil-agent --help', args: [join(ROOT, 'bin/sigil-agent.js'), '--help'] },
      {
        name: 'sigil-agent api fetch x509',
        args: [join(ROOT, 'bin/sigil-agent.js'), 'api', 'fetch', 'x509', '--socket-path', agent.socketPath],
        expect: spiffeId,
      },
      {
        name: 'sigil-agent api fetch jwt',
        args: [
          join(ROOT, 'bin/sigil-agent.js'),
          'api',
          'fetch',
          'jwt',
          '--audience',
          'bench',
          '--socket-path',
          agent.socketPath,
        ],
        expect: spiffeId,
      },
    ];
    const all = [baseline, ...measured];
    const times = new Map<string, number[]>(all.map(({ name }) => [name, []]));
    const loadBefore = loadavg()[0]!;
    for (const each of all) timeRun(each); // one unrecorded run each: the file system cache is warm for all
    for (let round = 0; round < rounds; round++) {
      for (let index = 0; index < all.length; index++) {
        const each = all[(round + index) % all.length]!;
        times.get(each.name)!.push(timeRun(each));
      }
    }
    const loadAfter = loadavg()[0]!;

    const p90 = (values: readonly number[]): number =>
      percentile(
        [...values].sort((a, b) => a - b),
        90,
      );
    const base = median(times.get(baseline.name)!);
    const base90 = p90(times.get(baseline.name)!);
    log(
      `node ${process.version}, ${rounds} runs each, load average (1 min) ${loadBefore.toFixed(2)} → ${loadAfter.toFixed(2)}`,
    );
    log(`${baseline.name.padEnd(28)} median ${base.toFixed(1)} ms, p90 ${base90.toFixed(1)} ms (baseline)`);
    const results = measured.map(({ name }) => {
      const samples = times.get(name)!;
      const wall = median(samples);
      const own = wall - base;
      const own90 = p90(samples) - base90;
      log(
        `${name.padEnd(28)} median ${wall.toFixed(1)} ms, own ${own.toFixed(1)} ms, own p90 ${own90.toFixed(1)} ms` +
          ` (min ${Math.min(...samples).toFixed(1)} ms) ${own < TARGET_MS ? 'meets' : 'MISSES'} the target < ${TARGET_MS} ms`,
      );
      return {
        command: name,
        median_ms: round1(wall),
        p90_ms: round1(p90(samples)),
        own_ms: round1(own),
        own_p90_ms: round1(own90),
      };
    });
    if (options.json) {
      log(
        JSON.stringify({
          bench: 'cli_startup',
          rounds,
          load_average: [round1(loadBefore), round1(loadAfter)],
          baseline_ms: round1(base),
          baseline_p90_ms: round1(base90),
          commands: results,
          target_own_ms: TARGET_MS,
        }),
      );
    }
  });
}

const round1 = (value: number): number => Math.round(value * 10) / 10;

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
