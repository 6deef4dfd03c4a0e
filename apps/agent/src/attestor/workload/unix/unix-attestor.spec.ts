import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import {
  type FileHandle,
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AccountNames } from './account-names.js';
import { ExecutableDigests, sha256OfFile } from './executable-digest.js';
import { readStartTime } from './proc.js';
import { formatSelector } from '@sigil/runtime';
import { isRoot, makeSetgidSleep, startSleepWithPid } from '../../../../../../test/support/relay-caller.js';
import { PidFd } from '../../../endpoints/pidfd.js';
import { UnixWorkloadAttestor } from './unix-attestor.js';
import { WorkloadAttestationError, type WorkloadCaller } from '../workload-attestor.js';

const quiet = { debug: () => undefined, warn: () => undefined };

async function sha256Of(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** id → name of every account NSS enumerates, from `getent(1)`, not from the code under test. */
function names(database: 'passwd' | 'group'): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of execFileSync('getent', [database], { encoding: 'utf8' }).split('\n')) {
    const [name, , id] = line.split(':');
    if (name && id && !names.has(Number(id))) names.set(Number(id), name);
  }
  return names;
}

/** The selectors `pid` should get, worked out from procfs and getent(1) without the code under test's parsers. */
async function expectedSelectors(pid: number): Promise<string[]> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (key: string) => new RegExp(`^${key}:(.*)$`, 'm').exec(status)![1]!.trim().split(/\s+/).filter(Boolean);
  const [uid, gid] = [Number(field('Uid')[1]), Number(field('Gid')[1])];
  const users = names('passwd');
  const groups = names('group');
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

const pins: PidFd[] = [];
afterAll(() => pins.splice(0).forEach((pin) => pin.close()));

/** `pid` as the Workload API server would hand it over: pinned, with its start time and the given ids. */
async function caller(
  pid: number,
  ids: { uid?: number; gid?: number; startTime?: bigint } = {},
): Promise<WorkloadCaller> {
  const pin = PidFd.open(pid);
  pins.push(pin);
  return {
    pid,
    uid: ids.uid ?? process.geteuid!(),
    gid: ids.gid ?? process.getegid!(),
    startTime: ids.startTime ?? (await readStartTime(pid)),
    process: pin,
  };
}

