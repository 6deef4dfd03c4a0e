import { randomBytes } from 'node:crypto';
import {
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ensurePrivateDir, writeFileAtomic, writeFilesAtomic } from './atomic-file.js';

// The temporary name is random; the tests below make it predictable to plant a symlink at it, as an attacker who
// guessed it would.
vi.mock('node:crypto', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:crypto')>();
  return { ...actual, randomBytes: vi.fn(actual.randomBytes) };
});

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
const GUESSED = Buffer.from('0123456789ab', 'hex');

let root: string;
let dir: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'sigil-atomic-file-'));
  dir = join(root, 'dir');
  await writeFile(join(root, 'outside'), 'precious\n', { mode: 0o644 });
  await mkdir(dir);
});

afterEach(async () => {
  vi.mocked(randomBytes).mockReset();
  await rm(root, { recursive: true, force: true });
});

function temporaryName(name: string): string {
  return join(dir, `.${name}.${process.pid}.${GUESSED.toString('hex')}.tmp`);
}

describe('writeFileAtomic', () => {
  it('refuses to write through a symlink planted at the temporary name, to an existing or a missing target', async () => {
    for (const target of [join(root, 'outside'), join(root, 'missing')]) {
      const planted = temporaryName('svid.0.key');
      await symlink(target, planted);
      vi.mocked(randomBytes).mockImplementationOnce(() => GUESSED);
      await expect(writeFileAtomic(join(dir, 'svid.0.key'), 'secret')).rejects.toMatchObject({ code: 'EEXIST' });
      expect(await readFile(join(root, 'outside'), 'utf8')).toBe('precious\n');
      await expect(lstat(join(root, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      expect(await readlink(planted)).toBe(target);
      expect(await readdir(dir)).toEqual([`.svid.0.key.${process.pid}.${GUESSED.toString('hex')}.tmp`]);
      await rm(planted);
    }
  });

  it('replaces a symlink at the final name, leaving its target alone', async () => {
    await symlink(join(root, 'outside'), join(dir, 'state'));
    await writeFileAtomic(join(dir, 'state'), 'new');
    expect(await readFile(join(root, 'outside'), 'utf8')).toBe('precious\n');
    expect(await mode(join(root, 'outside'))).toBe(0o644);
    expect((await lstat(join(dir, 'state'))).isFile()).toBe(true);
    expect(await mode(join(dir, 'state'))).toBe(0o600);
  });

  it('sets exactly the mode asked for under any umask, whatever the old file had', async () => {
    for (const [mask, wanted] of [
      [0, 0o600],
      [0, 0o644],
      [0o077, 0o644],
      [0o022, 0o600],
    ] as const) {
      await writeFile(join(dir, 'file'), 'old', { mode: 0o666 });
      const previous = process.umask(mask);
      try {
        await writeFileAtomic(join(dir, 'file'), 'new', { mode: wanted });
      } finally {
        process.umask(previous);
      }
      expect(await mode(join(dir, 'file'))).toBe(wanted);
    }
  });

  it('removes the temporary file when the rename fails', async () => {
    await mkdir(join(dir, 'blocked', 'inner'), { recursive: true });
    await expect(writeFileAtomic(join(dir, 'blocked'), 'new')).rejects.toThrow();
    expect(await readdir(dir)).toEqual(['blocked']);
  });
});

describe('writeFilesAtomic', () => {
  it('changes none of the files when one of them cannot be written, and leaves no temporary file', async () => {
    await writeFile(join(dir, 'key'), 'old key');
    await writeFile(join(dir, 'svid'), 'old svid');
    // The last file's directory is missing: its temporary file cannot be created, as on a full disk.
    await expect(
      writeFilesAtomic([
        { path: join(dir, 'key'), data: 'new key' },
        { path: join(dir, 'svid'), data: 'new svid' },
        { path: join(dir, 'missing', 'bundle'), data: 'new bundle' },
      ]),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(join(dir, 'key'), 'utf8')).toBe('old key');
    expect(await readFile(join(dir, 'svid'), 'utf8')).toBe('old svid');
    expect((await readdir(dir)).sort()).toEqual(['key', 'svid']);
  });

  it('replaces every file when all can be written', async () => {
    await writeFile(join(dir, 'key'), 'old key');
    await writeFilesAtomic([
      { path: join(dir, 'key'), data: 'new key' },
      { path: join(dir, 'svid'), data: 'new svid', mode: 0o644 },
    ]);
    expect(await readFile(join(dir, 'key'), 'utf8')).toBe('new key');
    expect(await readFile(join(dir, 'svid'), 'utf8')).toBe('new svid');
    expect(await mode(join(dir, 'svid'))).toBe(0o644);
    expect((await readdir(dir)).sort()).toEqual(['key', 'svid']);
  });
});

describe('ensurePrivateDir (the data dir)', () => {
  it('creates the directory 0700 and tightens an existing one of ours', async () => {
    await ensurePrivateDir(join(root, 'data'));
    expect(await mode(join(root, 'data'))).toBe(0o700);
    await ensurePrivateDir(dir);
    expect(await mode(dir)).toBe(0o700);
  });

  it.skipIf(process.geteuid?.() !== 0)(
    "refuses another user's directory instead of taking it over (root only: gives the directory to nobody)",
    async () => {
      await chown(dir, 65534, 65534);
      await expect(ensurePrivateDir(dir)).rejects.toThrow(
        `data dir: ${dir} belongs to uid 65534, not to this agent (uid 0)`,
      );
      expect(await mode(dir)).toBe(0o755);
    },
  );
});
