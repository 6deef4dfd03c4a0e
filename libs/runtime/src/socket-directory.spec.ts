import { spawn } from 'node:child_process';
import { chmod, chown, lchown, lstat, mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UnsafeSocketDirectoryError, checkSocketDirectory, prepareSocketDirectory } from './socket-directory.js';

const isRoot = process.geteuid?.() === 0;
const NOBODY = 65534;
const needsRoot = '(root only: gives a directory to another user)';

function modeOf(path: string): Promise<number> {
  return stat(path).then((info) => info.mode & 0o7777);
}

describe('prepareSocketDirectory / checkSocketDirectory', () => {
  let scratch: string;

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-sockdir-'));
  });
  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('creates missing directories one by one with exact modes, whatever the umask', async () => {
    const previous = process.umask(0o077);
    try {
      await prepareSocketDirectory(join(scratch, 'agent/public/api.sock'), { directoryMode: 0o755 });
    } finally {
      process.umask(previous);
    }
    expect(await modeOf(join(scratch, 'agent'))).toBe(0o755);
    expect(await modeOf(join(scratch, 'agent/public'))).toBe(0o755);
    await prepareSocketDirectory(join(scratch, 'server/private/api.sock'), { directoryMode: 0o700 });
    expect(await modeOf(join(scratch, 'server'))).toBe(0o755);
    expect(await modeOf(join(scratch, 'server/private'))).toBe(0o700);
  });

  it('tightens its own socket directory to the requested mode, never widens it', async () => {
    await mkdir(join(scratch, 'private'), { mode: 0o755 });
    await chmod(join(scratch, 'private'), 0o755);
    await prepareSocketDirectory(join(scratch, 'private/api.sock'), { directoryMode: 0o700 });
    expect(await modeOf(join(scratch, 'private'))).toBe(0o700);
    await prepareSocketDirectory(join(scratch, 'private/api.sock'), { directoryMode: 0o755 });
    expect(await modeOf(join(scratch, 'private'))).toBe(0o700);
  });

  it.each([
    ['the socket directory', 'public', 'public'],
    ['a directory above it', 'agent', 'agent/public'],
  ])('refuses %s when it is writable by group or others, naming it with its owner and mode', async (_, bad, dir) => {
    await mkdir(join(scratch, dir), { recursive: true });
    await chmod(join(scratch, bad), 0o775);
    const error = await prepareSocketDirectory(join(scratch, dir, 'api.sock'), { directoryMode: 0o755 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UnsafeSocketDirectoryError);
    expect((error as Error).message).toBe(
      `unsafe socket directory: ${join(scratch, bad)} is writable by group or others (owner uid ${process.geteuid!()}, ` +
        `mode 0775); every directory from the socket up to / must be owned by ${isRoot ? 'root' : `root or uid ${process.geteuid!()} (this service)`} ` +
        "and not writable by group or others (above the socket's own directory, a root-owned sticky directory such as /tmp may be)",
    );
  });

  it('checks the resolved path too: a link to a directory under a writable directory is refused', async () => {
    await mkdir(join(scratch, 'shared/real'), { recursive: true });
    await chmod(join(scratch, 'shared'), 0o777);
    await symlink(join(scratch, 'shared/real'), join(scratch, 'link'));
    await expect(checkSocketDirectory(join(scratch, 'link'))).rejects.toThrow(
      `unsafe socket directory: ${join(scratch, 'shared')} is writable by group or others`,
    );
  });

  it('refuses a socket directly in a sticky directory such as /tmp, where anyone may bind the name first', async () => {
    await expect(checkSocketDirectory(tmpdir())).rejects.toThrow(
      `unsafe socket directory: ${tmpdir()} is writable by group or others`,
    );
    await expect(prepareSocketDirectory(join(tmpdir(), 'api.sock'), { directoryMode: 0o755 })).rejects.toThrow(
      `unsafe socket directory: ${tmpdir()} is writable by group or others`,
    );
  });

  it('refuses a path through something that is not a directory', async () => {
    await expect(checkSocketDirectory('/dev/null')).rejects.toThrow(
      'unsafe socket directory: /dev/null is not a directory',
    );
  });

  describe('another user', () => {
    it.skipIf(!isRoot)(`refuses a socket directory another user created first ${needsRoot}`, async () => {
      // The squatter's /tmp/sigil-agent/public, made before the agent ever started.
      await mkdir(join(scratch, 'sigil-agent/public'), { recursive: true, mode: 0o755 });
      await chown(join(scratch, 'sigil-agent/public'), NOBODY, NOBODY);
      await expect(
        prepareSocketDirectory(join(scratch, 'sigil-agent/public/api.sock'), { directoryMode: 0o755 }),
      ).rejects.toThrow(
        `unsafe socket directory: ${join(scratch, 'sigil-agent/public')} is owned by another user (owner uid 65534, mode 0755)`,
      );
    });

    it.skipIf(!isRoot)(`refuses a root-owned private/ under a directory another user owns ${needsRoot}`, async () => {
      await mkdir(join(scratch, 'sigil-server/private'), { recursive: true, mode: 0o700 });
      await chown(join(scratch, 'sigil-server'), NOBODY, NOBODY);
      await chmod(join(scratch, 'sigil-server'), 0o755);
      await expect(
        prepareSocketDirectory(join(scratch, 'sigil-server/private/api.sock'), { directoryMode: 0o700 }),
      ).rejects.toThrow(`unsafe socket directory: ${join(scratch, 'sigil-server')} is owned by another user`);
    });

    it.skipIf(!isRoot)(`creates nothing under a directory another user owns ${needsRoot}`, async () => {
      await mkdir(join(scratch, 'theirs'), { mode: 0o755 });
      await chown(join(scratch, 'theirs'), NOBODY, NOBODY);
      await expect(
        prepareSocketDirectory(join(scratch, 'theirs/sigil/api.sock'), { directoryMode: 0o755 }),
      ).rejects.toThrow(`unsafe socket directory: ${join(scratch, 'theirs')} is owned by another user`);
      await expect(lstat(join(scratch, 'theirs/sigil'))).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it.skipIf(!isRoot)(`refuses a symbolic link another user owns ${needsRoot}`, async () => {
      await mkdir(join(scratch, 'real'), { mode: 0o755 });
      await symlink(join(scratch, 'real'), join(scratch, 'link'));
      await lchown(join(scratch, 'link'), NOBODY, NOBODY);
      await expect(checkSocketDirectory(join(scratch, 'link'))).rejects.toThrow(
        `unsafe socket directory: ${join(scratch, 'link')} is a symbolic link owned by another user (owner uid 65534`,
      );
    });

    it.skipIf(!isRoot)(`accepts a root-owned sticky directory as the end of the chain ${needsRoot}`, async () => {
      // Like /tmp: everyone may write, but only an entry's owner may remove or rename it.
      await mkdir(join(scratch, 'sticky'));
      await chmod(join(scratch, 'sticky'), 0o1777);
      await prepareSocketDirectory(join(scratch, 'sticky/sigil/api.sock'), { directoryMode: 0o700 });
      // The same directory without the sticky bit is refused, and so is a sticky one another user owns.
      await chmod(join(scratch, 'sticky'), 0o777);
      await expect(checkSocketDirectory(join(scratch, 'sticky/sigil'))).rejects.toThrow(
        'is writable by group or others',
      );
      await chmod(join(scratch, 'sticky'), 0o1777);
      await chown(join(scratch, 'sticky'), NOBODY, NOBODY);
      await expect(checkSocketDirectory(join(scratch, 'sticky/sigil'))).rejects.toThrow('is owned by another user');
    });

    it.skipIf(!isRoot)(`checks above a root-owned sticky directory too ${needsRoot}`, async () => {
      // A 1777 root-owned tmp/ inside a directory nobody owns: nobody can rename tmp/ away and put their own there.
      await mkdir(join(scratch, 'share/tmp'), { recursive: true });
      await chmod(join(scratch, 'share/tmp'), 0o1777);
      await chown(join(scratch, 'share'), NOBODY, NOBODY);
      await expect(
        prepareSocketDirectory(join(scratch, 'share/tmp/sigil-agent/public/api.sock'), { directoryMode: 0o755 }),
      ).rejects.toThrow(`unsafe socket directory: ${join(scratch, 'share')} is owned by another user`);
      await expect(lstat(join(scratch, 'share/tmp/sigil-agent'))).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it.skipIf(!isRoot)(
      `never changes a file's mode through a directory swapped in while the chain is created (race) ${needsRoot}`,
      async () => {
        // The attacker, as nobody in a /tmp-like directory: one process keeps creating and removing sigil-agent/ so
        // that the service may find it missing and then existing; another renames sigil-agent/public away whenever
        // it appears and puts a link to a root-only file in its place, hoping for a chmod through it.
        await chmod(scratch, 0o755);
        const base = join(scratch, 'tmp');
        await mkdir(base);
        await chmod(base, 0o1777);
        const secret = join(scratch, 'secret');
        await writeFile(secret, 'root only\n', { mode: 0o600 });
        const agentDir = join(base, 'sigil-agent');
        const perl = `
          my ($dir, $target) = @ARGV;
          if (fork() == 0) { while (1) { mkdir $dir, 0755; select(undef, undef, undef, 0.00001); rmdir $dir; } }
          while (1) { if (rename("$dir/public", "$dir/old")) { symlink($target, "$dir/public"); } }`;
        const attacker = spawn(
          'setpriv',
          [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', 'perl', '-e', perl, agentDir, secret],
          { stdio: 'ignore', detached: true },
        );
        const outcomes = new Map<string, number>();
        try {
          const deadline = Date.now() + 20_000;
          for (let attempt = 0; attempt < 1500 && Date.now() < deadline; attempt++) {
            await rm(agentDir, { recursive: true, force: true }).catch(() => undefined);
            const outcome = await prepareSocketDirectory(join(agentDir, 'public/api.sock'), { directoryMode: 0o755 })
              .then(() => 'prepared')
              .catch((error: NodeJS.ErrnoException) => error.code ?? 'error');
            outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
            expect(await modeOf(secret), `after attempt ${attempt}: ${JSON.stringify([...outcomes])}`).toBe(0o600);
          }
        } finally {
          process.kill(-attacker.pid!, 'SIGKILL');
        }
        // The race was run: the attacker's directory got in the way of some attempts.
        expect(outcomes.get('ERR_UNSAFE_SOCKET_DIRECTORY') ?? 0).toBeGreaterThan(0);
      },
      60_000,
    );

    it.skipIf(!isRoot)(`lets a service that is not root use its own and root's directories ${needsRoot}`, async () => {
      await mkdir(join(scratch, 'svc'), { mode: 0o755 });
      await chown(join(scratch, 'svc'), NOBODY, NOBODY);
      await prepareSocketDirectory(join(scratch, 'svc/public/api.sock'), { directoryMode: 0o755, uid: NOBODY });
      await expect(checkSocketDirectory(join(scratch, 'svc'), 1000)).rejects.toThrow(
        `${join(scratch, 'svc')} is owned by another user (owner uid 65534, mode 0755); every directory from the ` +
          'socket up to / must be owned by root or uid 1000 (this service)',
      );
    });
  });
});
