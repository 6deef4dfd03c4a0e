import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, chown, copyFile, readFile, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  JWTSVIDRequestSchema,
  JWTSVIDResponseSchema,
  X509SVIDRequestSchema,
  X509SVIDResponseSchema,
} from '@sigil/workload-api';

/** Whether this process may run children as another user (setpriv) and make setgid files. */
export const isRoot = process.geteuid?.() === 0;

/** The uid and gid of `nobody`, the "other local user" of cross-user tests. */
export const NOBODY = 65534;

/**
 * A node program with no imports, so that any user can run it from the command line whatever the permissions of
 * the checkout (`node -e`): it relays bytes between a Unix socket and its stdin/stdout. With `'inherited'` it
 * relays the descriptor numbered by `RELAY_FD`, inherited from its parent, instead of connecting itself.
 */
function relayProgram(target: { path: string } | 'inherited'): string {
  const socket =
    target === 'inherited'
      ? `new (require('net').Socket)({ fd: Number(process.env.RELAY_FD), readable: true, writable: true })`
      : `require('net').connect(${JSON.stringify(target.path)})`;
  return `const s = ${socket}; process.stdin.pipe(s); s.pipe(process.stdout); s.on('close', () => process.exit(0)); s.on('error', () => process.exit(1));`;
}

/** A caller of the Workload API: a process (pid) whose socket the test drives through its stdio. */
export interface RelayCaller {
  /** The process the agent sees at the other end of the socket (SO_PEERCRED pid). */
  readonly pid: number;
  /** Sends `FetchX509SVID` over the caller's connection and resolves with the SPIFFE IDs or the gRPC error. */
  fetchX509SvidIds(): Promise<{ ids: string[] } | { grpcStatus: number; message: string }>;
  /** Sends `FetchJWTSVID` for `audience` and resolves with the tokens or the gRPC error. */
  fetchJwtSvids(audience: readonly string[]): Promise<{ tokens: string[] } | { grpcStatus: number; message: string }>;
  close(): Promise<void>;
}

function relay(child: ChildProcess, pid: number): RelayCaller {
  const stream = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  const session = http2Connect('http://localhost', { createConnection: () => stream });
  session.on('error', () => undefined);
  // The agent closed the connection (a refused caller) and the relay exited: end the session and its requests,
  // which may otherwise wait for an answer that will never come. Destroying an HTTP/2 session over a JS stream while
  // a write of it is still in flight can trip an internal assertion of Node's JSStreamSocket (ERR_INTERNAL_ASSERTION,
  // thrown from destroy(); seen once in CI, 2026-12-07): the session is over either way, so it is not let escape as
  // an uncaught exception of the test run.
  child.once('exit', () => {
    try {
      session.destroy();
    } catch (error) {
      if ((error as { code?: unknown }).code !== 'ERR_INTERNAL_ASSERTION') throw error;
    }
  });
  /** Calls `method` with `message` and resolves with the first response message, or the gRPC error status. */
  const firstAnswer = async (
    method: string,
    message: Uint8Array,
  ): Promise<Uint8Array | { grpcStatus: number; message: string }> => {
    const request = session.request({
      ':method': 'POST',
      ':path': `/SpiffeWorkloadAPI/${method}`,
      'content-type': 'application/grpc',
      te: 'trailers',
      'workload.spiffe.io': 'true',
    });
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    frame.set(message, 5);
    request.end(frame);
    const chunks: Buffer[] = [];
    let status: { grpcStatus: number; message: string } | undefined;
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    const trailers = (headers: Record<string, unknown>) => {
      if (headers['grpc-status'] !== undefined && headers['grpc-status'] !== '0') {
        status = {
          grpcStatus: Number(headers['grpc-status']),
          message: decodeURIComponent(String(headers['grpc-message'] ?? '')),
        };
      }
    };
    request.on('response', trailers);
    request.on('trailers', trailers);
    // A stream stays open after its first message: stop once one whole message or a status has arrived.
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        const data = Buffer.concat(chunks);
        if (status !== undefined || (data.length >= 5 && data.length >= 5 + data.readUInt32BE(1))) resolve();
      };
      request.on('data', check);
      request.on('response', check);
      request.on('trailers', check);
      request.on('close', () =>
        status !== undefined || chunks.length > 0 ? resolve() : reject(new Error('stream closed')),
      );
      request.on('error', reject);
    });
    request.close();
    if (status !== undefined) return status;
    const data = Buffer.concat(chunks);
    return data.subarray(5, 5 + data.readUInt32BE(1));
  };
  return {
    pid,
    async fetchX509SvidIds() {
      const answer = await firstAnswer('FetchX509SVID', toBinary(X509SVIDRequestSchema, create(X509SVIDRequestSchema)));
      if (!(answer instanceof Uint8Array)) return answer;
      return { ids: fromBinary(X509SVIDResponseSchema, answer).svids.map((svid) => svid.spiffeId) };
    },
    async fetchJwtSvids(audience: readonly string[]) {
      const request = create(JWTSVIDRequestSchema, { audience: [...audience] });
      const answer = await firstAnswer('FetchJWTSVID', toBinary(JWTSVIDRequestSchema, request));
      if (!(answer instanceof Uint8Array)) return answer;
      return { tokens: fromBinary(JWTSVIDResponseSchema, answer).svids.map((svid) => svid.svid) };
    },
    async close() {
      session.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    },
  };
}

