/**
 * Real cgroup membership for tests of the container-aware workload attestors (`docker`, `k8s`): as root, create
 * cgroups whose paths have the shapes container runtimes create (`/kubepods/besteffort/pod<uid>/<id>`,
 * `/system.slice/docker-<id>.scope`, …) on this machine's cgroup v1 and v2 hierarchies, and move a real process into
 * one by writing its pid to `cgroup.procs`, as the runtimes do. The kernel then lists that path in
 * `/proc/<pid>/cgroup`, which is all the attestors read.
 *
 * Which hierarchies exist comes from `/proc/self/mountinfo`: cgroup v2 is the `cgroup2` mount (`/sys/fs/cgroup` on a
 * v2-only host, `/sys/fs/cgroup/unified` on a hybrid one); cgroup v1 is the hierarchy with the `pids` controller
 * (else `name=systemd`), which no test depends on for its limits. {@link cgroupSkipReason} says why a test cannot run
 * here (not root, a hierarchy missing or read-only), for its title.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type CgroupVersion = 'v1' | 'v2';

interface Hierarchy {
  /** Where it is mounted. */
  readonly mountPoint: string;
  /** How `/proc/<pid>/cgroup` names it: `0` (v2), or `<id>:<controllers>` of a v1 line. */
  readonly matches: (line: string) => boolean;
}

function findHierarchies(): Partial<Record<CgroupVersion, Hierarchy>> {
  let mountinfo: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return {};
  }
  const found: Partial<Record<CgroupVersion, Hierarchy>> = {};
  let systemdV1: Hierarchy | undefined;
  for (const line of mountinfo.split('\n')) {
    // <id> <parent> <major:minor> <root> <mount point> <options> [optional fields…] - <fs type> <source> <super options>
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const [fsType, , superOptions = ''] = right.split(' ');
    const root = fields[3];
    const mountPoint = fields[4];
    // Only a mount of a hierarchy's root shows the paths the kernel lists for a process.
    if (mountPoint === undefined || root !== '/') continue;
    if (fsType === 'cgroup2' && found.v2 === undefined) {
      found.v2 = { mountPoint, matches: (entry) => entry.startsWith('0::') };
    } else if (fsType === 'cgroup') {
      const options = superOptions.split(',');
      const controller = (entry: string): string[] => entry.split(':')[1]?.split(',') ?? [];
      if (options.includes('pids') && found.v1 === undefined) {
        found.v1 = { mountPoint, matches: (entry) => controller(entry).includes('pids') };
      } else if (options.includes('name=systemd')) {
        systemdV1 = { mountPoint, matches: (entry) => controller(entry).includes('name=systemd') };
      }
    }
  }
  if (found.v1 === undefined && systemdV1 !== undefined) found.v1 = systemdV1;
  return found;
}

const hierarchies = findHierarchies();
const isRoot = process.geteuid?.() === 0;

/**
 * Why real cgroups of `version` cannot be created here, for a skipped test's title (`skipped: needs root to create
 * cgroups`), or undefined when they can.
 */
export function cgroupSkipReason(version: CgroupVersion): string | undefined {
  if (!isRoot) return 'needs root to create cgroups';
  const hierarchy = hierarchies[version];
  if (hierarchy === undefined) return `no cgroup ${version} hierarchy is mounted`;
  const probe = join(hierarchy.mountPoint, `sigil-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(probe);
    rmdirSync(probe);
  } catch (error) {
    return `cannot create a cgroup ${version} group: ${(error as NodeJS.ErrnoException).code ?? 'error'}`;
  }
  return undefined;
}

/** A random container ID as runtimes make them: 64 lower-case hex digits. */
export function randomContainerId(): string {
  return randomBytes(32).toString('hex');
}

/** A random Kubernetes pod UID (a UUID). */
export function randomPodUid(): string {
  return randomUUID();
}

/** A process placed in a cgroup; `release()` moves it back where it was and removes the groups made for it. */
export interface CgroupPlacement {
  readonly pid: number;
  /** The path as `/proc/<pid>/cgroup` lists it (relative to the hierarchy's root). */
  readonly path: string;
  release(): void;
}

/**
 * Creates cgroup `path` (`/kubepods/besteffort/pod<uid>/<id>`: its missing ancestors too) in the `version`
 * hierarchy and moves process `pid` into it. Throws when that cannot be done: check {@link cgroupSkipReason} first.
 */
export function placeInCgroup(pid: number, version: CgroupVersion, path: string): CgroupPlacement {
  const hierarchy = hierarchies[version];
  if (hierarchy === undefined) throw new Error(`no cgroup ${version} hierarchy is mounted`);
  if (!path.startsWith('/') || path.split('/').some((segment) => segment === '..' || segment === '.')) {
    throw new Error(`cgroup path must be absolute without . or .. segments, got ${JSON.stringify(path)}`);
  }
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find(hierarchy.matches);
  if (line === undefined) throw new Error(`process ${pid} is in no cgroup ${version} group`);
  const original = line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
  const created: string[] = [];
  let directory = hierarchy.mountPoint;
  for (const segment of path.split('/').filter(Boolean)) {
    directory = join(directory, segment);
    try {
      mkdirSync(directory);
      created.push(directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        removeGroups(created);
        throw error;
      }
    }
  }
  try {
    writeFileSync(join(directory, 'cgroup.procs'), `${pid}\n`);
  } catch (error) {
    removeGroups(created);
    throw error;
  }
  let released = false;
  return {
    pid,
    path,
    release: () => {
      if (released) return;
      released = true;
      try {
        writeFileSync(join(hierarchy.mountPoint, original, 'cgroup.procs'), `${pid}\n`);
      } catch (error) {
        // ESRCH: it has exited, which leaves the group too.
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      }
      removeGroups(created);
    },
  };
}

/** Removes groups this helper created, deepest first; one another test still uses (EBUSY, ENOTEMPTY) stays. */
function removeGroups(created: readonly string[]): void {
  for (const directory of [...created].reverse()) {
    try {
      rmdirSync(directory);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? '';
      if (!['EBUSY', 'ENOTEMPTY', 'ENOENT'].includes(code)) throw error;
    }
  }
}

/** A real child process (`sleep`) in a cgroup of the given shape; `stop()` kills it and removes the groups. */
export interface CgroupChild {
  readonly pid: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

/** Spawns `sleep` and moves it into cgroup `path` of the `version` hierarchy. */
export async function spawnInCgroup(version: CgroupVersion, path: string): Promise<CgroupChild> {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const pid = child.pid!;
  let placement: CgroupPlacement;
  try {
    placement = placeInCgroup(pid, version, path);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid,
    child,
    stop: async () => {
      placement.release();
      child.kill('SIGKILL');
      await exited;
    },
  };
}
