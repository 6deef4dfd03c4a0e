/**
 * Issue 16, finding 7: connections to the server's TLS port. `npm run build && npx tsc -b bench && node
 * dist/bench/dos/tls-connections.bench.js`.
 *
 * The built sigil-server runs on 127.0.0.1 with its default connection limits (embedded database unless
 * `DATABASE_URL` is set). A legitimate admin holding a bearer token calls `GET /v1/entries/count` every 50 ms from
 * 127.0.0.1, each call on a new TLS connection as an agent makes them, first alone for `--baseline` seconds, then
 * beside three attacks in turn, each a child process from its own loopback address for `--seconds` seconds:
 * - idle: `--idle-connections` TCP connections from 127.0.0.2 that never send a byte;
 * - slowloris: `--slow-connections` TLS connections from 127.0.0.3 whose request headers trickle in, a byte every
 *   500 ms;
 * - handshake flood: `--flood-concurrency` clients from 127.0.0.4 completing TLS handshakes as fast as they can.
 * It prints the admin's latency before and during each attack, what each attacker got (refused at accept, cut by a
 * timeout, still open), and the server's connections held (its open file descriptors), CPU and RSS. Goals: every
 * admin call answered 200 with p99 under 100 ms; the server never holds more than the per-address cap of the idle
 * attacker's connections; no idle or slow connection lives past the 10 s handshake or headers timeout (+3 s); the
 * flood completes no more handshakes than the per-address rate allows (burst + rate x seconds); the server's RSS
 * grows under 100 MiB. `--per-address`, `--handshake-rate` and `--handshake-burst` set the server's limits (default:
 * the server's defaults), e.g. to show the rate refusing a flood that a busy machine cannot push past the default.
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { readdirSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { performance } from 'node:perf_hooks';
import { Harness } from '../support/harness.js';
import { parseOptions } from '../support/options.js';
import { cpuSeconds, formatMiB, residentMemory } from '../support/proc.js';
import { formatCount, formatLatency, latencyJson, summarize, type LatencySummary } from '../support/stats.js';

// The server's defaults (apps/server/src/config.ts).
const DEFAULT_PER_ADDRESS = 1024;
const DEFAULT_HANDSHAKE_RATE = 100;
const DEFAULT_HANDSHAKE_BURST = 1000;
/** The server's default handshake and headers timeouts (apps/server/src/config.ts), which this bench keeps. */
const TIMEOUT_SECONDS = 10;
/** Allowance past a timeout for the handshake itself, Node's check interval and a busy machine. */
const TIMEOUT_SLACK_SECONDS = 3;
const P99_GOAL_MS = 100;
const RSS_GROWTH_GOAL_KIB = 100 * 1024;
const SAMPLE_INTERVAL_MS = 50;

/** What an attacker reports on stdout when its time is up. */
interface AttackCounts {
  /** Connections (idle: TCP; slowloris, flood: TLS handshakes) attempted. */
  attempted: number;
  /** TLS handshakes completed (slowloris, flood). */
  handshakes: number;
  /**
   * Closed by the server within 5 s of being made, half the shortest default timeout: refused at accept (the flood:
   * every connection that did not complete its handshake).
   */
  refused: number;
  /** Closed by the server later: cut by a timeout; `answered408` of them got a 408 first. */
  cut: number;
  answered408: number;
  /** Still open when the time was up, and the age of the oldest of them in seconds. */
  open: number;
  oldestOpenSeconds: number;
}

/**
 * The attackers: one node program, no imports of ours, `mode port localAddress count seconds`. Connections closed
 * within 5 s of being made count as refused, later closes as cut.
 */
