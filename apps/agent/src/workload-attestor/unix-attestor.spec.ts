import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AccountNames, parseAccountFile } from './account-names.js';
import { readStartTime } from './proc.js';
import { formatSelector } from './selector.js';
import { UnixWorkloadAttestor, WorkloadAttestationError } from './unix-attestor.js';

const quiet = { debug: () => undefined, warn: () => undefined };

async function sha256Of(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function names(path: string): Promise<Map<number, string>> {
  return parseAccountFile(await readFile(path, 'utf8'));
}

/** The selectors `pid` should get, worked out from procfs and /etc without the code under test's parsers. */
async function expectedSelectors(pid: number): Promise<string[]> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (key: string) => new RegExp(`^${key}:(.*)$`, 'm').exec(status)![1]!.trim().split(/\s+/).filter(Boolean);
  const [uid, gid] = [Number(field('Uid')[1]), Number(field('Gid')[1])];
  const users = await names('/etc/passwd');
  const groups = await names('/etc/group');
  const exe = `/proc/${pid}/exe`;
  const expected = [`unix:uid:${uid}`, `unix:gid:${gid}`];
  if (users.has(uid)) expected.push(`unix:user:${users.get(uid)}`);
  if (groups.has(gid)) expected.push(`unix:group:${groups.get(gid)}`);
  for (const supplementary of field('Groups').map(Number)) {
    expected.push(`unix:supplementary_gid:${supplementary}`);
    if (groups.has(supplementary)) expected.push(`unix:supplementary_group:${groups.get(supplementary)}`);
  }
  expected.push(`unix:path:${await readlink(exe)}`, `unix:sha256:${await sha256Of(exe)}`);
  return expected.sort();
}

/** Starts `sleep`, optionally through setpriv, and waits until the child has exec'd into it. */
async function startSleeper(setprivArgs: string[] = []): Promise<ChildProcess & { pid: number }> {
  const child =
    setprivArgs.length === 0
      ? spawn('sleep', ['30'], { stdio: 'ignore' })
      : spawn('setpriv', [...setprivArgs, 'sleep', '30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const pid = child.pid!;
  // Until exec completes, /proc/<pid>/exe still points at node (or setpriv).
  for (let attempt = 0; attempt < 200; attempt++) {
    if ((await readlink(`/proc/${pid}/exe`).catch(() => '')).endsWith('/sleep')) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return child as ChildProcess & { pid: number };
}

describe('UnixWorkloadAttestor on real processes', () => {
  const attestor = new UnixWorkloadAttestor({ logger: quiet });
  const children: ChildProcess[] = [];

  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  it('attests this process: effective uid/gid, names, groups, executable path and digest', async () => {
    const selectors = await attestor.attest({ pid: process.pid, uid: process.geteuid!() });
    expect(selectors.map(formatSelector).sort()).toEqual(await expectedSelectors(process.pid));
    expect(selectors.slice(0, 1).map(formatSelector)).toEqual([`unix:uid:${process.geteuid!()}`]);
  });

  // As root (CI and this machine) the child runs as nobody with chosen groups; otherwise it keeps our credentials
  // and the test still checks every selector of a process other than the caller.
  const isRoot = process.geteuid!() === 0;
  it(`attests a child process${isRoot ? ' running as uid/gid 65534 with supplementary groups 65534,100' : ''}`, async () => {
    const child = await startSleeper(isRoot ? ['--reuid=65534', '--regid=65534', '--groups=65534,100'] : []);
    children.push(child);
    const uid = isRoot ? 65534 : process.geteuid!();

    const selectors = (await attestor.attest({ pid: child.pid, uid })).map(formatSelector);

    expect(selectors.sort()).toEqual(await expectedSelectors(child.pid));
    expect(selectors).toContain('unix:path:/usr/bin/sleep');
    if (isRoot) {
      expect(selectors).toEqual(
        expect.arrayContaining([
          'unix:uid:65534',
          'unix:gid:65534',
          'unix:supplementary_gid:65534',
          'unix:supplementary_gid:100',
        ]),
      );
    }
  });

  it('accepts the start time pinned at connect when the process is still the same', async () => {
    const child = await startSleeper();
    children.push(child);
    const startTime = await readStartTime(child.pid);
    const selectors = await attestor.attest({ pid: child.pid, uid: process.geteuid!(), startTime });
    expect(selectors.map(formatSelector)).toContain('unix:path:/usr/bin/sleep');
  });

  it('refuses a pid whose start time differs from the one pinned at connect (pid reused)', async () => {
    const child = await startSleeper();
    children.push(child);
    const startTime = (await readStartTime(child.pid)) - 1n;
    await expect(attestor.attest({ pid: child.pid, uid: process.geteuid!(), startTime })).rejects.toThrow(
      new WorkloadAttestationError(`process ${child.pid}: pid was reused since the connection was accepted`),
    );
  });

  it('refuses a process that has exited', async () => {
    const child = spawn('true', { stdio: 'ignore' });
    await once(child, 'exit');
    await expect(attestor.attest({ pid: child.pid!, uid: process.geteuid!() })).rejects.toThrow(
      `process ${child.pid}: cannot read its start time (exited?)`,
    );
  });

  it('refuses a process whose effective uid is not the connection peer uid', async () => {
    const child = await startSleeper();
    children.push(child);
    const uid = process.geteuid!();
    await expect(attestor.attest({ pid: child.pid, uid: uid + 1 })).rejects.toThrow(
      `process ${child.pid}: effective uid ${uid} differs from the connection's peer uid ${uid + 1}`,
    );
  });

  it.each([0, -1, 1.5])('refuses pid %s', async (pid) => {
    await expect(attestor.attest({ pid, uid: 0 })).rejects.toThrow(`pid: must be a positive integer, got ${pid}`);
  });
});

describe('UnixWorkloadAttestor pid reuse during attestation', () => {
  let root: string;
  const pid = 4242;
  const stat = (startTime: number) =>
    `${pid} (app) S 1 ${pid} ${pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${startTime} 0 0\n`;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sigil-proc-'));
    await mkdir(join(root, String(pid)));
    await writeFile(join(root, String(pid), 'status'), 'Uid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\nGroups:\t\n');
    await symlink('/usr/bin/sleep', join(root, String(pid), 'exe'));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('refuses when the start time changes between the reads before and after the selectors', async () => {
    await writeFile(join(root, String(pid), 'stat'), stat(100));
    // Simulates the process exiting and its pid being taken by a new process while the selectors are read.
    class ReusingAccountNames extends AccountNames {
      override async userName(uid: number): Promise<string | undefined> {
        await writeFile(join(root, String(pid), 'stat'), stat(200));
        return super.userName(uid);
      }
    }
    const attestor = new UnixWorkloadAttestor({
      procRoot: root,
      accountNames: new ReusingAccountNames(),
      logger: quiet,
    });
    await expect(attestor.attest({ pid, uid: 7 })).rejects.toThrow(`process ${pid}: pid was reused during attestation`);
  });

  it('attests when the start time is stable', async () => {
    await writeFile(join(root, String(pid), 'stat'), stat(100));
    const attestor = new UnixWorkloadAttestor({ procRoot: root, logger: quiet });
    const selectors = (await attestor.attest({ pid, uid: 7, startTime: 100n })).map(formatSelector);
    expect(selectors).toEqual(expect.arrayContaining(['unix:uid:7', 'unix:gid:8', 'unix:path:/usr/bin/sleep']));
    expect(selectors).toContain(`unix:sha256:${await sha256Of('/usr/bin/sleep')}`);
  });
});
