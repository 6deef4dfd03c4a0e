/**
 * Test helper for end-to-end tests: the REAL built `sigil-server` and `sigil-agent` processes (`bin/*.js`, which need
 * `npm run build` first), started as children with temporary data dirs, sockets and ports. The server uses this
 * run's PostgreSQL when `DATABASE_URL` is set, else its embedded database, copied from the run's migrated template
 * so that it starts in well under a second.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { inject } from 'vitest';
import { prepareEmbeddedDataDir, type TestDatabase, useTestDatabase } from './database.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const SERVER_BIN = join(ROOT, 'bin/sigil-server.js');
export const AGENT_BIN = join(ROOT, 'bin/sigil-agent.js');

/** Fails fast with a clear message when the build output the binaries load is missing. */
export function requireBuild(): void {
  for (const file of ['dist/apps/server/main.js', 'dist/agent/main.js']) {
    if (!existsSync(join(ROOT, file))) throw new Error(`${file} is missing: run \`npm run build\` first`);
  }
}

/** A child process with its combined output. */
export class SigilProcess {
  private text = '';
  private out = '';
  readonly exited: Promise<number | null>;
  /** Resolves once the process has exited and its output pipes are drained (all its output is read). */
  readonly closed: Promise<void>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (chunk: Buffer) => {
      this.text += chunk.toString('utf8');
      this.out += chunk.toString('utf8');
    });
    child.stderr?.on('data', (chunk: Buffer) => (this.text += chunk.toString('utf8')));
    this.exited = new Promise((done) => child.once('exit', (code) => done(code)));
    this.closed = new Promise((done) => child.once('close', () => done()));
  }

  /** Everything the process wrote so far (stdout and stderr). */
  output(): string {
    return this.text;
  }

  /** Everything the process wrote so far on stdout alone (no stderr chunk in the middle of a line). */
  stdout(): string {
    return this.out;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the output matches `pattern` (searching from `from`), failing if the process exits first. */
  async waitFor(pattern: RegExp, options: { timeoutMs?: number; from?: number } = {}): Promise<RegExpMatchArray> {
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    for (;;) {
      const match = this.text.slice(options.from ?? 0).match(pattern);
      if (match !== null) return match;
      if (!this.running || Date.now() > deadline) {
        throw new Error(`${pattern} not seen (exit ${this.child.exitCode}):\n${this.text}`);
      }
      await new Promise((done) => setTimeout(done, 25));
    }
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }
}

function spawnNode(args: readonly string[], env: NodeJS.ProcessEnv = {}): SigilProcess {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: '', SPIFFE_ENDPOINT_SOCKET: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new SigilProcess(child);
}

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a built binary to completion, with `input` on its stdin (else an empty stdin). */
export function runBin(
  bin: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  input = '',
): Promise<CliResult> {
  return new Promise((done) => {
    const child = execFile(
      process.execPath,
      [bin, ...args],
      { cwd: ROOT, env: { ...process.env, DATABASE_URL: '', SPIFFE_ENDPOINT_SOCKET: '', ...env }, timeout: 60_000 },
      (error, stdout, stderr) =>
        done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input);
  });
}

/** A running `sigil-server` with its admin socket. */
export interface ServerProcess {
  readonly process: SigilProcess;
  readonly port: number;
  readonly trustDomain: string;
  readonly adminSocket: string;
  readonly dataDir: string;
  /** The PostgreSQL database it runs on; undefined on the embedded database (in `<dataDir>/db`). */
  readonly databaseUrl: string | undefined;
  /** Runs an admin subcommand (`entry create …`) against this server, with `input` on its stdin. */
  cli(args: readonly string[], input?: string): Promise<CliResult>;
  /** Like `cli` with `--output json`, parsed; throws with the output when the command fails. */
  json<T>(args: readonly string[]): Promise<T>;
  /** Writes `bundle show --format pem` to `file`. */
  writeBundle(file: string): Promise<void>;
  /** A new join token (optionally with an alias SPIFFE ID). */
  joinToken(alias?: string): Promise<string>;
  /** Starts the same server again on the same port and data (after `process.stop()`). */
  restart(): Promise<ServerProcess>;
}

export interface StartServerOptions {
  /** Directory for the data dir and admin socket. */
  readonly dir: string;
  readonly trustDomain?: string;
  /** More `run` flags, e.g. `['--x509-svid-ttl', '10']`. */
  readonly flags?: readonly string[];
  /** Reuse this port (for a restart). */
  readonly port?: number;
  /**
   * The database, whatever this run tests: `embedded` (in the data dir, copied from the run's template unless it
   * exists) or a PostgreSQL URL; absent: this run's (PostgreSQL when `DATABASE_URL` is set, else embedded).
   */
  readonly database?: 'embedded' | { readonly url: string };
  /** More environment variables for the process (e.g. a test-only hook). */
  readonly env?: NodeJS.ProcessEnv;
  /** Node options before the script (e.g. a V8 flag). */
  readonly nodeArgs?: readonly string[];
}