const ATTACKER = `
const net = require('net'), tls = require('tls');
const [mode, port, localAddress, count, seconds] = process.argv.slice(1);
const c = { attempted: 0, handshakes: 0, refused: 0, cut: 0, answered408: 0, open: 0, oldestOpenSeconds: 0 };
const opened = new Map();
let ending = false;
const track = (socket) => {
  const at = Date.now();
  c.attempted++;
  opened.set(socket, at);
  let first = '';
  socket.on('data', (d) => { if (first.length < 16) first += d.toString('latin1'); });
  socket.on('error', () => {});
  socket.on('close', () => {
    opened.delete(socket);
    if (ending) return;
    if (Date.now() - at < 5000) c.refused++;
    else { c.cut++; if (first.startsWith('HTTP/1.1 408')) c.answered408++; }
  });
};
const tcp = () => net.connect({ host: '127.0.0.1', port: Number(port), localAddress });
const tlsOver = (socket) => tls.connect({ socket, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
if (mode === 'idle') {
  let made = 0;
  const batch = () => { for (let i = 0; i < 100 && made < Number(count); i++, made++) { const s = tcp(); track(s); } if (made < Number(count)) setTimeout(batch, 10); };
  batch();
} else if (mode === 'slowloris') {
  let made = 0;
  const next = () => {
    if (made >= Number(count) || ending) return;
    made++;
    const raw = tcp(); raw.on('error', () => {});
    const s = tlsOver(raw);
    track(s);
    s.once('secureConnect', () => {
      c.handshakes++;
      s.write('GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: ');
      const t = setInterval(() => { if (s.writable) s.write('a'); else clearInterval(t); }, 500);
      s.once('close', () => clearInterval(t));
      next();
    });
    s.once('close', next);
  };
  for (let i = 0; i < 20; i++) next();
} else if (mode === 'flood') {
  const loop = () => {
    if (ending) return;
    const raw = tcp(); raw.on('error', () => {});
    const s = tlsOver(raw);
    c.attempted++;
    s.on('error', () => {});
    s.once('secureConnect', () => { c.handshakes++; s.destroy(); });
    s.once('close', () => setImmediate(loop));
  };
  for (let i = 0; i < Number(count); i++) loop();
}
setTimeout(() => {
  ending = true;
  c.open = opened.size;
  for (const at of opened.values()) c.oldestOpenSeconds = Math.max(c.oldestOpenSeconds, (Date.now() - at) / 1000);
  if (mode === 'flood') c.refused = c.attempted - c.handshakes;
  process.stdout.write(JSON.stringify(c) + '\\n', () => process.exit(0));
}, Number(seconds) * 1000);
`;