/**
 * Connects to the Workload API at `socketPath` from a new process, as `nobody` when `asNobody` (root only), and
 * drives that process's connection from this test.
 */
export async function spawnRelayCaller(socketPath: string, options: { asNobody?: boolean } = {}): Promise<RelayCaller> {
  const program = relayProgram({ path: socketPath });
  const child = options.asNobody
    ? spawn('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '-e', program])
    : spawn(process.execPath, ['-e', program]);
  await once(child, 'spawn');
  return relay(child, child.pid!);
}

/**
 * The setgid attack (root only): as `nobody`, a process connects to the socket and forks; the child keeps the
 * connection (and relays it to this test) while the process that connected execs `setgidExecutable`, which keeps
 * its pid, start time and uid but changes its gid, path and hash. Resolves once the exec has happened.
 */
export async function spawnSetgidExecCaller(socketPath: string, setgidExecutable: string): Promise<RelayCaller> {
  // perl (in every Debian base system) because node cannot exec in place: connect, keep the socket across exec,
  // fork; the child becomes the relay, the parent becomes the setgid program.
  const perl = `
    use Socket; use POSIX; use Fcntl;
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!";
    fcntl($s, F_SETFD, 0) or die "fcntl: $!";
    $ENV{RELAY_FD} = fileno($s);
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) { exec($ARGV[2], '-e', $ARGV[3]) or die "exec relay: $!"; }
    close(STDIN); close(STDOUT);
    exec($ARGV[1], '30') or die "exec setgid: $!";`;
  const child = spawn('setpriv', [
    `--reuid=${NOBODY}`,
    `--regid=${NOBODY}`,
    '--clear-groups',
    'perl',
    '-e',
    perl,
    socketPath,
    setgidExecutable,
    process.execPath,
    relayProgram('inherited'),
  ]);
  await once(child, 'spawn');
  const pid = child.pid!;
  // The perl process (setpriv execs it in place, so it has the spawned pid) must have exec'd the setgid program.
  for (let attempt = 0; attempt < 400; attempt++) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const gids = /^Gid:\s+(\d+)\s+(\d+)/m.exec(status);
    if (gids !== null && gids[1] !== gids[2]) break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // The relay (the forked child) holds our end of the stdio; closing kills the setgid program and ends the relay.
  return relay(child, pid);
}

/**
 * Copies `/usr/bin/sleep` into `directory` as a program that runs with group `gid` whoever starts it (mode 2755,
 * root only), and returns its path.
 */
export async function makeSetgidSleep(directory: string, gid: number): Promise<string> {
  const path = join(directory, 'setgid-sleep');
  await copyFile('/usr/bin/sleep', path);
  await chown(path, 0, gid);
  await chmod(path, 0o2755);
  return path;
}

/**
 * Starts `sleep 30` as a process with the pid `pid`, which must be free (its process exited and was reaped), the way
 * a pid gets reused: the kernel hands out the pid after `/proc/sys/kernel/ns_last_pid` (root only). Other processes
 * of the machine may take it first, so this tries up to 100 times; it throws when it never got the pid.
 */
export async function startSleepWithPid(pid: number): Promise<ChildProcess> {
  for (let attempt = 0; attempt < 100; attempt++) {
    await writeFile('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const candidate = spawn('sleep', ['30'], { stdio: 'ignore' });
    await once(candidate, 'spawn');
    if (candidate.pid === pid) return candidate;
    candidate.kill('SIGKILL');
  }
  throw new Error(`pid ${pid} was not reused in 100 attempts`);
}
