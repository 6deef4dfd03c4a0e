import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { FileLock, FileLockHeldError } from '@sigil/runtime/file-lock';
import { applyDefaultV8Flags, choosesV8Flag, defaultV8Flags, type DefaultV8Flag } from '@sigil/runtime/v8-flags';

/** Connections the embedded socket server accepts; pools against it must stay at or below this. */
export const EMBEDDED_MAX_CONNECTIONS = 10;

/** Logged at every start on the embedded database (issue 4: strace shows PGlite never calls fsync). */
export const EMBEDDED_FSYNC_WARNING =
  'the embedded database (PGlite) never calls fsync: a crash or power loss of the host can lose or corrupt recent ' +
  'writes; it is meant for a first start and single-host evaluation, use PostgreSQL (--database-url) in production';

/**
 * PostgreSQL's `shared_buffers` on the embedded database. PGlite keeps PostgreSQL's default, 128MB, and the whole pool
 * was resident in the server process from the start (inside the WebAssembly memory, which never shrinks): 297 MiB
 * RSS for PGlite alone on a reopened data directory, 159 MiB with 16MB (bench/README.md, issue 13).
 * A Sigil registry of thousands of entries is a few MiB of tables and indexes, and the pages PostgreSQL evicts stay
 * in the host's page cache behind PGlite's file system.
 */
export const EMBEDDED_SHARED_BUFFERS = '16MB';

/** PGlite's own start parameters, then Sigil's settings (a later `-c` wins). */
export const EMBEDDED_START_PARAMS: readonly string[] = [
  ...PGlite.defaultStartParams,
  '-c',
  `shared_buffers=${EMBEDDED_SHARED_BUFFERS}`,
];

/**
 * A node option by which the operator chose how WebAssembly tiers up: whole, in any spelling V8 takes (`--no-`,
 * `--no_`, `--no`); `--no-liftoff` (optimized code only), a budget given with `=`. Not `--liftoff` (V8's default) nor
 * `--wasm-tier-up-filter` and the like.
 */
const WASM_TIERING =
  /^--?(no[-_]?)?(wasm[-_]dynamic[-_]tiering|wasm[-_]tier[-_]up|liftoff[-_]only)(=.*)?$|^--?no[-_]?liftoff$|^--?wasm[-_]tiering[-_]budget=/;

/**
 * V8 flags for PGlite's WebAssembly: its code stays as V8's baseline compiler (Liftoff) makes it, never tiered up to
 * the optimizing compiler. Node 24's V8 optimizes one of PostgreSQL's functions (104,937 bytes of WebAssembly) with
 * a 604 MB compile zone for 2.4 s (its loop unrolling phase; Node 20's takes 8 MB and 0.17 s): the server's peak RSS
 * went to ~850 MiB and initdb's child to ~1.1 GiB. Without the tier-up: peak ~270 MiB and ~550 MiB, for as much
 * embedded throughput and less CPU (no compile work; bench/README.md, "The embedded database and the agent on Node
 * 24"). Set at run time, before PGlite compiles its module (measured to take effect on Node 20 and 24, where
 * `--liftoff-only` set at run time does not on Node 24), unless the operator chose how WebAssembly tiers up (a node
 * option, see WASM_TIERING). They apply to the whole process, whose only WebAssembly is PGlite's (the server makes no
 * fetch calls, undici's parser).
 */
export const EMBEDDED_WASM_FLAGS: readonly DefaultV8Flag[] = [
  { flag: '--no-wasm-dynamic-tiering', chosenBy: WASM_TIERING },
  { flag: '--no-wasm-tier-up', chosenBy: WASM_TIERING },
];

/** Longest a first start's initdb may take (it takes seconds; tens of seconds on a loaded host). */
const INITDB_TIMEOUT_MS = 10 * 60_000;

/**
 * Run by a child node process on a first start: PGlite's initdb and first open on the data directory, then a clean
 * close. Arguments: the URL of the PGlite module, the data directory, the start parameters as JSON.
 */
const INITDB_SCRIPT = [
  // Its stdin is a pipe from the server: end of file means the server died, and with it the data dir's lock, so the
  // child stops rather than write on beside the next server.
  'process.stdin.on("end", () => process.exit(70)).resume();',
  'const [moduleUrl, dataDir, params] = process.argv.slice(1);',
  'const { PGlite } = await import(moduleUrl);',
  'const db = await PGlite.create({ dataDir, startParams: JSON.parse(params) });',
  'await db.close();',
  'process.exit(0);',
].join('\n');

// libpq and pg look for the socket file `.s.PGSQL.<port>` in the directory named by `host`.
const SOCKET_FILE = '.s.PGSQL.5432';