/** Starts `sleep`, optionally through setpriv, and waits until the child has exec'd into it. */
async function startSleeper(setprivArgs: string[] = [], executable = 'sleep'): Promise<ChildProcess & { pid: number }> {
  const child =
    setprivArgs.length === 0
      ? spawn(executable, ['30'], { stdio: 'ignore' })
      : spawn('setpriv', [...setprivArgs, executable, '30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const pid = child.pid!;
  // Until exec completes, /proc/<pid>/exe still points at node (or setpriv).
  for (let attempt = 0; attempt < 200; attempt++) {
    if ((await readlink(`/proc/${pid}/exe`).catch(() => '')).endsWith('/sleep')) break;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return child as ChildProcess & { pid: number };
}

const needsRoot = '(root only: runs a process as another user, makes a setgid file)';

describe('UnixWorkloadAttestor on real processes', () => {
  const attestor = new UnixWorkloadAttestor({ logger: quiet });
  const children: ChildProcess[] = [];

  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  it('attests this process: effective uid/gid, names, groups, executable path and digest', async () => {
    const selectors = await attestor.attest(await caller(process.pid));
    expect(selectors.map(formatSelector).sort()).toEqual(await expectedSelectors(process.pid));
    expect(selectors.slice(0, 1).map(formatSelector)).toEqual([`unix:uid:${process.geteuid!()}`]);
  });

  it('attests a child process: every selector of a process other than the caller', async () => {
    const child = await startSleeper();
    children.push(child);
    const selectors = (await attestor.attest(await caller(child.pid))).map(formatSelector);
    expect(selectors.sort()).toEqual(await expectedSelectors(child.pid));
    expect(selectors).toContain('unix:path:/usr/bin/sleep');
  });

  it('reads a process anew on every call: after it execs another binary (same pid, same start time), its next attestation names the new one', async () => {
    // The case that rules out caching an attestation by pid and start time (bench/README.md, Workload API per-call
    // cost): exec keeps both, and a connection opened before it stays pinned to the same process.
    const shell = spawn('sh', ['-c', 'read line; exec sleep 30'], { stdio: ['pipe', 'ignore', 'ignore'] });
    children.push(shell);
    await once(shell, 'spawn');
    const pid = shell.pid!;
    const pinned = await caller(pid);
    const before = (await attestor.attest(pinned)).map(formatSelector);
    const shellPath = await readlink(`/proc/${pid}/exe`);
    expect(shellPath.endsWith('/sleep')).toBe(false);
    expect(before).toContain(`unix:path:${shellPath}`);
    expect(before).toContain(`unix:sha256:${await sha256Of(shellPath)}`);
    shell.stdin!.end('go\n');
    for (let attempt = 0; attempt < 400; attempt++) {
      if ((await readlink(`/proc/${pid}/exe`).catch(() => '')).endsWith('/sleep')) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(await readStartTime(pid)).toBe(pinned.startTime);
    const after = (await attestor.attest(pinned)).map(formatSelector);
    expect(after).toContain('unix:path:/usr/bin/sleep');
    expect(after).toContain(`unix:sha256:${await sha256Of('/usr/bin/sleep')}`);
    expect(after).not.toContain(`unix:path:${shellPath}`);
  });

  it.skipIf(!isRoot)(
    `attests a child running as uid/gid 65534 with supplementary groups 65534,100 ${needsRoot}`,
    async () => {
      const child = await startSleeper(['--reuid=65534', '--regid=65534', '--groups=65534,100']);
      children.push(child);
      const selectors = (await attestor.attest(await caller(child.pid, { uid: 65534, gid: 65534 }))).map(
        formatSelector,
      );
      expect(selectors.sort()).toEqual(await expectedSelectors(child.pid));
      expect(selectors).toEqual(
        expect.arrayContaining([
          'unix:uid:65534',
          'unix:gid:65534',
          'unix:supplementary_gid:65534',
          'unix:supplementary_gid:100',
          'unix:path:/usr/bin/sleep',
        ]),
      );
    },
  );

  describe('a setgid executable', () => {
    let setgidSleep: string;
    beforeAll(async () => {
      if (!isRoot) return;
      // A copy of sleep that runs with gid 100 whoever starts it.
      const dir = await mkdtemp(join(tmpdir(), 'sigil-setgid-'));
      await chmod(dir, 0o755);
      setgidSleep = await makeSetgidSleep(dir, 100);
    });
    afterAll(async () => {
      if (setgidSleep !== undefined) await rm(dirname(setgidSleep), { recursive: true, force: true });
    });

    it.skipIf(!isRoot)(
      `refuses a caller whose gid changed since it connected (setgid exec keeping the connection) ${needsRoot}`,
      async () => {
        const child = await startSleeper(['--reuid=65534', '--regid=65534', '--clear-groups'], setgidSleep);
        children.push(child);
        // The kernel reported 65534:65534 when the connection was made, before the exec.
        await expect(attestor.attest(await caller(child.pid, { uid: 65534, gid: 65534 }))).rejects.toThrow(
          `process ${child.pid}: effective gid 100 differs from the connection's peer gid 65534`,
        );
      },
    );

    it.skipIf(!isRoot)(
      `refuses a non-dumpable caller even when uid and gid match (/proc/<pid>/* owned by root) ${needsRoot}`,
      async () => {
        const child = await startSleeper(['--reuid=65534', '--regid=65534', '--clear-groups'], setgidSleep);
        children.push(child);
        expect((await stat(`/proc/${child.pid}/status`)).uid).toBe(0);
        await expect(attestor.attest(await caller(child.pid, { uid: 65534, gid: 100 }))).rejects.toThrow(
          `process ${child.pid}: /proc/${child.pid}/status is owned by 0:0, not by the caller's 65534:100: the process is ` +
            'not dumpable (a setuid/setgid exec), so it is refused',
        );
      },
    );
  });

  it.skipIf(!isRoot)(
    `refuses a reused pid even when the new process has the pinned start time (root only: sets ns_last_pid)`,
    async () => {
      const first = await startSleeper();
      const pinned = await caller(first.pid);
      first.kill('SIGKILL');
      await once(first, 'exit');
      // Make the kernel hand the same pid to a new process.
      children.push(await startSleepWithPid(first.pid));
      // Start times count clock ticks, so a pid reused within one tick has the same one: only the pin tells.
      const sameTick = { ...pinned, startTime: await readStartTime(first.pid) };
      await expect(attestor.attest(sameTick)).rejects.toThrow(
        `process ${first.pid}: the process that connected has exited since it connected`,
      );
    },
  );

  it('refuses a process whose effective gid is not the connection peer gid', async () => {
    const child = await startSleeper();
    children.push(child);
    const gid = process.getegid!();
    await expect(attestor.attest(await caller(child.pid, { gid: gid + 1 }))).rejects.toThrow(
      `process ${child.pid}: effective gid ${gid} differs from the connection's peer gid ${gid + 1}`,
    );
  });

  it('accepts the start time pinned at connect when the process is still the same', async () => {
    const child = await startSleeper();
    children.push(child);
    const selectors = await attestor.attest(await caller(child.pid));
    expect(selectors.map(formatSelector)).toContain('unix:path:/usr/bin/sleep');
  });

  it('refuses a pid whose start time differs from the one pinned at connect (pid reused)', async () => {
    const child = await startSleeper();
    children.push(child);
    const startTime = (await readStartTime(child.pid)) - 1n;
    await expect(attestor.attest(await caller(child.pid, { startTime }))).rejects.toThrow(
      new WorkloadAttestationError(`process ${child.pid}: pid was reused since the connection was accepted`),
    );
  });

  it('refuses a process that has exited, even when its pid and start time were pinned while it ran', async () => {
    const child = await startSleeper();
    const exited = await caller(child.pid);
    child.kill('SIGKILL');
    await once(child, 'exit');
    await expect(attestor.attest(exited)).rejects.toThrow(
      `process ${child.pid}: the process that connected has exited since it connected`,
    );
  });

  it('refuses a process whose effective uid is not the connection peer uid', async () => {
    const child = await startSleeper();
    children.push(child);
    const uid = process.geteuid!();
    await expect(attestor.attest(await caller(child.pid, { uid: uid + 1 }))).rejects.toThrow(
      `process ${child.pid}: effective uid ${uid} differs from the connection's peer uid ${uid + 1}`,
    );
  });

  it.each([0, -1, 1.5])('refuses pid %s', async (pid) => {
    await expect(
      attestor.attest({ pid, uid: 0, gid: 0, startTime: 1n, process: { isAlive: () => true } }),
    ).rejects.toThrow(`pid: must be a positive integer, got ${pid}`);
  });
});

describe('UnixWorkloadAttestor executable digests', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  /** Digests that count the files they hash (through the real SHA-256). */
  function countingDigests(options: { uidQuotaBytesPerMinute?: number; warnings?: string[] } = {}) {
    const hashed: FileHandle[] = [];
    const digests = new ExecutableDigests({
      hashFile: (file) => {
        hashed.push(file);
        return sha256OfFile(file);
      },
      ...(options.uidQuotaBytesPerMinute !== undefined && { uidQuotaBytesPerMinute: options.uidQuotaBytesPerMinute }),
      logger: {
        warn: (message: string | { msg: string }) =>
          void options.warnings?.push(typeof message === 'string' ? message : message.msg),
      },
    });
    return { digests, hashed };
  }

  const sha256Selectors = (selectors: string[]) => selectors.filter((selector) => selector.startsWith('unix:sha256:'));

  it('hashes nothing while no entry uses unix:sha256, and hashes once one does', async () => {
    const child = await startSleeper();
    children.push(child);
    const { digests, hashed } = countingDigests();
    let needed = false;
    const attestor = new UnixWorkloadAttestor({ digests, needsDigest: () => needed, logger: quiet });
    for (let i = 0; i < 3; i++) {
      const selectors = (await attestor.attest(await caller(child.pid))).map(formatSelector);
      expect(selectors).toContain('unix:path:/usr/bin/sleep');
      expect(sha256Selectors(selectors)).toEqual([]);
    }
    expect(hashed).toHaveLength(0);
    needed = true;
    const selectors = (await attestor.attest(await caller(child.pid))).map(formatSelector);
    expect(sha256Selectors(selectors)).toEqual([`unix:sha256:${await sha256Of('/usr/bin/sleep')}`]);
    expect(hashed).toHaveLength(1);
  });

  it('hashes an executable once for concurrent attestations of its processes', async () => {
    const sleepers = await Promise.all([startSleeper(), startSleeper(), startSleeper()]);
    children.push(...sleepers);
    const { digests, hashed } = countingDigests();
    const attestor = new UnixWorkloadAttestor({ digests, needsDigest: () => true, logger: quiet });
    const callers = await Promise.all(sleepers.flatMap((child) => [caller(child.pid), caller(child.pid)]));
    const results = await Promise.all(callers.map((process) => attestor.attest(process)));
    const expected = `unix:sha256:${await sha256Of('/usr/bin/sleep')}`;
    for (const selectors of results) expect(sha256Selectors(selectors.map(formatSelector))).toEqual([expected]);
    expect(hashed).toHaveLength(1);
  });

  it("charges the caller's uid: over its quota the caller gets every selector but unix:sha256", async () => {
    const child = await startSleeper();
    children.push(child);
    const warnings: string[] = [];
    const { digests, hashed } = countingDigests({ uidQuotaBytesPerMinute: 0, warnings });
    const attestor = new UnixWorkloadAttestor({ digests, needsDigest: () => true, logger: quiet });
    const selectors = (await attestor.attest(await caller(child.pid))).map(formatSelector);
    const withoutDigest = (await expectedSelectors(child.pid)).filter(
      (selector) => !selector.startsWith('unix:sha256:'),
    );
    expect(selectors.sort()).toEqual(withoutDigest);
    expect(hashed).toHaveLength(0);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`^uid ${process.geteuid!()}: .* over the 0-byte quota per uid and minute`));
  });
});

describe('UnixWorkloadAttestor pid reuse during attestation', () => {
  let root: string;
  const pid = 4242;
  const [uid, gid] = [process.geteuid!(), process.getegid!()];
  // The fake process is "alive": only procfs contents are simulated here.
  const fakeCaller = { pid, uid, gid, startTime: 100n, process: { isAlive: () => true } };
  const stat = (startTime: number) =>
    `${pid} (app) S 1 ${pid} ${pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${startTime} 0 0\n`;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sigil-proc-'));
    await mkdir(join(root, String(pid)));
    await writeFile(
      join(root, String(pid), 'status'),
      `Uid:\t${uid}\t${uid}\t${uid}\t${uid}\nGid:\t${gid}\t${gid}\t${gid}\t${gid}\nGroups:\t\n`,
    );
    await symlink('/usr/bin/sleep', join(root, String(pid), 'exe'));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('accepts the procfs of its own pid namespace and refuses another one (HOST_PROC of a container)', async () => {
    await expect(new UnixWorkloadAttestor({ logger: quiet }).checkProcRoot()).resolves.toBeUndefined();
    await symlink(String(process.pid + 1), join(root, 'self'));
    await expect(new UnixWorkloadAttestor({ procRoot: root, logger: quiet }).checkProcRoot()).rejects.toThrow(
      `procfs ${root}: it names this agent pid ${process.pid + 1}, not ${process.pid}: it belongs to another pid namespace`,
    );
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
    await expect(attestor.attest(fakeCaller)).rejects.toThrow(`process ${pid}: pid was reused during attestation`);
  });

  it('attests when the start time is stable', async () => {
    await writeFile(join(root, String(pid), 'stat'), stat(100));
    const attestor = new UnixWorkloadAttestor({ procRoot: root, logger: quiet });
    const selectors = (await attestor.attest(fakeCaller)).map(formatSelector);
    expect(selectors).toEqual(
      expect.arrayContaining([`unix:uid:${uid}`, `unix:gid:${gid}`, 'unix:path:/usr/bin/sleep']),
    );
    expect(selectors).toContain(`unix:sha256:${await sha256Of('/usr/bin/sleep')}`);
  });
});
