import { chmod, chown, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrustBundleSet, parseX509Svid } from '@sigil/spiffe';
import { type X509Context } from '@sigil/workload-api';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa } from '../../../../test/support/test-ca.js';
import { writeX509Files } from './api.command.js';

const mode = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

let context: X509Context;
let root: string;
let dir: string;
let outside: string;

beforeAll(async () => {
  const ca = await TestCa.create('example.org', { now: TEST_NOW });
  const federated = await TestCa.create('other.org', { now: TEST_NOW });
  const svid = await ca.createX509Svid('spiffe://example.org/workload');
  context = {
    svids: [await parseX509Svid(svid.chainDer(), await svid.privateKeyPkcs8())],
    bundles: new TrustBundleSet([ca.bundle(), federated.bundle()]),
  };
});

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'sigil-api-write-'));
  dir = join(root, 'out');
  outside = join(root, 'outside');
  await mkdir(dir);
  await writeFile(outside, 'precious\n', { mode: 0o644 });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const FILES = ['svid.0.pem', 'svid.0.key', 'bundle.0.pem', 'federated_bundle.0.pem'];

describe('api fetch x509 --write', () => {
  it('writes the chain, the key (0600) and the bundles, and no temporary file', async () => {
    await writeX509Files(dir, context);
    expect((await readdir(dir)).sort()).toEqual([...FILES].sort());
    expect(await readFile(join(dir, 'svid.0.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(await mode(join(dir, 'svid.0.key'))).toBe(0o600);
    expect(await mode(join(dir, 'svid.0.pem'))).toBe(0o644);
    expect(await mode(join(dir, 'bundle.0.pem'))).toBe(0o644);
  });

  it.each(FILES)('replaces a symlink planted at %s instead of writing through it', async (name) => {
    await symlink(outside, join(dir, name));
    await writeX509Files(dir, context);
    expect(await readFile(outside, 'utf8')).toBe('precious\n');
    expect(await mode(outside)).toBe(0o644);
    const written = await lstat(join(dir, name));
    expect(written.isFile()).toBe(true);
    expect(written.isSymbolicLink()).toBe(false);
  });

  it('does not create the target of a dangling symlink planted at the key name', async () => {
    const target = join(root, 'stolen.key');
    await symlink(target, join(dir, 'svid.0.key'));
    await writeX509Files(dir, context);
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await lstat(join(dir, 'svid.0.key'))).isFile()).toBe(true);
  });

  it('makes an existing 0644 key 0600 (the mode of the old file is not kept)', async () => {
    await writeFile(join(dir, 'svid.0.key'), 'old key\n', { mode: 0o644 });
    await writeX509Files(dir, context);
    expect(await mode(join(dir, 'svid.0.key'))).toBe(0o600);
    expect(await readFile(join(dir, 'svid.0.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it('refuses a directory others can write to, who could swap the files afterwards, and writes nothing', async () => {
    await chmod(dir, 0o777);
    await expect(writeX509Files(dir, context)).rejects.toThrow(
      `--write: ${dir} is writable by group or others (mode 0777)`,
    );
    expect(await readdir(dir)).toEqual([]);
  });

  it.skipIf(process.geteuid?.() !== 0)(
    'refuses a directory of another user (root only: gives the directory to nobody)',
    async () => {
      await chown(dir, 65534, 65534);
      await expect(writeX509Files(dir, context)).rejects.toThrow(
        `--write: ${dir} belongs to uid 65534, not to this process (uid 0) or root`,
      );
      expect(await readdir(dir)).toEqual([]);
    },
  );

  it('removes what an earlier run wrote for SVIDs and federated bundles that are gone, and nothing else', async () => {
    const stale = ['svid.1.pem', 'svid.1.key', 'bundle.1.pem', 'federated_bundle.1.pem', 'federated_bundle.3.pem'];
    const others = ['notes.txt', 'svid.x.pem', 'svid.1.pem.bak'];
    for (const name of [...stale, ...others]) await writeFile(join(dir, name), 'old\n');
    await writeX509Files(dir, context);
    expect((await readdir(dir)).sort()).toEqual([...FILES, ...others].sort());
  });

  it('does not widen modes under umask 0, nor narrow them under umask 077', async () => {
    for (const mask of [0, 0o077]) {
      const previous = process.umask(mask);
      try {
        await writeFile(join(dir, 'svid.0.pem'), 'old\n', { mode: 0o666 });
        await writeX509Files(dir, context);
      } finally {
        process.umask(previous);
      }
      expect(await mode(join(dir, 'svid.0.key'))).toBe(0o600);
      expect(await mode(join(dir, 'svid.0.pem'))).toBe(0o644);
      expect(await mode(join(dir, 'bundle.0.pem'))).toBe(0o644);
    }
  });
});