/** A running embedded PostgreSQL: PGlite on a persistent data directory, served on a private Unix socket. */
export interface EmbeddedPostgres {
  /** `pg` connection URL of the Unix socket (user and database `postgres`). */
  readonly url: string;
  /** The PostgreSQL data directory. */
  readonly dataDir: string;
  /** Connections the socket server accepts; a pool's `max` must not exceed it (extra ones are reset). */
  readonly maxConnections: number;
  /** Closes the socket server and PGlite cleanly (data persists) and releases the data directory. */
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  maxConnections?: number;
}

/**
 * Starts PGlite on `dataDir` (initdb on first use, which takes seconds; reopening is fast) and serves it with
 * pglite-socket on a Unix socket in a fresh 0700 directory, so only this user can connect (PGlite has no
 * authentication). A lock file next to the data directory keeps a second process from opening it.
 *
 * PGlite is one PostgreSQL backend shared by every connection: a transaction blocks every other connection until it
 * ends, session state is shared, and NOTIFY only reaches the connection that sent it.
 */
export async function startEmbeddedPostgres(
  dataDir: string,
  options: EmbeddedPostgresOptions = {},
): Promise<EmbeddedPostgres> {
  const maxConnections = options.maxConnections ?? EMBEDDED_MAX_CONNECTIONS;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const releaseLock = await lockDataDir(dataDir);
  applyDefaultV8Flags(EMBEDDED_WASM_FLAGS);
  let db: PGlite | undefined;
  let socketDir: string | undefined;
  try {
    if (!existsSync(join(dataDir, 'PG_VERSION'))) await initialiseInChild(dataDir);
    db = await PGlite.create({ dataDir, startParams: [...EMBEDDED_START_PARAMS] });
    socketDir = await mkdtemp(join(tmpdir(), 'sigil-pg-'));
    const server = new PGLiteSocketServer({ db, path: join(socketDir, SOCKET_FILE), maxConnections });
    await server.start();
    const url = `postgresql://postgres@localhost/postgres?host=${encodeURIComponent(socketDir)}`;
    const openedDb = db;
    const openedSocketDir = socketDir;
    let stopping: Promise<void> | undefined;
    return {
      url,
      dataDir,
      maxConnections,
      stop: () => {
        stopping ??= (async () => {
          try {
            await server.stop();
            await openedDb.close();
          } finally {
            await rm(openedSocketDir, { recursive: true, force: true });
            await releaseLock();
          }
        })();
        return stopping;
      },
    };
  } catch (error) {
    if (db && !db.closed) await db.close().catch(() => undefined);
    if (socketDir) await rm(socketDir, { recursive: true, force: true });
    await releaseLock();
    throw error;
  }
}

/**
 * Creates the database cluster in `dataDir` in a child node process. PGlite's initdb runs in a WebAssembly module of
 * its own whose memory V8 keeps after initdb ends: done in the server process, a first start stayed at ~880 MiB RSS
 * where a reopen takes ~300 (bench/README.md, issue 13). The child's memory goes back to the system when it exits;
 * it runs with {@link EMBEDDED_WASM_FLAGS} too (Node 24: peak ~1.1 GiB without them, ~550 MiB with).
 */
async function initialiseInChild(dataDir: string): Promise<void> {
  const moduleUrl = pathToFileURL(createRequire(import.meta.url).resolve('@electric-sql/pglite')).href;
  // execFile passes the environment (NODE_OPTIONS) but not this process's node options: the child gets the flags the
  // server set on itself, or the operator's own choice of tiering.
  const tiering = process.execArgv.filter((option) => choosesV8Flag(EMBEDDED_WASM_FLAGS[0]!, option));
  const args = [
    ...tiering,
    ...defaultV8Flags(EMBEDDED_WASM_FLAGS),
    '--input-type=module',
    '-e',
    INITDB_SCRIPT,
    '--',
    moduleUrl,
    dataDir,
  ];
  args.push(JSON.stringify(EMBEDDED_START_PARAMS));
  await new Promise<void>((done, fail) => {
    execFile(
      process.execPath,
      args,
      { timeout: INITDB_TIMEOUT_MS, maxBuffer: 1024 * 1024 },
      (error, _stdout, stderr) => {
        if (!error) return done();
        const detail = stderr.trim().split('\n').slice(-5).join('\n') || error.message;
        fail(new Error(`embedded database ${dataDir}: initdb failed: ${detail}`));
      },
    );
  });
}

/**
 * Takes `<dataDir>.lock`: an exclusive flock(2) naming our pid, which the kernel drops when this process ends (even
 * by SIGKILL), so a crashed server leaves no stale lock and a reused pid means nothing.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockFile = join(dirname(dataDir), `${basename(dataDir)}.lock`);
  try {
    const lock = FileLock.acquire(lockFile);
    return async () => lock.release();
  } catch (error) {
    if (!(error instanceof FileLockHeldError)) throw error;
    const holder = error.holderPid === undefined ? 'another process' : `process ${error.holderPid}`;
    throw new Error(`embedded database ${dataDir} is in use by ${holder} (lock file ${lockFile})`);
  }
}
