import { type Stats } from 'node:fs';
import { chmod, lstat, mkdir, realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

const S_ISVTX = 0o1000;
const GROUP_OR_OTHER_WRITE = 0o022;

/**
 * A directory on the way to a local socket that someone other than root or the service could change: whoever can
 * rename or replace a directory above the socket can unlink the socket and bind their own in its place.
 */
export class UnsafeSocketDirectoryError extends Error {
  override readonly name = 'UnsafeSocketDirectoryError';
  readonly code = 'ERR_UNSAFE_SOCKET_DIRECTORY';

  constructor(
    message: string,
    /** The directory (or symbolic link) that failed the check. */
    readonly path: string,
  ) {
    super(message);
  }
}

/** Options of {@link prepareSocketDirectory}. */
export interface SocketDirectoryOptions {
  /**
   * Mode of the socket's own directory: used when it is created, and an existing directory of this service's with
   * more permission bits is tightened to it (never widened). 0o755 for a socket every local user may reach, 0o700
   * for an administrator's socket.
   */
  readonly directoryMode: number;
  /** The uid the service runs as; default the effective uid of this process. */
  readonly uid?: number;
}

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

function effectiveUid(): number {
  const uid = process.geteuid?.();
  if (uid === undefined) throw new Error('socket directory: the process has no uid (not a POSIX platform)');
  return uid;
}

/** `path` and each of its ancestors up to `/`, nearest first. */
function ancestors(path: string): string[] {
  const chain = [path];
  for (let current = path; dirname(current) !== current; current = dirname(current)) chain.push(dirname(current));
  return chain;
}

function refuse(path: string, info: Stats, uid: number, what: string): never {
  const owner = uid === 0 ? 'root' : `root or uid ${uid} (this service)`;
  throw new UnsafeSocketDirectoryError(
    `unsafe socket directory: ${path} ${what} (owner uid ${info.uid}, mode ${octal(info.mode)}); every directory ` +
      `above the socket must be owned by ${owner} and not writable by group or others, up to / or to a ` +
      `root-owned sticky directory such as /tmp`,
    path,
  );
}

/**
 * Checks each element of `chain` (nearest first) until `/` or a root-owned sticky directory (which only its owner
 * and root can rename entries in, and whose entries only their owners can remove): each must be a directory owned by
 * root or `uid` and not writable by group or others, or a symbolic link owned by root or `uid` (its target is
 * checked separately, through the resolved path).
 */
async function checkChain(chain: readonly string[], uid: number): Promise<void> {
  for (const path of chain) {
    const info = await lstat(path);
    const trustedOwner = info.uid === 0 || info.uid === uid;
    if (info.isSymbolicLink()) {
      if (!trustedOwner) refuse(path, info, uid, 'is a symbolic link owned by another user');
      continue;
    }
    if (!info.isDirectory()) refuse(path, info, uid, 'is not a directory');
    if (info.uid === 0 && (info.mode & S_ISVTX) !== 0) return;
    if (!trustedOwner) refuse(path, info, uid, 'is owned by another user');
    if ((info.mode & GROUP_OR_OTHER_WRITE) !== 0) refuse(path, info, uid, 'is writable by group or others');
  }
}

/**
 * Checks that nobody but root and the service (`uid`, default this process's effective uid) can change the
 * directory `directory` or any directory above it, both as written and as resolved through symbolic links; rejects
 * with {@link UnsafeSocketDirectoryError} naming the first offending directory, its owner and mode.
 */
export async function checkSocketDirectory(directory: string, uid: number = effectiveUid()): Promise<void> {
  const absolute = resolve(directory);
  await checkChain(ancestors(absolute), uid);
  const real = await realpath(absolute);
  if (real !== absolute) await checkChain(ancestors(real), uid);
}

/**
 * Creates the directory of the socket at `socketPath` and any missing parents, one at a time (0755 for parents,
 * `directoryMode` for the socket's own directory, whatever the umask), then checks the whole chain with
 * {@link checkSocketDirectory}. A directory another user created first is never adopted: the check refuses it.
 * Finally tightens the socket's own directory to `directoryMode` when it has more permission bits.
 */
export async function prepareSocketDirectory(socketPath: string, options: SocketDirectoryOptions): Promise<void> {
  const uid = options.uid ?? effectiveUid();
  const directory = dirname(resolve(socketPath));
  const missing: string[] = [];
  for (const path of ancestors(directory)) {
    try {
      await lstat(path);
      // Nothing is created (or chmod-ed) under a directory another user could swap for a link elsewhere.
      await checkSocketDirectory(path, uid);
      break;
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error;
      missing.unshift(path);
    }
  }
  for (const path of missing) {
    const mode = path === directory ? options.directoryMode : 0o755;
    try {
      await mkdir(path, { mode });
    } catch (error) {
      // Created by someone else in the meantime: the check below decides whether it can be used.
      if (errorCode(error) === 'EEXIST') continue;
      throw error;
    }
    await chmod(path, mode);
  }
  await checkSocketDirectory(directory, uid);
  const info = await lstat(directory);
  const extra = info.mode & 0o777 & ~options.directoryMode;
  if (extra !== 0 && info.uid === uid) await chmod(directory, info.mode & 0o777 & options.directoryMode);
}
