/**
 * `npm run bench:scale` (issue 13 items 5 and 6): the registry at scale.
 *
 * 1. Batch create: `--entries` entries created through the admin API (`POST /v1/entries`, batches of 500, one
 *    kept-alive connection) of a built `sigil-server run` on a fresh database: entries per second (wall) and the
 *    server's CPU seconds per 1,000 entries (/proc). With `--baseline DIR` (another checkout whose `npm run build`
 *    is done, e.g. the commit before a change), a server of that build runs beside this one on its own fresh
 *    database, and the batches alternate between the two, so both see the same load and the ratio is same-run.
 * 2. Restart → ready (needs `DATABASE_URL`; without it this part says it is skipped): a server creates its schema
 *    and is stopped, `--restart-entries` entries (`--selectors-per-entry` selectors each, 1 by default, stored one
 *    after another; 1,000 parents, one created_at for every
 *    `--entries-per-time` of them: 500 by default, as batch creates stamp them; the selectors stored in their entries'
 *    order as creates write them, or at random with `--children-order shuffled`) are written straight into its
 *    PostgreSQL database with `generate_series`, and the server is started again `--restarts` times (alternating
 *    with the baseline build when given): the time from spawn to its `sigil-server listening` line (it listens only
 *    once its entry index is loaded, after the `entry index loaded` line, whose entry count is checked), and its
 *    CPU seconds and resident memory then (VmRSS, and VmHWM: the peak while loading). `--cpu-prof DIR` writes a V8 CPU profile of
 *    each server of this build there (node --cpu-prof): the create server and each restart.
 *
 * The load (`uptime`) is printed with the figures: this machine is shared; compare ratios from the same run.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { Harness, NODE_ALIAS_ID, TRUST_DOMAIN, type ServerProcess } from './support/harness.js';
import { parseOptions } from './support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from './support/proc.js';

const BATCH = 500;
const RESTART_TARGET_MS = 10_000;
const RESTART_TARGET_MIB = 1024;
const CREATE_TARGET_PER_S = 10_000;

interface Build {
  readonly name: 'this' | 'baseline';
  readonly root: string | undefined;
}

const load = (): string =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(', ');

function describeBuild(root: string): string {
  try {
    return execFileSync('git', ['-C', root, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' }).trim().slice(0, 80);
  } catch {
    return root;
  }
}

/** node --cpu-prof for the servers of this build when `--cpu-prof DIR` is given (written when a server stops). */
const cpuProfArgs = (build: Build, cpuProfDir: string | undefined): string[] =>
  cpuProfDir && build.name === 'this' ? ['--cpu-prof', `--cpu-prof-dir=${resolve(cpuProfDir)}`] : [];

interface CreateFigures {
  readonly build: Build['name'];
  entries: number;
  wallMs: number;
  cpuS: number;
}

/** Creates `total` entries through each build's admin API, the 500-entry batches alternating between the builds. */
async function batchCreate(
  harness: Harness,
  builds: readonly Build[],
  total: number,
  cpuProfDir: string | undefined,
): Promise<CreateFigures[]> {
  const servers: ServerProcess[] = [];
  for (const build of builds) {
    const nodeArgs = cpuProfArgs(build, cpuProfDir);
    servers.push(await harness.startServer({ name: `create-${build.name}`, root: build.root, nodeArgs }));
  }
  const figures = builds.map((build): CreateFigures => ({ build: build.name, entries: 0, wallMs: 0, cpuS: 0 }));
  for (let start = 0; start < total; start += BATCH) {
    const size = Math.min(BATCH, total - start);
    for (const [index, server] of servers.entries()) {
      const batch = Array.from({ length: size }, (_, i) => ({
        spiffeId: `spiffe://${TRUST_DOMAIN}/scale/create/${start + i}`,
        parentId: NODE_ALIAS_ID,
        selectors: [`unix:uid:${(start + i) % 1000}`],
      }));
      const cpuBefore = cpuSeconds(server.process.pid);
      const began = performance.now();
      await server.admin.createEntries(batch);
      figures[index]!.wallMs += performance.now() - began;
      figures[index]!.cpuS += cpuSeconds(server.process.pid) - cpuBefore;
      figures[index]!.entries += size;
    }
  }
  for (const server of servers) await server.process.stop();
  return figures;
}

