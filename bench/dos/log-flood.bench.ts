/**
 * Issue 16, finding 4: an unauthenticated client floods the server log. `npx tsc -b bench && node
 * dist/bench/dos/log-flood.bench.js` after `npm run build`.
 *
 * The built sigil-server runs on 127.0.0.1 (embedded database unless `DATABASE_URL` is set). A legitimate admin
 * holding a bearer token calls `GET /v1/entries/count` on the TLS port one request at a time, first alone for
 * `--baseline` seconds, then beside an attacker that sends `GET /v1/entries?token=<--query-bytes>` with no
 * credentials over `--connections` kept-alive TLS connections for `--seconds` seconds (at most `--max-requests`
 * requests). It prints the admin's latency before and during the attack, the attacker's answers (all must be 401),
 * and the server's log growth, CPU time and RSS over the attack. Goals: the server log grows by well under 1 MiB
 * whatever the attacker sends, the query string never reaches it, and the admin's p99 stays under 100 ms.
 */
import { readFileSync, statSync } from 'node:fs';
import { Agent } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { Harness } from '../support/harness.js';
import { callsUntil, countStatus, httpsGetStatus } from '../support/https-caller.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize } from '../support/stats.js';

const LOG_GROWTH_GOAL_BYTES = 1024 * 1024;
const P99_GOAL_MS = 100;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/log-flood.bench.js',
    numbers: {
      seconds: { default: 5, min: 1, max: 30, integer: false, description: 'attack duration in seconds' },
      baseline: { default: 2, min: 1, max: 30, integer: false, description: 'seconds of the admin alone' },
      connections: { default: 16, min: 1, max: 64, integer: true, description: 'attacking TLS connections' },
      maxRequests: { default: 100_000, min: 1, max: 1_000_000, integer: true, description: 'attack requests cap' },
      queryBytes: { default: 4_000, min: 1, max: 8_000, integer: true, description: 'query string length' },
    },
  });
  const { seconds, baseline, connections, maxRequests, queryBytes } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-log-flood', async (harness) => {
    const server = await harness.startServer();
    const pid = server.process.pid;
    const logFile = join(harness.scratch, 'server.log');
    const { token } = (await server.admin.call('POST', '/v1/admin-tokens', { name: 'bench' })) as { token: string };
    const adminAgent = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
    const attackAgent = new Agent({ keepAlive: true, maxSockets: connections, rejectUnauthorized: false });
    const admin = () =>
      httpsGetStatus(server.port, adminAgent, '/v1/entries/count', { authorization: `Bearer ${token}` });
    log(`node ${process.version}, ${server.database} database, server pid ${pid}`);

    const before = summarize(await callsUntil("the admin's GET /v1/entries/count", admin, sleep(baseline * 1000)));
    log(`admin alone:         ${formatLatency(before)}`);

    const logBefore = statSync(logFile).size;
    const cpuBefore = cpuSeconds(pid);
    const rssBefore = residentMemory(pid).rssKiB;
    const statuses = new Map<number, number>();
    let sent = 0;
    const deadline = performance.now() + seconds * 1000;
    const path = `/v1/entries?token=${'q'.repeat(queryBytes)}`;
    const attack = Promise.all(
      Array.from({ length: connections }, async () => {
        while (sent < maxRequests && performance.now() < deadline) {
          sent += 1;
          const status = await httpsGetStatus(server.port, attackAgent, path);
          countStatus(statuses, status);
        }
      }),
    ).then(() => undefined);
    const during = summarize(await callsUntil("the admin's GET /v1/entries/count", admin, attack));
    const cpu = cpuSeconds(pid) - cpuBefore;
    const rss = residentMemory(pid);
    // The summary of dropped lines is written when the interval ends; the growth counts what the attack wrote.
    const logGrowth = statSync(logFile).size - logBefore;
    const queryLogged = readFileSync(logFile, 'utf8').includes('q'.repeat(Math.min(queryBytes, 64)));
    adminAgent.destroy();
    attackAgent.destroy();

    const refused = statuses.get(401) ?? 0;
    log(`admin during attack: ${formatLatency(during)}`);
    log(
      `attacker: ${formatCount(sent)} requests in ${seconds} s on ${connections} connections, ` +
        `answers ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    log(
      `server: log +${formatCount(logGrowth)} bytes, CPU ${cpu.toFixed(2)} s, ` +
        `RSS ${formatMiB(rssBefore)} -> ${formatMiB(rss.rssKiB)} (peak ${formatMiB(rss.peakKiB)})`,
    );
    const failures = [
      ...(refused === sent ? [] : [`${sent - refused} attack requests were not refused with 401`]),
      ...(queryLogged ? ['the query string reached the log'] : []),
      ...(logGrowth < LOG_GROWTH_GOAL_BYTES ? [] : [`the log grew ${logGrowth} bytes (goal < 1 MiB)`]),
      ...(during.p99 < P99_GOAL_MS ? [] : [`the admin's p99 was ${during.p99.toFixed(1)} ms (goal < 100 ms)`]),
    ];
    log(failures.length === 0 ? 'goals met' : `goals missed: ${failures.join('; ')}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-log-flood',
          database: server.database,
          admin_before: latencyJson(before),
          admin_during: latencyJson(during),
          attack_requests: sent,
          attack_refused: refused,
          log_growth_bytes: logGrowth,
          query_logged: queryLogged,
          server_cpu_s: Math.round(cpu * 100) / 100,
          server_rss_kib: rss.rssKiB,
          server_rss_growth_kib: rss.rssKiB - rssBefore,
          goals_met: failures.length === 0,
        }),
      );
    }
    if (failures.length > 0) process.exitCode = 1;
  });
}

await main();