let database: TestDatabase | undefined;

/** This file's PostgreSQL database when the run has one (shared by every server the file starts, one at a time). */
async function databaseUrl(): Promise<string | undefined> {
  if (!inject('sigilTestRun').databaseUrl) return undefined;
  database ??= await useTestDatabase({ poolSize: 1 });
  return database.url;
}

/** Drops this file's database, if one was made; call in `afterAll`. */
export async function closeTestDatabase(): Promise<void> {
  await database?.close();
  database = undefined;
}

/** Starts `sigil-server run` and waits until it listens. */
export async function startServerProcess(options: StartServerOptions): Promise<ServerProcess> {
  const trustDomain = options.trustDomain ?? 'example.org';
  const dataDir = join(options.dir, 'server');
  const adminSocket = join(options.dir, 'admin.sock');
  const url =
    options.database === undefined
      ? await databaseUrl()
      : options.database === 'embedded'
        ? undefined
        : options.database.url;
  if (url === undefined && !existsSync(join(dataDir, 'db'))) await prepareEmbeddedDataDir(dataDir);
  const args = [...(options.nodeArgs ?? []), SERVER_BIN, 'run', '--trust-domain', trustDomain];
  args.push(
    '--bind-address',
    '127.0.0.1',
    '--port',
    String(options.port ?? 0),
    '--data-dir',
    dataDir,
    '--admin-socket',
    adminSocket,
  );
  if (url !== undefined) args.push('--database-url', url);
  args.push(...(options.flags ?? []));
  const child = spawnNode(args, { SIGIL_LOG_LEVEL: 'info', ...options.env });
  const [, port] = (await child.waitFor(/"address":"127\.0\.0\.1:(\d+)".*"msg":"sigil-server listening"/, {
    timeoutMs: 90_000,
  })) as [string, string];
  const admin = ['--admin-socket', adminSocket];
  const cli = (args: readonly string[], input?: string): Promise<CliResult> =>
    runBin(SERVER_BIN, [...args, ...admin], {}, input);
  const json = async <T>(args: readonly string[]): Promise<T> => {
    const result = await cli([...args, '--output', 'json']);
    if (result.code !== 0) throw new Error(`sigil-server ${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
    return JSON.parse(result.stdout) as T;
  };
  const server: ServerProcess = {
    process: child,
    port: Number(port),
    trustDomain,
    adminSocket,
    dataDir,
    databaseUrl: url,
    cli,
    json,
    writeBundle: async (file) => {
      const result = await cli(['bundle', 'show', '--format', 'pem']);
      if (result.code !== 0) throw new Error(`bundle show failed: ${result.stderr}`);
      await writeFile(file, result.stdout);
    },
    joinToken: async (alias) =>
      (await json<{ token: string }>(['token', 'generate', ...(alias ? ['--spiffe-id', alias] : [])])).token,
    restart: () => startServerProcess({ ...options, port: Number(port) }),
  };
  return server;
}

export interface StartAgentOptions {
  readonly servers: readonly number[];
  readonly socketPath: string;
  readonly dataDir: string;
  /** `--trust-bundle`; leave it out to pass `--insecure-bootstrap` (or another trust flag) in `flags`. */
  readonly trustBundle?: string;
  readonly joinToken?: string;
  readonly flags?: readonly string[];
  /** More environment for the agent (e.g. libfaketime's, to move its clock). */
  readonly env?: NodeJS.ProcessEnv;
}

/** Starts `sigil-agent run`; `ready` waits for its first sync. */
export function startAgentProcess(options: StartAgentOptions): SigilProcess {
  const args = [AGENT_BIN, 'run', '--server-address', options.servers.map((port) => `127.0.0.1:${port}`).join(',')];
  if (options.trustBundle !== undefined) args.push('--trust-bundle', options.trustBundle);
  args.push('--socket-path', options.socketPath, '--data-dir', options.dataDir);
  if (options.joinToken !== undefined) args.push('--join-token', options.joinToken);
  args.push(...(options.flags ?? []));
  return spawnNode(args, options.env);
}

/** Waits until the agent has synced its entries and serves identities. */
export function agentReady(agent: SigilProcess, from = 0): Promise<RegExpMatchArray> {
  return agent.waitFor(/"msg":"entries synced, serving identities"/, { from });
}
