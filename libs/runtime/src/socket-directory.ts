import { type Stats, constants } from 'node:fs';
import { lstat, mkdir, open, realpath } from 'node:fs/promises';
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
      `from the socket up to / must be owned by ${owner} and not writable by group or others (above the ` +
      `socket's own directory, a root-owned sticky directory such as /tmp may be)`,
    path,
  );
}

/**
 * Checks each element of `chain` (nearest first) up to `/`: each must be a directory owned by root or `uid` and not
 * writable by group or others, or a symbolic link owned by root or `uid` (its target is checked separately, through
 * the resolved path). From index `stickyFrom` on, a root-owned sticky directory may be writable by others: there
 * only an entry's owner (or root) can rename or remove it. The socket's own directory never may, since anyone could
 * bind the socket's name in it first.
 */
async function checkChain(chain: readonly string[], uid: number, stickyFrom: number): Promise<void> {
  for (const [index, path] of chain.entries()) {
    const info = await lstat(path);
    const trustedOwner = info.uid === 0 || info.uid === uid;
    if (info.isSymbolicLink()) {
      if (!trustedOwner) refuse(path, info, uid, 'is a symbolic link owned by another user');
      continue;
    }
    if (!info.isDirectory()) refuse(path, info, uid, 'is not a directory');
    if (!trustedOwner) refuse(path, info, uid, 'is owned by another user');
    const rootSticky = info.uid === 0 && (info.mode & S_ISVTX) !== 0 && index >= stickyFrom;
    if ((info.mode & GROUP_OR_OTHER_WRITE) !== 0 && !rootSticky) {
      refuse(path, info, uid, 'is writable by group or others');
    }
  }
}

/** {@link checkChain} of `directory` as written and as resolved through symbolic links. */
async function checkPath(directory: string, uid: number, stickyFrom: number): Promise<void> {
  const absolute = resolve(directory);
  await checkChain(ancestors(absolute), uid, stickyFrom);
  const real = await realpath(absolute);
  if (real !== absolute) await checkChain(ancestors(real), uid, stickyFrom);
}

/**
 * Checks that nobody but root and the service (`uid`, default this process's effective uid) can change the socket
 * directory `directory` or any directory above it, both as written and as resolved through symbolic links; rejects
 * with {@link UnsafeSocketDirectoryError} naming the first offending directory, its owner and mode.
 */
export async function checkSocketDirectory(directory: string, uid: number = effectiveUid()): Promise<void> {
  await checkPath(directory, uid, 1);
}

/**
 * Sets the mode of the directory at `path` through a handle opened without following a symbolic link, after checking
 * through that same handle that it is a directory this process owns: a directory swapped for a link or for someone
 * else's is never changed.
 */
async function setDirectoryMode(path: string, mode: number): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const info = await handle.stat();
    if (!info.isDirectory() || info.uid !== effectiveUid()) refuse(path, info, effectiveUid(), 'changed hands');
    await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/**
 * Creates the directory of the socket at `socketPath` and any missing parents, one at a time (0755 for parents,
 * `directoryMode` for the socket's own directory, whatever the umask), checking each with its whole chain before
 * anything is created in it or its mode is set, so a directory another user created first, or swapped in, is never
 * adopted. Finally checks the socket's own directory with {@link checkSocketDirectory} and tightens it to
 * `directoryMode` when it has more permission bits.
 */
export async function prepareSocketDirectory(socketPath: string, options: SocketDirectoryOptions): Promise<void> {
  const uid = options.uid ?? effectiveUid();
  const directory = dirname(resolve(socketPath));
  const missing: string[] = [];
  for (const path of ancestors(directory)) {
    try {
      await lstat(path);
    } catch (error) {
      if (errorCode(error) !== 'ENOENT') throw error;
      missing.unshift(path);
      continue;
    }
    // Nothing is created under a directory another user could swap for a link elsewhere.
    await checkPath(path, uid, 0);
    break;
  }
  for (const path of missing) {
    const mode = path === directory ? options.directoryMode : 0o755;
    let created = true;
    try {
      await mkdir(path, { mode });
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error;
      created = false; // made by someone else in the meantime: the check decides whether it can be used
    }
    await checkPath(path, uid, path === directory ? 1 : 0);
    if (created) await setDirectoryMode(path, mode);
  }
  await checkSocketDirectory(directory, uid);
  const info = await lstat(directory);
  const extra = info.mode & 0o777 & ~options.directoryMode;
  if (extra !== 0 && info.uid === effectiveUid()) {
    await setDirectoryMode(directory, info.mode & 0o777 & options.directoryMode);
  }
}
