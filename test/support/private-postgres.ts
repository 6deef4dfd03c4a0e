/**
 * A private PostgreSQL server for one test file: its own cluster (initdb into a temporary directory), its own free
 * port on 127.0.0.1 only, password authentication with a random password, no Unix socket outside its directory. A
 * test may crash it (`stop()`, `pg_ctl stop -m immediate`) and start it again, so outages never touch the shared
 * database at 127.0.0.1:5432.
 *
 * PostgreSQL refuses to run as root: when the test runs as root, every PostgreSQL binary runs as the `postgres` user
 * (else `nobody`) through `setpriv`, and the cluster directory is given to that user.
 *
 * ```ts
 * const it_ = it.skipIf(PRIVATE_POSTGRES_MISSING !== undefined);
 * let pg: PrivatePostgres;
 * beforeAll(async () => (pg = await startPrivatePostgres()));
 * afterAll(() => pg?.close());
 * it_(`survives an outage${skipReason()}`, async () => { await pg.stop(); ...; await pg.start(); });
 * ```
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { appendFile, chmod, chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/** Where the PostgreSQL 15 binaries are (Debian's layout, here and on CI). */
export const POSTGRES_BIN_DIR = '/usr/lib/postgresql/15/bin';

/**
 * Why a private PostgreSQL cannot run here, or undefined when it can: for `it.skipIf(PRIVATE_POSTGRES_MISSING !==
 * undefined)` and the test's title.
 */
export const PRIVATE_POSTGRES_MISSING: string | undefined = ['initdb', 'pg_ctl', 'postgres'].every((bin) =>
  existsSync(join(POSTGRES_BIN_DIR, bin)),
)
  ? undefined
  : `PostgreSQL 15 binaries not found in ${POSTGRES_BIN_DIR}`;

/** ` (skipped: <reason>)` when the private PostgreSQL cannot run here, else '' (to end a test's title with). */
export function privatePostgresSkipTitle(): string {
  return PRIVATE_POSTGRES_MISSING === undefined ? '' : ` (skipped: ${PRIVATE_POSTGRES_MISSING})`;
}

/** A running (or crashed, after {@link stop}) private PostgreSQL server. */
export interface PrivatePostgres {
  /** `postgres://sigil:<password>@127.0.0.1:<port>/sigil`: the database `sigil`, owned by the user `sigil`. */
  readonly url: string;
  readonly port: number;
  /** The cluster directory (its `log` file holds the server's log). */
  readonly dataDir: string;
  /** Whether the server is up (as far as this handle knows: started and not stopped since). */
  readonly running: boolean;
  /**
   * Stops the server: `immediate` (default) is a crash, every connection cut without a checkpoint (SIGQUIT), and
   * the next start recovers from the WAL; `fast` is a clean shutdown.
   */
  stop(mode?: 'immediate' | 'fast'): Promise<void>;
  /** Starts the server again on the same port and data, and waits until it accepts connections. */
  start(): Promise<void>;
  /** The server's log so far (for a failing test's message). */
  log(): Promise<string>;
  /** Stops the server (immediate) and deletes its directory; safe to call twice and after a failed start. */
  close(): Promise<void>;
}

export interface StartPrivatePostgresOptions {
  /** `max_connections` (default 50). */
  readonly maxConnections?: number;
}

const USER = 'sigil';
const DATABASE = 'sigil';
/** Whole-command time limit for initdb and pg_ctl. */
const COMMAND_TIMEOUT_MS = 120_000;
/** Tries with another port when the one picked was taken meanwhile. */
const PORT_ATTEMPTS = 3;

/** Clusters still on disk, removed (their postmaster killed) if the process exits without `close()`. */
const live = new Set<string>();
let exitHookInstalled = false;

/**
 * Creates a cluster in a new temporary directory, starts it on a free port of 127.0.0.1 and creates the database
 * `sigil` (empty: a Sigil server migrates it when it starts). Removes everything again when any step fails.
 *
 * @throws Error naming the failed step with PostgreSQL's output, or {@link PRIVATE_POSTGRES_MISSING}.
 */