interface RestartFigures {
  readonly build: Build['name'];
  readonly readyMs: number;
  /** The server's CPU seconds (user + system) from spawn to ready: what the restart costs on a loaded machine. */
  readonly cpuS: number;
  readonly rssKiB: number;
  readonly peakKiB: number;
  readonly entries: number;
}

/**
 * How the seeded selectors are stored: `stored`, in their entries' order (as creates write them); `shuffled`, at
 * random (as if every entry's children had been rewritten out of order): the index load then finds every child's
 * entry by id.
 */
const CHILDREN_ORDERS = ['stored', 'shuffled'] as const;
type ChildrenOrder = (typeof CHILDREN_ORDERS)[number];

async function seed(
  databaseUrl: string,
  count: number,
  entriesPerTime: number,
  childrenOrder: ChildrenOrder,
  selectorsPerEntry: number,
): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'sigil-bench-scale' });
  await client.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ revision: string }>(
      `SELECT revision FROM revision_counters WHERE name = 'entries' FOR UPDATE`,
    );
    const base = Number(rows[0]!.revision);
    await client.query(
      `INSERT INTO registered_entries (id, spiffe_id, parent_id, x509_svid_ttl, jwt_svid_ttl, admin, downstream, hint,
                                       expires_at, revision_number, created_at, updated_at)
       SELECT gen_random_uuid(), 'spiffe://${TRUST_DOMAIN}/scale/seeded/' || i,
              'spiffe://${TRUST_DOMAIN}/scale/node/' || (i % 1000), 0, 0, false, false, '', NULL, $1::bigint + i,
              t, t
         FROM generate_series(1, $2::integer) AS i,
              LATERAL (SELECT now() - ((i - 1) / $3::integer) * interval '1 millisecond' AS t) AS time`,
      [base, count, entriesPerTime],
    );
    await client.query(
      `INSERT INTO selectors (entry_id, type, value)
       SELECT id, 'unix', 'uid:' || (revision_number % 1000) || (CASE WHEN n = 1 THEN '' ELSE ':' || n END)
         FROM registered_entries CROSS JOIN LATERAL generate_series(1, $2::integer) AS n
        WHERE revision_number > $1
        ORDER BY ${childrenOrder === 'shuffled' ? 'random()' : 'registered_entries.ctid, n'}`,
      [base, selectorsPerEntry],
    );
    // As if the change log of these revisions had been pruned: readers behind them resync in full.
    await client.query(
      `UPDATE revision_counters SET revision = $1::bigint + $2::bigint, pruned_through = $1::bigint + $2::bigint
        WHERE name = 'entries'`,
      [base, count],
    );
    await client.query('COMMIT');
    await client.query('ANALYZE');
  } finally {
    await client.end();
  }
}

/** Starts a server on `databaseUrl` and measures spawn → listening, then stops it. */
/** Longest wait for a restart to be ready; a build slower than this is reported as not ready within it. */
const RESTART_TIMEOUT_MS = 300_000;

