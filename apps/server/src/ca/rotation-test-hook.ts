import { lstat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Logger } from '@nestjs/common';
import type { AuthorityChange } from './authority-key.js';

/**
 * TEST ONLY (test/e2e/server-replicas.e2e-spec.ts, bench/replicas.bench.ts): the path of a file whose presence makes
 * the next scheduled rotation step that changes the key journal (not an operator's `localauthority` change) stop
 * inside its transaction, holding the rotation lock, until the process is killed. The first replica to delete the
 * file is the one that stops; Sigil never creates the file, so the hook does nothing unless a test creates it.
 * Armed only by a file that this process's user could have made and nobody else could: a regular file owned by that
 * user in a directory owned by it and writable by nobody else (a test's private temporary directory). So even with
 * the variable left set in production, another local user cannot stall rotation by creating the file.
 */
export const ROTATION_PAUSE_FILE_ENV = 'SIGIL_TEST_ROTATION_PAUSE_FILE';

const logger = new Logger('RotationTestHook');

/** Never returns when the test hook is armed (see {@link ROTATION_PAUSE_FILE_ENV}); returns at once otherwise. */
export async function pauseInsideRotationForTests(changes: readonly AuthorityChange[]): Promise<void> {
  const file = process.env[ROTATION_PAUSE_FILE_ENV];
  if (file === undefined || file === '' || changes.length === 0) return;
  try {
    if (!(await ownedByUs(file))) return;
    await unlink(file);
  } catch {
    return;
  }
  logger.warn({ msg: 'test hook: rotation paused inside its transaction until this process is killed', changes });
  await new Promise<never>(() => undefined);
}

/** The file is a regular file of this process's user, in a directory of that user that no one else can write. */
async function ownedByUs(file: string): Promise<boolean> {
  const uid = process.getuid?.();
  if (uid === undefined) return false;
  const [fileStat, dirStat] = await Promise.all([lstat(file), lstat(dirname(file))]);
  return (
    fileStat.isFile() &&
    fileStat.uid === uid &&
    dirStat.isDirectory() &&
    dirStat.uid === uid &&
    (dirStat.mode & 0o022) === 0
  );
}
