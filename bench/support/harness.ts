/**
 * Starts the real, built `sigil-server run` and `sigil-agent run` for a benchmark, each with its own temp data dir
 * and socket and a free port, on the embedded database unless `DATABASE_URL` is set (then on a fresh database
 * created on that server for this run and dropped afterwards), and stops and removes everything on `close()`, on
 * Ctrl-C and on a crash.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { AdminApi } from './admin-api.js';
import { ManagedProcess } from './managed-process.js';

/** The repository root (this file runs as dist/bench/support/harness.js). */
export const ROOT = resolve(import.meta.dirname, '../../..');
export const TRUST_DOMAIN = 'example.org';
/** The node alias the bench agent's join token names: entries parented by it reach that agent. */
export const NODE_ALIAS_ID = `spiffe://${TRUST_DOMAIN}/bench/node`;

/** The binaries of the checkout at `root` (default this one; another, built, for a side-by-side comparison). */
const serverBin = (root: string = ROOT): string => join(root, 'bin/sigil-server.js');
const agentBin = (root: string = ROOT): string => join(root, 'bin/sigil-agent.js');
const START_TIMEOUT_MS = 120_000;

export interface ServerOptions {
  /** CPU list for `taskset -c` (e.g. `0`); absent: not pinned. */
  readonly cpus?: string;
  /** Options for node itself, e.g. `--cpu-prof`. */
  readonly nodeArgs?: readonly string[];
  /** More `sigil-server run` flags. */
  readonly args?: readonly string[];
  /** Name of the process, its data dir and admin socket in the scratch dir (default `server`): one per replica. */
  readonly name?: string;
  /** Another replica's database (`ServerProcess.databaseUrl`) instead of a new one. */
  readonly databaseUrl?: string;
  /** More environment variables (e.g. a test-only hook). */
  readonly env?: NodeJS.ProcessEnv;
  /** Another built checkout whose `bin/sigil-server.js` runs (default this one). */
  readonly root?: string;
  /** The embedded database even when `DATABASE_URL` is set. */
  readonly embedded?: boolean;
  /** How long to wait for its listening line (default 120 s). */
  readonly startTimeoutMs?: number;
}

export interface ServerProcess {
  readonly process: ManagedProcess;
  readonly port: number;
  readonly adminSocket: string;
  readonly admin: AdminApi;
  /** `embedded` or `postgresql`. */
  readonly database: string;
  /** Its PostgreSQL database, for another replica; undefined on the embedded database. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
}

export interface AgentProcess {
  readonly process: ManagedProcess;
  readonly socketPath: string;
  readonly agentId: string;
}

/** Environment for a child: ours without any Sigil setting, so only the flags we pass configure it. */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('SIGIL_') || key === 'DATABASE_URL' || key === 'SPIFFE_ENDPOINT_SOCKET') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

export class Harness {
  private readonly processes: ManagedProcess[] = [];
  private readonly cleanups: Array<() => Promise<void>> = [];
  private closing: Promise<void> | undefined;

  private constructor(readonly scratch: string) {}