async function restartOnce(
  harness: Harness,
  build: Build,
  databaseUrl: string,
  kekFile: string,
  round: number,
  cpuProfDir: string | undefined,
): Promise<RestartFigures | undefined> {
  const began = performance.now();
  const name = `restart-${build.name}-${round}`;
  const nodeArgs = cpuProfArgs(build, cpuProfDir);
  const server = await harness
    .startServer({
      name,
      root: build.root,
      databaseUrl,
      nodeArgs,
      args: ['--kek-file', kekFile],
      startTimeoutMs: RESTART_TIMEOUT_MS,
    })
    .catch(() => undefined);
  if (server === undefined) return undefined;
  const readyMs = performance.now() - began;
  const cpuS = cpuSeconds(server.process.pid);
  const memory = residentMemory(server.process.pid);
  // Logged before the listening line (the index loads first), so it is among the last lines already written.
  const line = server.process
    .recentOutput(50)
    .split('\n')
    .find((text) => text.includes('"msg":"entry index loaded"'));
  if (line === undefined) throw new Error(`${name}: listening without an 'entry index loaded' line`);
  const { entries } = JSON.parse(line) as { entries: number };
  await server.process.stop();
  return { build: build.name, readyMs, cpuS, rssKiB: memory.rssKiB, peakKiB: memory.peakKiB, entries };
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'scale.bench.js',
    numbers: {
      entries: { default: 20_000, min: BATCH, max: 1_000_000, integer: true, description: 'entries created per build' },
      restartEntries: {
        default: 1_000_000,
        min: 0,
        max: 5_000_000,
        integer: true,
        description: 'entries seeded for the restart (0: no restart part)',
      },
      restarts: { default: 2, min: 1, max: 10, integer: true, description: 'restarts per build' },
      selectorsPerEntry: {
        default: 1,
        min: 1,
        max: 64,
        integer: true,
        description: "selectors of each seeded entry, stored one after another (as a create writes an entry's)",
      },
      entriesPerTime: {
        default: 500,
        min: 1,
        max: 5_000_000,
        integer: true,
        description:
          'seeded entries that share one created_at/updated_at (500: as a batch create stamps them; 1: all distinct)',
      },
    },
    strings: {
      baseline: 'checkout root of a baseline build measured beside this one (its dist built)',
      cpuProf: 'directory for V8 CPU profiles of the servers of this build (create and restarts)',
      childrenOrder: `how the seeded selectors are stored: ${CHILDREN_ORDERS.join(' or ')} (default stored: in their entries' order, as creates write them)`,
    },
  });
  const { entries, restartEntries, restarts, entriesPerTime, selectorsPerEntry } = options.numbers;
  const childrenOrder = (options.strings.childrenOrder ?? 'stored') as ChildrenOrder;
  if (!CHILDREN_ORDERS.includes(childrenOrder)) {
    throw new Error(`--children-order: ${childrenOrder} is not one of ${CHILDREN_ORDERS.join(', ')}`);
  }
  const log = (line: string): void => console.log(line);
  const builds: Build[] = [{ name: 'this', root: undefined }];
  const baselineRoot = options.strings.baseline;
  if (baselineRoot) builds.push({ name: 'baseline', root: resolve(baselineRoot) });
  const database = process.env['DATABASE_URL'] ? 'postgresql' : 'embedded';
  log(`bench:scale on ${database}; this build: ${describeBuild(process.cwd())}`);
  if (baselineRoot) log(`baseline build: ${describeBuild(baselineRoot)}`);

  await Harness.run('scale', async (harness) => {
    const loadBefore = load();
    const created = await batchCreate(harness, builds, entries, options.strings.cpuProf);
    const loadAfter = load();
    log(
      `batch create, ${entries} entries per build, batches of ${BATCH} alternating (load ${loadBefore} → ${loadAfter}):`,
    );
    for (const figure of created) {
      const perSecond = figure.entries / (figure.wallMs / 1000);
      log(
        `  ${figure.build.padEnd(8)} ${Math.round(perSecond)} entries/s, server CPU ${((figure.cpuS / figure.entries) * 1000).toFixed(3)} s per 1,000 entries` +
          (figure.build === 'this'
            ? `; target >= ${CREATE_TARGET_PER_S}/s: ${perSecond >= CREATE_TARGET_PER_S ? 'met' : 'NOT met'}`
            : ''),
      );
    }
    const rate = (figure: CreateFigures | undefined) => (figure ? figure.entries / (figure.wallMs / 1000) : undefined);
    const createRatio =
      created.length === 2 ? Math.round((rate(created[0])! / rate(created[1])!) * 100) / 100 : undefined;
    if (createRatio !== undefined) log(`  this / baseline: ${createRatio}x entries/s`);

    let restartResults: RestartFigures[] = [];
    let restartLoad: string | undefined;
    const restartTimeouts: string[] = [];
    if (restartEntries > 0 && database === 'postgresql') {
      const first = await harness.startServer({ name: 'restart-schema' });
      await first.process.stop();
      const seedBegan = performance.now();
      await seed(first.databaseUrl!, restartEntries, entriesPerTime, childrenOrder, selectorsPerEntry);
      log(
        `restart: ${restartEntries} entries seeded in ${((performance.now() - seedBegan) / 1000).toFixed(1)} s ` +
          `(${entriesPerTime} per created_at, ${selectorsPerEntry} selector(s) each, stored ${childrenOrder})`,
      );
      const kekFile = join(first.dataDir, 'kek.key');
      const loadStart = load();
      log(`restart → ready with ${restartEntries} entries (load at the start ${loadStart}):`);
      for (let round = 0; round < restarts; round++) {
        for (const build of builds) {
          if (restartTimeouts.includes(build.name)) continue; // not ready within the limit once: not again
          const figure = await restartOnce(harness, build, first.databaseUrl!, kekFile, round, options.strings.cpuProf);
          if (figure === undefined) {
            log(`  ${build.name.padEnd(8)} not ready within ${RESTART_TIMEOUT_MS / 1000} s (stopped)`);
            restartTimeouts.push(build.name);
            continue;
          }
          restartResults.push(figure);
          if (figure.entries < restartEntries)
            throw new Error(`${figure.build}: index loaded ${figure.entries} entries`);
          const met = figure.readyMs < RESTART_TARGET_MS && figure.peakKiB / 1024 < RESTART_TARGET_MIB;
          log(
            `  ${figure.build.padEnd(8)} ${(figure.readyMs / 1000).toFixed(2)} s (server CPU ${figure.cpuS.toFixed(1)} s), RSS ${formatMiB(figure.rssKiB)} (peak ${formatMiB(figure.peakKiB)})` +
              (figure.build === 'this' ? `; target < 10 s and < 1 GiB: ${met ? 'met' : 'NOT met'}` : ''),
          );
        }
      }
      restartLoad = `${loadStart} → ${load()}`;
      log(`  load at the end ${load()}`);
    } else if (restartEntries > 0) {
      log('restart part skipped: it seeds PostgreSQL directly; set DATABASE_URL');
      restartResults = [];
    }
    if (options.json) {
      log(
        JSON.stringify({
          bench: 'scale',
          database,
          create: created.map((figure) => ({
            build: figure.build,
            entries: figure.entries,
            entries_per_s: Math.round(rate(figure)!),
            server_cpu_s_per_1000: Math.round((figure.cpuS / figure.entries) * 1000 * 1000) / 1000,
          })),
          create_ratio: createRatio,
          create_load: `${loadBefore} → ${loadAfter}`,
          restart_entries: restartResults.length > 0 ? restartEntries : undefined,
          restart_entries_per_time: restartResults.length > 0 ? entriesPerTime : undefined,
          restart_children_order: restartResults.length > 0 ? childrenOrder : undefined,
          restart_selectors_per_entry: restartResults.length > 0 ? selectorsPerEntry : undefined,
          restart: restartResults.map((figure) => ({
            build: figure.build,
            ready_ms: Math.round(figure.readyMs),
            cpu_s: Math.round(figure.cpuS * 10) / 10,
            rss_mib: Math.round(figure.rssKiB / 102.4) / 10,
            peak_rss_mib: Math.round(figure.peakKiB / 102.4) / 10,
          })),
          restart_load: restartLoad,
          restart_not_ready_within_300_s: restartTimeouts,
        }),
      );
    }
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
