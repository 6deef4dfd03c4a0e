import { closeSync } from 'node:fs';
import koffi from 'koffi';

const POLLIN = 0x1;
const ESRCH = 3;
const EINTR = 4;
const ENOSYS = 38;

interface PollFd {
  fd: number;
  events: number;
  revents: number;
}

interface Native {
  pidfdOpen(pid: number, flags: number): number;
  poll(fds: PollFd, count: number, timeoutMs: number): number;
}

let native: Native | undefined;

function load(): Native {
  if (native !== undefined) return native;
  if (process.platform !== 'linux') {
    throw new Error(`pidfd: process pinning needs linux's pidfd_open(2), not available on ${process.platform}`);
  }
  // The process's own symbol table already holds libc (glibc 2.36+ and musl 1.2.4+ export pidfd_open).
  const libc = koffi.load(null);
  koffi.struct('sigil_pollfd', { fd: 'int', events: 'short', revents: 'short' });
  native = {
    pidfdOpen: libc.func('int pidfd_open(int pid, unsigned int flags)') as Native['pidfdOpen'],
    poll: libc.func('int poll(_Inout_ sigil_pollfd *fds, unsigned long nfds, int timeout)') as Native['poll'],
  };
  return native;
}

/**
 * A pidfd (`pidfd_open(2)`): a handle on one process, not on a pid number. It stays bound to that process when the
 * process exits and its pid is reused, so "is the process still alive?" asked through it, after reading
 * `/proc/<pid>/…`, proves that what was read belonged to the process pinned when the connection was accepted.
 */
export class PidFd {
  private fd: number;

  private constructor(
    fd: number,
    /** The pid the handle was opened for (in the agent's pid namespace). */
    readonly pid: number,
  ) {
    this.fd = fd;
  }

  /**
   * Takes ownership of a pidfd the kernel handed out for `pid` (e.g. by `SO_PEERPIDFD`); closed by {@link close}.
   */
  static adopt(fd: number, pid: number): PidFd {
    if (!Number.isSafeInteger(fd) || fd < 0) throw new Error(`pidfd: must be a descriptor, got ${fd}`);
    return new PidFd(fd, pid);
  }

  /** Pins `pid`; throws when it names no process (already exited) or pidfds are not supported (Linux < 5.3). */
  static open(pid: number): PidFd {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`pidfd: pid must be a positive integer, got ${pid}`);
    const fd = load().pidfdOpen(pid, 0);
    if (fd < 0) {
      const errno = koffi.errno();
      if (errno === ESRCH) throw new Error(`pidfd: process ${pid} does not exist (it exited)`);
      if (errno === ENOSYS) throw new Error('pidfd: the kernel has no pidfd_open(2) (Linux 5.3 or later is needed)');
      throw new Error(`pidfd: pidfd_open(${pid}) failed with errno ${errno}`);
    }
    return new PidFd(fd, pid);
  }

  /**
   * True while the process runs; false once it has exited (a pidfd polls readable from the moment the process
   * terminates, zombie or reaped) or the handle was closed.
   */
  isAlive(): boolean {
    if (this.fd < 0) return false;
    for (;;) {
      const entry: PollFd = { fd: this.fd, events: POLLIN, revents: 0 };
      const ready = load().poll(entry, 1, 0);
      if (ready >= 0) return ready === 0;
      const errno = koffi.errno();
      // A signal (the profiler's SIGPROF, any handled signal) interrupts even a poll that does not wait: ask again.
      if (errno !== EINTR) throw new Error(`pidfd: poll failed with errno ${errno}`);
    }
  }

  /** Releases the handle; idempotent. */
  close(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    closeSync(fd);
  }
}
