import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuthorityChange } from './authority-key.js';
import { ROTATION_PAUSE_FILE_ENV, pauseInsideRotationForTests } from './rotation-test-hook.js';

const CHANGES = [{ kind: 'x509' }] as unknown as AuthorityChange[];
const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

describe('rotation test hook', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-hook-'));
  });
  afterEach(async () => {
    delete process.env[ROTATION_PAUSE_FILE_ENV];
    await rm(dir, { recursive: true, force: true });
  });

  it('is armed by a file of our own in a directory only we can write (it takes the file and stops)', async () => {
    const file = join(dir, 'pause');
    await writeFile(file, '');
    process.env[ROTATION_PAUSE_FILE_ENV] = file;
    void pauseInsideRotationForTests(CHANGES);
    await expect.poll(() => exists(file)).toBe(false);
  });

  it('ignores the file in a directory others can write (another local user could have made it)', async () => {
    await chmod(dir, 0o777);
    const file = join(dir, 'pause');
    await writeFile(file, '');
    process.env[ROTATION_PAUSE_FILE_ENV] = file;
    await expect(pauseInsideRotationForTests(CHANGES)).resolves.toBeUndefined();
    expect(await exists(file)).toBe(true);
  });

  it('does nothing without the variable', async () => {
    await expect(pauseInsideRotationForTests(CHANGES)).resolves.toBeUndefined();
  });
});
