import { type Http2Server, type Http2Session, type Http2Stream } from 'node:http2';
import { type Socket } from 'node:net';
import { createContextKey } from '@connectrpc/connect';
import { RateLimitedLog, ContextLogger } from '@sigil/logging';
import koffi from 'koffi';
import { readStartTimeSync } from '../attestor/workload/unix/proc.js';
import { PidFd } from './pidfd.js';

/**
 * Who is at the other end of a Workload API connection, as the kernel reported it when the connection was made
 * (never anything the caller sends), with the process pinned for the life of the connection.
 */
export interface PeerCredentials {
  readonly pid: number;
  /** Effective uid of the caller at connect time. */
  readonly uid: number;
  /** Effective gid of the caller at connect time. */
  readonly gid: number;
  /** Start time of `pid` (`/proc/<pid>/stat` field 22) read when the connection was accepted. */
  readonly startTime: bigint;
  /**
   * A pidfd on the process that connected, opened when the connection was accepted and closed with it: attestation
   * asks it whether that process is still alive after reading `/proc/<pid>`, so a reused pid never lends its
   * identity.
   */
  readonly process: PidFd;
}

/** Handlers read the caller's credentials under this key; undefined when they could not be obtained. */
export const PEER_CREDENTIALS = createContextKey<PeerCredentials | undefined>(undefined, {
  description: 'peer credentials of the Workload API caller (SO_PEERCRED)',
});

const SOL_SOCKET = 1;
const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }: three 32-bit fields

// SO_PEERCRED is 17 on most Linux architectures; these are the exceptions (asm/socket.h).
function soPeerCred(): number {
  switch (process.arch) {
    case 'ppc':
    case 'ppc64':
      return 21;
    case 'mips':
    case 'mipsel':
      return 18;
    default:
      return 17;
  }
}

// SO_PEERPIDFD (Linux 6.5+) is 77 in asm-generic/socket.h, which these architectures use for it.
const SO_PEERPIDFD = ['x64', 'ia32', 'arm64', 'arm', 'riscv64', 'loong64', 's390x', 'ppc64'].includes(process.arch)
  ? 77
  : undefined;
const ENOPROTOOPT = 92;

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, length: [number]) => number;

let getsockopt: GetSockOpt | undefined;

function loadGetSockOpt(): GetSockOpt {
  if (process.platform !== 'linux') {
    throw new Error(`peer credentials: SO_PEERCRED is only supported on linux, not ${process.platform}`);
  }
  // The process's own symbol table already holds libc (glibc or musl), so no library name is needed.
  getsockopt ??= koffi
    .load(null)
    .func(
      'int getsockopt(int sockfd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)',
    ) as GetSockOpt;
  return getsockopt;
}

/** Reads `getsockopt(fd, SOL_SOCKET, SO_PEERCRED)` of a connected Unix socket. */
export function readPeerCredentialsFromFd(fd: number): { pid: number; uid: number; gid: number } {
  if (!Number.isSafeInteger(fd) || fd < 0) throw new Error(`peer credentials: fd must be a descriptor, got ${fd}`);
  const value = Buffer.alloc(UCRED_SIZE);
  const length: [number] = [UCRED_SIZE];
  const result = loadGetSockOpt()(fd, SOL_SOCKET, soPeerCred(), value, length);
  if (result !== 0) throw new Error(`peer credentials: getsockopt(SO_PEERCRED) failed with errno ${koffi.errno()}`);
  if (length[0] !== UCRED_SIZE) {
    throw new Error(`peer credentials: getsockopt returned ${length[0]} bytes, expected ${UCRED_SIZE}`);
  }
  const pid = value.readInt32LE(0);
  // pid 0 means the peer is in another pid namespace the kernel cannot map into ours: it cannot be attested.
  if (pid <= 0) throw new Error(`peer credentials: the kernel reported pid ${pid} for the peer`);
  return { pid, uid: value.readUInt32LE(4), gid: value.readUInt32LE(8) };
}