/** One GET on a new TLS connection from 127.0.0.1; resolves with the status once the answer is read. */
function get(port: number, agent: Agent, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The admin's calls, 50 ms apart, until `until` resolves; latencies in milliseconds and failed calls. */
async function legitimateCaller(
  call: () => Promise<number>,
  until: Promise<unknown>,
): Promise<{ latencies: number[]; failures: string[] }> {
  let done = false;
  void until.then(() => (done = true));
  const latencies: number[] = [];
  const failures: string[] = [];
  while (!done) {
    const start = performance.now();
    try {
      const status = await call();
      if (status === 200) latencies.push(performance.now() - start);
      else failures.push(`answered ${status}`);
    } catch (error) {
      failures.push((error as Error).message);
    }
    await sleep(SAMPLE_INTERVAL_MS);
  }
  return { latencies, failures };
}

/** Open file descriptors of `pid`: its sockets, so the connections it holds (less a constant). */
const openFiles = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/**
 * Samples `pid` every 100 ms until stopped; `stop()` returns the largest resident memory (KiB) and the most file
 * descriptors open beyond those open at the start (the connections the server held).
 */
function sampleServer(pid: number): { stop(): { rssMaxKiB: number; heldMax: number } } {
  const filesAtStart = openFiles(pid);
  let rssMaxKiB = residentMemory(pid).rssKiB;
  let heldMax = 0;
  const timer = setInterval(() => {
    try {
      rssMaxKiB = Math.max(rssMaxKiB, residentMemory(pid).rssKiB);
      heldMax = Math.max(heldMax, openFiles(pid) - filesAtStart);
    } catch {
      clearInterval(timer);
    }
  }, 100);
  return {
    stop() {
      clearInterval(timer);
      return { rssMaxKiB, heldMax };
    },
  };
}

interface PhaseResult {
  readonly name: string;
  readonly admin: LatencySummary;
  readonly adminFailures: string[];
  readonly attack: AttackCounts;
  readonly cpuSeconds: number;
  readonly rssMaxKiB: number;
  /** Most connections the server held beyond those at the start of the phase (its open file descriptors). */
  readonly heldMax: number;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2), {
    script: 'dos/tls-connections.bench.js',
    numbers: {
      seconds: {
        default: 13,
        min: 2,
        max: 60,
        integer: false,
        description: 'seconds of each attack (the default handshake and headers timeouts are 10 s)',
      },
      baseline: { default: 3, min: 1, max: 30, integer: false, description: 'seconds of the admin alone' },
      idleConnections: { default: 3000, min: 1, max: 15_000, integer: true, description: 'idle TCP connections' },
      slowConnections: { default: 300, min: 1, max: 5000, integer: true, description: 'slowloris connections' },
      floodConcurrency: { default: 16, min: 1, max: 256, integer: true, description: 'handshake flood clients' },
      perAddress: {
        default: DEFAULT_PER_ADDRESS,
        min: 1,
        max: 100_000,
        integer: true,
        description: "the server's --max-connections-per-address (its default)",
      },
      handshakeRate: {
        default: DEFAULT_HANDSHAKE_RATE,
        min: 1,
        max: 100_000,
        integer: true,
        description: "the server's --tls-handshake-rate (its default)",
      },
      handshakeBurst: {
        default: DEFAULT_HANDSHAKE_BURST,
        min: 1,
        max: 100_000,
        integer: true,
        description: "the server's --tls-handshake-burst (its default)",
      },
    },
  });
  const { seconds, baseline, idleConnections, slowConnections, floodConcurrency } = options.numbers;
  const { perAddress, handshakeRate, handshakeBurst } = options.numbers;
  const log = (line: string): void => console.log(line);
  await Harness.run('dos-tls-connections', async (harness) => {
    // Only limits that differ from the server's defaults are passed, so the bench also runs against a build from
    // before these limits existed (the "before" figures in the bench README).
    const args = (
      [
        ['--max-connections-per-address', perAddress, DEFAULT_PER_ADDRESS],
        ['--tls-handshake-rate', handshakeRate, DEFAULT_HANDSHAKE_RATE],
        ['--tls-handshake-burst', handshakeBurst, DEFAULT_HANDSHAKE_BURST],
      ] as const
    ).flatMap(([flag, value, fallback]) => (value === fallback ? [] : [flag, String(value)]));
    const server = await harness.startServer({ args });
    const pid = server.process.pid;
    const { token } = (await server.admin.call('POST', '/v1/admin-tokens', { name: 'bench' })) as { token: string };
    // A new connection per call, as the agent makes them: each call also pays (and tests) a TLS handshake.
    const adminAgent = new Agent({ keepAlive: false, rejectUnauthorized: false });
    const admin = () => get(server.port, adminAgent, '/v1/entries/count', token);
    log(`node ${process.version}, ${server.database} database, server pid ${pid}`);

    const rssStart = residentMemory(pid).rssKiB;
    const alone = await legitimateCaller(admin, sleep(baseline * 1000));
    const before = summarize(alone.latencies);
    log(
      `admin alone:            ${formatLatency(before)}${alone.failures.length ? `, FAILED ${alone.failures.length}` : ''}`,
    );

    // Growth is measured from here: the server's RSS falls for a while after its start.
    const rssBefore = residentMemory(pid).rssKiB;
    const phases: PhaseResult[] = [];
    const attacks: [string, string, string, number][] = [
      ['idle TCP', 'idle', '127.0.0.2', idleConnections],
      ['slowloris', 'slowloris', '127.0.0.3', slowConnections],
      ['handshake flood', 'flood', '127.0.0.4', floodConcurrency],
    ];
    for (const [name, mode, address, count] of attacks) {
      const cpuBefore = cpuSeconds(pid);
      const sampler = sampleServer(pid);
      const attacker = spawn(process.execPath, [
        '-e',
        ATTACKER,
        mode,
        String(server.port),
        address,
        String(count),
        String(seconds),
      ]);
      let output = '';
      attacker.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      attacker.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
      const exited = new Promise<number | null>((resolve) => attacker.once('exit', (code) => resolve(code)));
      const during = await legitimateCaller(admin, exited);
      const code = await exited;
      if (code !== 0) throw new Error(`the ${name} attacker exited with ${code}: ${output}`);
      const phase: PhaseResult = {
        name,
        admin: summarize(during.latencies),
        adminFailures: during.failures,
        attack: JSON.parse(output) as AttackCounts,
        cpuSeconds: cpuSeconds(pid) - cpuBefore,
        ...sampler.stop(),
      };
      phases.push(phase);
      const a = phase.attack;
      log(`--- ${name} from ${address}, ${seconds} s`);
      log(
        `admin during attack:    ${formatLatency(phase.admin)}${during.failures.length ? `, FAILED ${during.failures.length}: ${during.failures[0]}` : ''}`,
      );
      log(
        `attacker: ${formatCount(a.attempted)} connections, ${formatCount(a.handshakes)} TLS handshakes, ` +
          `${formatCount(a.refused)} refused at accept, ${formatCount(a.cut)} cut by a timeout ` +
          `(${formatCount(a.answered408)} answered 408), ${formatCount(a.open)} still open ` +
          `(oldest ${a.oldestOpenSeconds.toFixed(1)} s)`,
      );
      log(
        `server: held at most ${formatCount(phase.heldMax)} more connections, CPU ${phase.cpuSeconds.toFixed(2)} s ` +
          `(${((100 * phase.cpuSeconds) / seconds).toFixed(0)} % of a core), RSS max ${formatMiB(phase.rssMaxKiB)}`,
      );
    }
    adminAgent.destroy();
    const rssEnd = residentMemory(pid);
    log(
      `server RSS: ${formatMiB(rssStart)} at start, ${formatMiB(rssEnd.rssKiB)} now, peak ${formatMiB(rssEnd.peakKiB)}`,
    );

    const [idle, slow, flood] = phases as [PhaseResult, PhaseResult, PhaseResult];
    const floodAllowed = handshakeBurst + handshakeRate * seconds * 1.1 + 50;
    const cutBy = TIMEOUT_SECONDS + TIMEOUT_SLACK_SECONDS;
    const rssGrowth = Math.max(...phases.map((p) => p.rssMaxKiB)) - rssBefore;
    const goals: [string, boolean][] = [
      [
        'every admin call answered 200',
        [alone, ...phases].every((p) => ('failures' in p ? p.failures : p.adminFailures).length === 0),
      ],
      ...phases.map((p): [string, boolean] => [
        `admin p99 < ${P99_GOAL_MS} ms during ${p.name} (${p.admin.p99.toFixed(1)} ms)`,
        p.admin.p99 < P99_GOAL_MS,
      ]),
      [
        `idle: the server held <= ${perAddress} connections of one address (+8 for the admin's; ${idle.heldMax})`,
        idle.heldMax <= perAddress + 8,
      ],
      [
        `idle: no connection open longer than ${cutBy} s (oldest ${idle.attack.oldestOpenSeconds.toFixed(1)} s)`,
        idle.attack.oldestOpenSeconds <= cutBy,
      ],
      [
        `slowloris: no connection open longer than ${cutBy} s (oldest ${slow.attack.oldestOpenSeconds.toFixed(1)} s)`,
        slow.attack.oldestOpenSeconds <= cutBy,
      ],
      [
        `flood: handshakes within the per-address rate (${flood.attack.handshakes} <= ${Math.round(floodAllowed)})`,
        flood.attack.handshakes <= floodAllowed,
      ],
      [`server RSS growth < 100 MiB (${formatMiB(rssGrowth)})`, rssGrowth < RSS_GROWTH_GOAL_KIB],
    ];
    for (const [goal, met] of goals) log(`${met ? 'PASS' : 'FAIL'} ${goal}`);
    const failed = goals.filter(([, met]) => !met).length;
    log(failed === 0 ? 'goals met' : `goals missed: ${failed}`);
    if (options.json) {
      console.log(
        JSON.stringify({
          bench: 'dos-tls-connections',
          database: server.database,
          seconds,
          admin_before: latencyJson(before),
          phases: phases.map((p) => ({
            name: p.name,
            admin: latencyJson(p.admin),
            admin_failures: p.adminFailures.length,
            attack: p.attack,
            server_cpu_s: Math.round(p.cpuSeconds * 100) / 100,
            server_rss_max_kib: p.rssMaxKiB,
            server_held_max: p.heldMax,
          })),
          server_rss_start_kib: rssStart,
          server_rss_before_kib: rssBefore,
          server_rss_end_kib: rssEnd.rssKiB,
          goals_met: failed === 0,
        }),
      );
    }
    if (failed > 0) process.exitCode = 1;
  });
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
