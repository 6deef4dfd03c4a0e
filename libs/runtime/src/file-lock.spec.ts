import { execFileSync, spawn } from 'node:child_process';
import { chown, link, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileLock, FileLockHeldError } from './file-lock.js';

describe('FileLock (flock(2) on a real file)', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-file-lock-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is exclusive: a second open of the file is refused, naming the holder’s pid, until the first releases', async () => {
    const path = join(dir, 'agent.lock');
    const first = FileLock.acquire(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toBe(`${process.pid}\n`);
    let refusal: unknown;
    try {
      FileLock.acquire(path);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(FileLockHeldError);
    expect((refusal as FileLockHeldError).holderPid).toBe(process.pid);
    first.release();
    first.release();
    FileLock.acquire(path).release();
  });

  it('is held by another process until it is killed with SIGKILL: the kernel drops it, no stale lock', async () => {
    const path = join(dir, 'agent.lock');
    // util-linux flock(1) without forking (the process that holds the lock is the one killed); it says when it has it.
    const ready = join(dir, 'ready');
    const holder = spawn('flock', ['--no-fork', path, 'sh', '-c', `: > ${ready}; exec sleep 60`], { stdio: 'ignore' });
    const exited = new Promise((done) => holder.once('exit', done));
    try {
      const deadline = Date.now() + 10_000;
      while (
        !(await stat(ready).then(
          () => true,
          () => false,
        ))
      ) {
        if (Date.now() > deadline) throw new Error('flock(1) did not take the lock within 10 s');
        await new Promise((done) => setTimeout(done, 20));
      }
      // flock(1) writes no pid: the message says "another process".
      expect(() => FileLock.acquire(path)).toThrow(new FileLockHeldError(path, undefined));
      expect(() => FileLock.acquire(path)).toThrow(`${path} is locked by another process`);
    } finally {
      holder.kill('SIGKILL');
      await exited;
    }
    const lock = FileLock.acquire(path);
    lock.release();
  });

  it('refuses a planted file: a FIFO, a hard link', async () => {
    const fifo = join(dir, 'fifo.lock');
    execFileSync('mkfifo', [fifo]);
    expect(() => FileLock.acquire(fifo)).toThrow(`file lock: ${fifo} is not a regular file; remove it`);
    const target = join(dir, 'precious');
    await writeFile(target, 'keep me');
    await link(target, join(dir, 'linked.lock'));
    expect(() => FileLock.acquire(join(dir, 'linked.lock'))).toThrow(/has 2 hard links; remove it$/);
    expect(await readFile(target, 'utf8')).toBe('keep me');
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a lock file another user owns (needs root, to chown)', async () => {
    const foreign = join(dir, 'foreign.lock');
    await writeFile(foreign, '', { mode: 0o666 });
    await chown(foreign, 65534, 65534);
    expect(() => FileLock.acquire(foreign)).toThrow(/is owned by uid 65534, not by this process \(uid 0\)/);
  });

  it('does not follow a symbolic link planted at its path', async () => {
    const target = join(dir, 'elsewhere');
    await symlink(target, join(dir, 'agent.lock'));
    expect(() => FileLock.acquire(join(dir, 'agent.lock'))).toThrow(/ELOOP/);
    await expect(stat(target)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
