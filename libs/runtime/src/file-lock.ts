import { type Stats, closeSync, constants, fstatSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import koffi from 'koffi';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EINTR = 4;
const EWOULDBLOCK = 11;

let flock: ((fd: number, operation: number) => number) | undefined;

function native(): (fd: number, operation: number) => number {
  if (flock !== undefined) return flock;
  if (process.platform !== 'linux') throw new Error(`file lock: needs linux's flock(2), not ${process.platform}`);
  // libc is in the process's own symbol table.
  flock = koffi.load(null).func('int flock(int fd, int operation)') as (fd: number, operation: number) => number;
  return flock;
}

/** The lock is held by another open file: by another process (whose pid the file may name), or this one again. */
export class FileLockHeldError extends Error {
  override readonly name = 'FileLockHeldError';

  constructor(
    readonly path: string,
    /** The pid the holder wrote into the file, when it did. */
    readonly holderPid: number | undefined,
  ) {
    super(`${path} is locked by ${holderPid === undefined ? 'another process' : `process ${holderPid}`}`);
  }
}

/**
 * An exclusive `flock(2)` on a file, held until {@link release} or the process's end: the kernel drops it when the
 * last descriptor of the open file closes, so a process killed with SIGKILL leaves no stale lock, and a pid reused
 * by another process means nothing (unlike a pid file). The holder writes its pid into the file, for the message of
 * whoever finds it locked. The file is opened without following a symbolic link and created 0600.
 */
export class FileLock {
  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  /** @throws FileLockHeldError when another open file holds the lock; Error for any other failure. */
  static acquire(path: string): FileLock {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      // A file planted by someone else (a FIFO, a hard link to another file, one another user owns and keeps open to
      // hold the lock) is refused rather than locked or truncated.
      const planted = plantedBecause(fstatSync(fd));
      if (planted !== undefined) throw new Error(`file lock: ${path} ${planted}; remove it`);
      for (;;) {
        if (native()(fd, LOCK_EX | LOCK_NB) === 0) break;
        const errno = koffi.errno();
        if (errno === EINTR) continue;
        if (errno === EWOULDBLOCK) throw new FileLockHeldError(path, holderPid(path));
        throw new Error(`file lock: flock(${path}) failed with errno ${errno}`);
      }
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`, 0);
      return new FileLock(path, fd);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /** Drops the lock (closes the file); safe to call twice. */
  release(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

function holderPid(path: string): number | undefined {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return /^[1-9]\d{0,9}$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** Why an opened lock file is not one this process may use, or undefined. */
function plantedBecause(stats: Stats): string | undefined {
  if (!stats.isFile()) return 'is not a regular file';
  if (stats.nlink !== 1) return `has ${stats.nlink} hard links`;
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid) return `is owned by uid ${stats.uid}, not by this process (uid ${uid})`;
  return undefined;
}
