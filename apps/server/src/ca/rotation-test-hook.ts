import { unlink } from 'node:fs/promises';
import { Logger } from '@nestjs/common';
import type { AuthorityChange } from './authority-key.js';

/**
 * TEST ONLY (test/e2e/server-replicas.e2e-spec.ts, bench/replicas.bench.ts): the path of a file whose presence makes
 * the next scheduled rotation step that changes the key journal (not an operator's `localauthority` change) stop
 * inside its transaction, holding the rotation lock, until the process is killed. The first replica to delete the
 * file is the one that stops; Sigil never creates the file, so the hook does nothing unless a test creates it.
 */
export const ROTATION_PAUSE_FILE_ENV = 'SIGIL_TEST_ROTATION_PAUSE_FILE';

const logger = new Logger('RotationTestHook');

/** Never returns when the test hook is armed (see {@link ROTATION_PAUSE_FILE_ENV}); returns at once otherwise. */
export async function pauseInsideRotationForTests(changes: readonly AuthorityChange[]): Promise<void> {
  const file = process.env[ROTATION_PAUSE_FILE_ENV];
  if (file === undefined || file === '' || changes.length === 0) return;
  try {
    await unlink(file);
  } catch {
    return;
  }
  logger.warn({ msg: 'test hook: rotation paused inside its transaction until this process is killed', changes });
  await new Promise<never>(() => undefined);
}
