import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Mode of every file the agent keeps: only its own user reads keys, SVIDs and bundles. */
export const FILE_MODE = 0o600;
/** Mode of the data dir. */
export const DIR_MODE = 0o700;

/**
 * Creates `dir` (and its parents) if missing and makes it 0700. An existing dir is tightened, not refused: an
 * operator who created it by hand with a umask default should not have to chmod it first.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  const info = await stat(dir);
  if (!info.isDirectory()) throw new Error(`data dir: ${dir} is not a directory`);
  if ((info.mode & 0o777) !== DIR_MODE) await chmod(dir, DIR_MODE);
}

/**
 * Replaces `path` atomically with `data`, mode 0600: the bytes go to a new temporary file in the same directory,
 * which is flushed to disk and then renamed over the target, and the directory entry is flushed too. A crash at any
 * point leaves either the old file or the new one, never a torn one.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  const temporary = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporary, 'wx', FILE_MODE);
  try {
    await handle.writeFile(data);
    await handle.chmod(FILE_MODE);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