  /** A scratch directory under the system temp dir, and handlers that clean up on Ctrl-C and on exit. */
  static async create(name: string): Promise<Harness> {
    if (!existsSync(join(ROOT, 'dist/apps/server/main.js')) || !existsSync(join(ROOT, 'dist/agent/main.js'))) {
      throw new Error('dist/apps/server and dist/agent are missing: run `npm run build` first');
    }
    const harness = new Harness(await mkdtemp(join(tmpdir(), `sigil-bench-${name}-`)));
    const onSignal = (signal: NodeJS.Signals): void => {
      process.stderr.write(`${signal}: stopping the benchmark's processes\n`);
      void harness.close().finally(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    // Last resort when the script dies without close(): no child may outlive it.
    process.once('exit', () => {
      for (const child of harness.processes) child.killNow();
    });
    return harness;
  }

  /**
   * Runs `bench` with a new harness and closes it afterwards; when `bench` fails, the last lines of every child's
   * output go to stderr first, and the error is rethrown.
   */
  static async run<T>(name: string, bench: (harness: Harness) => Promise<T>): Promise<T> {
    const harness = await Harness.create(name);
    try {
      return await bench(harness);
    } catch (error) {
      for (const child of harness.processes) {
        process.stderr.write(`--- last output of ${child.name} (pid ${child.pid}) ---\n${child.recentOutput()}\n`);
      }
      throw error;
    } finally {
      await harness.close();
    }
  }

  /** Starts any program as a child of this benchmark (stopped by `close()`), logging to `<scratch>/<name>.log`. */
  spawn(name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): ManagedProcess {
    const child = ManagedProcess.spawn({
      name,
      command,
      args,
      env: childEnv(env),
      cwd: ROOT,
      logPath: join(this.scratch, `${name}.log`),
    });
    this.processes.push(child);
    return child;
  }

  /** Runs `cleanup` when the harness closes, after its processes stopped. */
  onClose(cleanup: () => Promise<void>): void {
    this.cleanups.push(cleanup);
  }

  /** Starts `sigil-server run` on 127.0.0.1 with a free port and waits until it listens. */
  async startServer(options: ServerOptions = {}): Promise<ServerProcess> {
    const name = options.name ?? 'server';
    const adminSocket = join(this.scratch, name === 'server' ? 'admin.sock' : `${name}-admin.sock`);
    const dataDir = join(this.scratch, name);
    const args = [
      serverBin(options.root),
      'run',
      '--trust-domain',
      TRUST_DOMAIN,
      '--bind-address',
      '127.0.0.1',
      '--port',
      '0',
    ];
    args.push('--data-dir', dataDir, '--admin-socket', adminSocket);
    const adminUrl = options.embedded ? undefined : process.env['DATABASE_URL'];
    const databaseUrl = options.databaseUrl ?? (adminUrl ? await this.createDatabase(adminUrl) : undefined);
    if (databaseUrl) args.push('--database-url', databaseUrl);
    args.push(...(options.args ?? []));
    const command = [process.execPath, ...(options.nodeArgs ?? []), ...args];
    const server = options.cpus
      ? this.spawn(name, 'taskset', ['-c', options.cpus, ...command], options.env)
      : this.spawn(name, command[0]!, command.slice(1), options.env);
    const line = await server
      .waitForLine(
        /"msg":"sigil-server listening"/,
        options.startTimeoutMs ?? START_TIMEOUT_MS,
        'the listening log line',
      )
      .catch(async (error: unknown) => {
        await server.stop(); // not left running (and using the CPU) behind a caller that goes on
        throw error;
      });
    const { address } = JSON.parse(line) as { address: string };
    const port = Number(address.slice(address.lastIndexOf(':') + 1));
    const admin = new AdminApi(adminSocket);
    this.cleanups.push(async () => admin.close());
    return {
      process: server,
      port,
      adminSocket,
      admin,
      database: databaseUrl ? 'postgresql' : 'embedded',
      databaseUrl,
      dataDir,
    };
  }

  /**
   * Two replicas of `sigil-server run` on one fresh database of `DATABASE_URL`'s server, named `<prefix>a` and
   * `<prefix>b`: A creates the schema and the CA, then B starts on A's database with A's key-encryption key file (every
   * replica must share the KEK). `args` and `env` go to both.
   *
   * @throws Error when `DATABASE_URL` is not set: replicas share a PostgreSQL database, the embedded one is one process's
   */
  async startReplicaPair(
    prefix: string,
    args: readonly string[] = [],
    env: NodeJS.ProcessEnv = {},
  ): Promise<[ServerProcess, ServerProcess]> {
    if (!process.env['DATABASE_URL']) throw new Error('replicas share a PostgreSQL database: set DATABASE_URL');
    const a = await this.startServer({ name: `${prefix}a`, args, env });
    const b = await this.startServer({
      name: `${prefix}b`,
      databaseUrl: a.databaseUrl,
      args: [...args, '--kek-file', join(a.dataDir, 'kek.key')],
      env,
    });
    return [a, b];
  }

  /**
   * Starts `sigil-agent run` joined to `server` with a join token for {@link NODE_ALIAS_ID}, trusting the server's
   * bundle, and waits until its first sync arrived (before that the Workload API answers UNAVAILABLE). `nodeArgs`
   * are options for node itself, e.g. `--cpu-prof`; `args` more `sigil-agent run` flags; `x509pop` attests with that
   * certificate and key (PEM files) instead of a join token (the server must run with `--x509pop-ca-bundle`).
   * `name` (default `agent`) names its process, socket and data dir, one per agent (two agents in one harness).
   */
  async startAgent(
    server: ServerProcess,
    options: {
      nodeArgs?: readonly string[];
      args?: readonly string[];
      x509pop?: { certFile: string; keyFile: string };
      /** Another built checkout whose `bin/sigil-agent.js` runs (default this one). */
      root?: string;
      name?: string;
    } = {},
  ): Promise<AgentProcess> {
    const name = options.name ?? 'agent';
    const socketPath = join(this.scratch, `${name}.sock`);
    const bundleFile = join(this.scratch, 'bundle.pem');
    await writeFile(bundleFile, await server.admin.bundlePem());
    const args = [
      ...(options.nodeArgs ?? []),
      agentBin(options.root),
      'run',
      '--server-address',
      `127.0.0.1:${server.port}`,
      '--trust-bundle',
      bundleFile,
    ];
    args.push('--socket-path', socketPath, '--data-dir', join(this.scratch, name), ...(options.args ?? []));
    const { x509pop } = options;
    if (x509pop) args.push('--x509pop-cert', x509pop.certFile, '--x509pop-key', x509pop.keyFile);
    // The token goes through the environment, not argv, which any local user can read in ps.
    const env = x509pop ? {} : { SIGIL_AGENT_JOIN_TOKEN: await server.admin.joinToken(NODE_ALIAS_ID) };
    const agent = this.spawn(name, process.execPath, args, env);
    const running = agent.waitForLine(/"msg":"sigil-agent running"/, START_TIMEOUT_MS, 'the running log line');
    const synced = agent.waitForLine(/"msg":"entries synced, serving identities"/, START_TIMEOUT_MS, 'the first sync');
    const { agentId } = JSON.parse(await running) as { agentId: string };
    await synced;
    return { process: agent, socketPath, agentId };
  }

  /**
   * Stops every child (SIGTERM, then SIGKILL), drops the temp database, removes the scratch dir (kept, with the
   * children's logs, when `SIGIL_BENCH_KEEP=1`); safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const child of [...this.processes].reverse()) await child.stop();
      for (const cleanup of this.cleanups.reverse()) {
        await cleanup().catch((error: unknown) => {
          process.stderr.write(`cleanup failed: ${(error as Error).message}\n`);
        });
      }
      if (process.env['SIGIL_BENCH_KEEP'] === '1') {
        process.stderr.write(`SIGIL_BENCH_KEEP=1: logs and data kept in ${this.scratch}\n`);
      } else {
        await rm(this.scratch, { recursive: true, force: true });
      }
    })();
    return this.closing;
  }

  /** A fresh database on the PostgreSQL server of `adminUrl`, dropped on close. */
  private async createDatabase(adminUrl: string): Promise<string> {
    const name = `sigil_bench_${randomBytes(6).toString('hex')}`;
    const run = async (sql: string): Promise<void> => {
      const client = new pg.Client({ connectionString: adminUrl, application_name: 'sigil-bench' });
      await client.connect();
      try {
        await client.query(sql);
      } finally {
        await client.end();
      }
    };
    await run(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    this.cleanups.push(() => run(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`));
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  }
}

/** The uid of this process, whose `unix:uid` selector the bench entries carry. */
export function currentUid(): number {
  const uid = process.geteuid?.();
  if (uid === undefined) throw new Error('the benchmarks need a POSIX system with Unix uids (Linux)');
  return uid;
}