export async function startPrivatePostgres(options: StartPrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  if (PRIVATE_POSTGRES_MISSING !== undefined) throw new Error(PRIVATE_POSTGRES_MISSING);
  const runAs = await postgresUser();
  const root = await mkdtemp(join(tmpdir(), 'sigil-private-pg-'));
  installExitHook();
  live.add(root);
  const dataDir = join(root, 'data');
  const logFile = join(root, 'log');
  const password = randomBytes(18).toString('base64url');
  let running = false;
  let port = 0;
  let url = '';
  let closed: Promise<void> | undefined;

  const pgCtl = (...args: string[]) => run(runAs, 'pg_ctl', ['-D', dataDir, ...args]);
  const handle: PrivatePostgres = {
    get url() {
      return url;
    },
    get port() {
      return port;
    },
    dataDir,
    get running() {
      return running;
    },
    stop: async (mode = 'immediate') => {
      await pgCtl('stop', '-m', mode, '-w', '-t', '60');
      running = false;
    },
    start: async () => {
      await pgCtl('start', '-w', '-t', '60', '-l', logFile);
      running = true;
    },
    log: () => readFile(logFile, 'utf8').catch(() => ''),
    close: () => {
      closed ??= (async () => {
        try {
          if (existsSync(join(dataDir, 'postmaster.pid'))) {
            await pgCtl('stop', '-m', 'immediate', '-w', '-t', '60').catch(() => killPostmaster(dataDir));
          }
        } finally {
          running = false;
          live.delete(root);
          await rm(root, { recursive: true, force: true });
        }
      })();
      return closed;
    },
  };

  try {
    if (runAs) await chown(root, runAs.uid, runAs.gid);
    await chmod(root, 0o700);
    const passwordFile = join(root, 'password');
    await writeFile(passwordFile, password, { mode: 0o600 });
    if (runAs) await chown(passwordFile, runAs.uid, runAs.gid);
    await run(runAs, 'initdb', [
      '-D',
      dataDir,
      '-U',
      USER,
      '--pwfile',
      passwordFile,
      '--auth',
      'scram-sha-256',
      '--encoding',
      'UTF8',
      '--no-locale',
      '--no-sync',
    ]);
    await rm(passwordFile);
    let lastError: unknown;
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      port = await freePort();
      await appendFile(
        join(dataDir, 'postgresql.conf'),
        [
          '',
          `port = ${port}`,
          "listen_addresses = '127.0.0.1'",
          // Its socket stays in its own directory (the default, /var/run/postgresql, may not be writable).
          `unix_socket_directories = '${root}'`,
          `max_connections = ${options.maxConnections ?? 50}`,
          // A test cluster: durability across an OS crash is not what is tested (a PostgreSQL crash still recovers
          // from its WAL, which is written to the page cache before a commit returns).
          'fsync = off',
          'full_page_writes = off',
          "shared_buffers = '32MB'",
          '',
        ].join('\n'),
      );
      try {
        await handle.start();
        break;
      } catch (error) {
        lastError = error;
        // "could not bind": another process took the port between freePort and start; any other error is final.
        if (!/could not bind|address already in use/i.test(await handle.log())) throw error;
      }
    }
    if (!running) throw lastError;
    const adminUrl = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      await client.query(`CREATE DATABASE ${DATABASE}`);
    } finally {
      await client.end();
    }
    url = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`;
    return handle;
  } catch (error) {
    const log = await handle.log();
    await handle.close();
    throw new Error(`private PostgreSQL did not start: ${(error as Error).message}${log ? `\nlog:\n${log}` : ''}`, {
      cause: error,
    });
  }
}

interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

/** The user PostgreSQL runs as: ourselves unless we are root (then `postgres`, else `nobody`). */
async function postgresUser(): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8');
  for (const name of ['postgres', 'nobody']) {
    const fields = passwd
      .split('\n')
      .map((line) => line.split(':'))
      .find((each) => each[0] === name);
    if (fields) return { uid: Number(fields[2]), gid: Number(fields[3]) };
  }
  throw new Error('running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as');
}

/** Runs a PostgreSQL binary (as `runAs` through setpriv when given), failing with its output. */
function run(runAs: RunAs | undefined, bin: string, args: readonly string[]): Promise<void> {
  const path = join(POSTGRES_BIN_DIR, bin);
  const [file, argv] = runAs
    ? ['setpriv', [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, '--clear-groups', '--', path, ...args]]
    : [path, [...args]];
  return new Promise((done, fail) => {
    execFile(
      file,
      argv,
      { timeout: COMMAND_TIMEOUT_MS, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C' } },
      (error, stdout, stderr) => {
        if (error) fail(new Error(`${bin} ${args.join(' ')}: ${error.message}\n${stdout}${stderr}`));
        else done();
      },
    );
  });
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? done(address.port) : fail(new Error('no port'))));
    });
  });
}

/** SIGQUIT (PostgreSQL's immediate shutdown) to the cluster's postmaster, if its pid file names one. */
function killPostmaster(dataDir: string): void {
  try {
    const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGQUIT');
  } catch {
    // No pid file or no such process: nothing runs.
  }
}

/** On exit without `close()` (a crashed test worker), the clusters' servers are stopped and their files removed. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const root of live) {
      killPostmaster(join(root, 'data'));
      rmSync(root, { recursive: true, force: true });
    }
  });
}
