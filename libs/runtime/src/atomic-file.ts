import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Default mode of a file written here (the agent keeps all its files so): only its own user reads it. */
export const FILE_MODE = 0o600;
/** Mode of the data dir. */
export const DIR_MODE = 0o700;

/**
 * Creates `dir` (and its parents) if missing and returns its resolved path, after checking that the directory is this
 * process's own (or root's) and that nobody else may write in it: whoever could rename entries in it could swap the
 * files written there for their own after they are written. Symbolic links are resolved first, so the caller writes
 * into the directory that was checked.
 */
export async function ensureOwnDir(dir: string, mode: number, label: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode });
  const real = await realpath(dir);
  const info = await stat(real);
  const uid = process.geteuid?.();
  if (!info.isDirectory()) throw new Error(`${label}: ${dir} is not a directory`);
  if (uid !== undefined && info.uid !== uid && info.uid !== 0) {
    throw new Error(`${label}: ${real} belongs to uid ${info.uid}, not to this process (uid ${uid}) or root`);
  }
  if ((info.mode & 0o022) !== 0) {
    throw new Error(`${label}: ${real} is writable by group or others (mode 0${(info.mode & 0o777).toString(8)})`);
  }
  return real;
}

/**
 * Creates `dir` (and its parents) if missing and makes it 0700, refusing a directory of another user (see
 * {@link ensureOwnDir}). An existing dir of ours is tightened, not refused: an operator who created it by hand with a
 * umask default should not have to chmod it first.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const info = await stat(dir);
  if (!info.isDirectory()) throw new Error(`data dir: ${dir} is not a directory`);
  const uid = process.geteuid?.();
  if (uid !== undefined && info.uid !== uid) {
    throw new Error(`data dir: ${dir} belongs to uid ${info.uid}, not to this agent (uid ${uid})`);
  }
  if ((info.mode & 0o777) !== DIR_MODE) await chmod(dir, DIR_MODE);
}

/** Options of {@link writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /** The mode of the final file, whatever the umask; default 0600. */
  readonly mode?: number;
}

// A fresh file or nothing: O_EXCL refuses any existing name, a symlink included, and O_NOFOLLOW says so twice, so
// a name planted by another user is never written through.
const NEW_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Replaces `path` atomically with `data`: the bytes go to a new temporary file in the same directory (created 0600
 * with O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name), which is set to `options.mode`, flushed to disk and
 * then renamed over the target, and the directory entry is flushed too. A crash at any point leaves either the old
 * file or the new one, never a torn one. The rename replaces whatever held the name, so a symlink there is replaced,
 * never followed, and the old file's mode is never kept. The temporary file is removed when anything fails.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  await writeFilesAtomic([{ path, data, ...options }]);
}

/** One file of {@link writeFilesAtomic}. */
export interface AtomicFile extends WriteFileAtomicOptions {
  readonly path: string;
  readonly data: string | Uint8Array;
}

/**
 * Replaces several files, each as {@link writeFileAtomic} does, writing and flushing every temporary file before the
 * first rename: a write that fails (a full disk, a quota) changes none of the files, so a set that belongs together
 * (a key and its certificate) is never left half new because the disk filled up. The renames then run in the order
 * given; a crash between two of them can still leave the first ones new, so callers order them so that such a mix is
 * detected on reading. The temporary files are removed when anything fails.
 */
export async function writeFilesAtomic(files: readonly AtomicFile[]): Promise<void> {
  const staged: { readonly temporary: string; readonly path: string }[] = [];
  let renamed = 0;
  try {
    for (const file of files) {
      const dir = dirname(file.path);
      const temporary = join(dir, `.${basename(file.path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
      const handle = await open(temporary, NEW_FILE_FLAGS, FILE_MODE);
      staged.push({ temporary, path: file.path });
      try {
        await handle.writeFile(file.data);
        // The umask may have narrowed the creation mode; the final mode is exactly the one asked for.
        await handle.chmod(file.mode ?? FILE_MODE);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    for (const { temporary, path } of staged) {
      await rename(temporary, path);
      renamed++;
    }
  } finally {
    for (const { temporary } of staged.slice(renamed)) await rm(temporary, { force: true });
  }
  for (const dir of new Set(files.map((file) => dirname(file.path)))) {
    const directory = await open(dir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }
}