interface SocketWithHandle {
  readonly _handle?: { readonly fd?: number } | null;
}

/**
 * A pidfd for the process at the other end of a connected Unix socket: `SO_PEERPIDFD` where the kernel has it (6.5+),
 * which names the very process that connected, even if it has exited and its pid was reused since; else
 * `pidfd_open(pid)`, which pins whatever process holds `pid` by now (the exit-and-reuse window between connect and
 * this call stays open there; the uid/gid and dumpable checks still bind it to a process of the same ids).
 */
function openPeerPidFd(fd: number, pid: number): PidFd {
  if (SO_PEERPIDFD !== undefined) {
    const value = Buffer.alloc(4);
    const length: [number] = [4];
    if (loadGetSockOpt()(fd, SOL_SOCKET, SO_PEERPIDFD, value, length) === 0 && length[0] === 4) {
      return PidFd.adopt(value.readInt32LE(0), pid);
    }
    const errno = koffi.errno();
    if (errno !== ENOPROTOOPT) throw new Error(`peer credentials: getsockopt(SO_PEERPIDFD) failed with errno ${errno}`);
  }
  return PidFd.open(pid);
}

/** The file descriptor behind a Node socket (libuv's handle; not public API, hence the narrow type). */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as SocketWithHandle)._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('peer credentials: the connection has no file descriptor');
  return fd;
}

/**
 * Reads the credentials of the process at the other end of a connected Unix socket and pins that process: a pidfd
 * (see {@link openPeerPidFd}), then its start time, then a check through the pidfd that the process is still alive,
 * so the start time was its own.
 * Throws when any of these fails (the process exited, or its pid is already another process's): such a caller
 * cannot be attested and its connection is refused.
 */
export function readPeerCredentials(socket: Socket): PeerCredentials {
  const fd = socketFd(socket);
  const { pid, uid, gid } = readPeerCredentialsFromFd(fd);
  const pinned = openPeerPidFd(fd, pid);
  try {
    let startTime: bigint;
    try {
      startTime = readStartTimeSync(pid);
    } catch (error) {
      throw new Error(`peer credentials: cannot read the start time of process ${pid} (exited?)`, { cause: error });
    }
    if (!pinned.isAlive()) throw new Error(`peer credentials: process ${pid} has exited since it connected`);
    return { pid, uid, gid, startTime, process: pinned };
  } catch (error) {
    pinned.close();
    throw error;
  }
}

/**
 * Reads the peer credentials once per connection, on the HTTP/2 server's `'session'` event (SPIRE's peertracker),
 * and returns the lookup that hands them to every call (HTTP/2 stream) of that connection. A connection whose
 * caller cannot be pinned is closed at once (as SPIRE's peertracker drops it); the pin is released with the
 * connection. `onAccepted` sees every connection whose caller was pinned, before any of its requests.
 */
export function trackPeerCredentials(
  server: Http2Server,
  refusals: Pick<RateLimitedLog, 'warn'> = new RateLimitedLog(new ContextLogger('PeerCredentials')),
  onAccepted?: (session: Http2Session, credentials: PeerCredentials) => void,
): (stream: Http2Stream) => PeerCredentials | undefined {
  const bySession = new WeakMap<Http2Session, PeerCredentials>();
  server.on('session', (session: Http2Session) => {
    let credentials: PeerCredentials;
    try {
      credentials = readPeerCredentials(session.socket as Socket);
    } catch (error) {
      // Any local process can make this happen at will: rate limited, one key for all such refusals.
      refusals.warn('unpinnable-caller', { msg: `refusing a Workload API connection: ${(error as Error).message}` });
      session.destroy();
      return;
    }
    bySession.set(session, credentials);
    session.once('close', () => credentials.process.close());
    onAccepted?.(session, credentials);
  });
  return (stream) => {
    const session = stream.session;
    return session === undefined ? undefined : bySession.get(session);
  };
}
