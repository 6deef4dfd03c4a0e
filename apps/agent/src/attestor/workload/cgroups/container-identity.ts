import { readFile } from 'node:fs/promises';

/**
 * Which container, and which Kubernetes pod, a process is in, from the cgroup paths the kernel lists for it in
 * `/proc/<pid>/cgroup`: the one rule the `docker` and `k8s` workload attestors share. The process cannot forge this
 * file, but whoever may create cgroups chooses their names: a container with a writable cgroupfs (privileged,
 * systemd inside it, Podman `--systemd`, sysbox), a service with `Delegate=yes`, a CI runner may create a child
 * cgroup named after another pod's or container's and move itself there. It can only do so BELOW its own cgroup, so
 * the rule reads each path from the root and takes the first segment that a runtime's shape puts at that very
 * position; what lies below that segment (systemd inside the container, sub-cgroups, forgeries) is ignored, and a
 * container-looking name anywhere else gives no identity (the process counts as in no container).
 *
 * The shapes, from the runtimes that write them (and SPIRE's pkg/common/containerinfo, which reads the same), each
 * anchored at the root:
 * - kubelet, cgroupfs driver: `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/burstable/pod<uid>/<id>`,
 *   `/kubepods/pod<uid>/<id>` (Guaranteed QoS has no QoS segment);
 * - kubelet, systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
 *   <runtime>-<id>.scope` (`cri-containerd-`, `crio-`, `docker-`), `/kubepods.slice/kubepods-pod<uid_>.slice/
 *   <runtime>-<id>.scope` (Guaranteed); containerd's `kubepods[-<qos>]-pod<uid_>.slice:cri-containerd:<id>` segment
 *   at the root or in containerd's own service, `/system.slice/containerd.service/…`;
 * - Docker: `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd); Podman:
 *   `/machine.slice/libpod-<id>.scope`; containerd and nerdctl outside Kubernetes: `/<namespace>/<id>`,
 *   `/system.slice/nerdctl-<id>.scope`;
 * - CRI-O's `crio-conmon-<id>.scope` holds conmon, the container's monitor, not the container: no identity;
 * - nested (kind, a kubelet in a container: `/docker/<node id>/kubepods/…`, `/kubelet/kubepods/…`): the part before
 *   the kubelet's tree is skipped only when it is the agent's own nesting prefix ({@link nestingPrefixOf}), so a
 *   workload cannot put a kubepods tree of its own making under its container;
 * - cgroup namespaces: a path seen from another namespace starts with `/..` (`0::/../crio-<id>.scope`); it is
 *   relative to the reader's namespace root, so its first segments are matched against the end of a shape.
 */

/** The container a process is in, as its cgroup paths name it. */
export interface ContainerIdentity {
  /** The container's ID as its runtime's API names it: 64 lower-case hex digits. */
  readonly containerId: string;
  /** The UID of the Kubernetes pod the container belongs to (`2c48913c-b29f-…`), when the path is a kubelet pod's. */
  readonly podUid?: string;
}

/** How to read a cgroup file. */
export interface CgroupParseOptions {
  /**
   * The agent's own nesting prefix (`/docker/<node id>` for an agent in a pod of kind's node container), as
   * {@link nestingPrefixOf} reads it from the agent's own cgroup file: a path that starts with it is read from
   * there. Empty (the default) for an agent that is not nested.
   */
  readonly nestingPrefix?: string;
}

/** A cgroup file that names more than one container or pod, or is not a cgroup file. */
export class ContainerIdentityError extends Error {
  override readonly name = 'ContainerIdentityError';
}

/** `/proc/<pid>/cgroup` lines: `hierarchy-ID:controller-list:cgroup-path` (v1), `0::cgroup-path` (v2). */
const CGROUP_LINE = /^(\d+):([^:]*):(\/.*)$/;

const ID = '(?<id>[0-9a-f]{64})';
const UID = '(?<pod>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})';
/** The systemd driver writes the pod UID's dashes as underscores (a dash nests slices). */
const UID_ = '(?<pod>[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12})';
const QOS = '(?<qos>besteffort|burstable)';
/** A container's scope under a kubelet pod's slice; CRI-O's `crio-conmon-<id>.scope` is not one. */
const POD_SCOPE = `(?:cri-containerd|crio|docker)-${ID}\\.scope`;
/** containerd's systemd `slice:prefix:name` cgroups path, created as one segment. */
const CONTAINERD_SLICE = `kubepods(?:-${QOS})?-pod${UID_}\\.slice:cri-containerd:${ID}`;
/** A containerd namespace (containerd's identifiers rule). */
const NAMESPACE = '[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*';

/**
 * The runtimes' shapes, segment by segment from the root; the last segment names the container. A `qos` named in
 * two segments must be the same in both (systemd nests `kubepods-burstable-pod….slice` in `kubepods-burstable.slice`).
 */
const SHAPES: readonly (readonly RegExp[])[] = (
  [
    ['kubepods', QOS, `pod${UID}`, ID],
    ['kubepods', `pod${UID}`, ID],
    ['kubepods\\.slice', `kubepods-${QOS}\\.slice`, `kubepods-${QOS}-pod${UID_}\\.slice`, POD_SCOPE],
    ['kubepods\\.slice', `kubepods-pod${UID_}\\.slice`, POD_SCOPE],
    [CONTAINERD_SLICE],
    ['system\\.slice', 'containerd\\.service', CONTAINERD_SLICE],
    ['system\\.slice', `(?:docker|nerdctl)-${ID}\\.scope`],
    ['machine\\.slice', `libpod-${ID}\\.scope`],
    [NAMESPACE, ID],
  ] as const
).map((shape) => shape.map((segment) => new RegExp(`^${segment}$`)));

/** A cgroup path's segments, and whether it is relative to the reader's cgroup namespace (it started with `..`). */
interface Segments {
  readonly names: readonly string[];
  readonly relative: boolean;
}

function segmentsOf(path: string): Segments {
  const names: string[] = [];
  let relative = false;
  for (const name of path.split('/')) {
    if (name === '' || name === '.') continue;
    if (name === '..') {
      // The kernel writes `..` only at the start, for a cgroup outside the reader's namespace.
      if (names.length > 0) throw new ContainerIdentityError(`cgroup path ${JSON.stringify(path)} has .. inside it`);
      relative = true;
      continue;
    }
    names.push(name);
  }
  return { names, relative };
}

/**
 * The outermost container a path's segments name by a runtime's shape anchored at the first segment; a relative
 * path's first segment may stand anywhere in a shape (its start is above the reader's namespace root, unseen).
 */
function matchShapes(names: readonly string[], relative: boolean): ContainerIdentity | undefined {
  let bestAt = Number.POSITIVE_INFINITY;
  let best: ContainerIdentity | undefined;
  for (const shape of SHAPES) {
    for (let cut = 0; cut < (relative ? shape.length : 1); cut++) {
      const window = shape.slice(cut);
      // The container's segment: only the outermost one counts, what is below it was made by the container.
      const at = window.length - 1;
      if (names.length < window.length || at > bestAt) continue;
      const identity = matchWindow(window, names);
      if (identity === undefined) continue;
      // The same segment read by two shapes (a relative `pod<uid>/<id>` is also `<namespace>/<id>`): the one that
      // names the pod says more.
      if (best?.podUid !== undefined && at === bestAt) continue;
      bestAt = at;
      best = identity;
    }
  }
  return best;
}

/** The container `names` name when their first segments have the shape of `window`, if they do. */
function matchWindow(window: readonly RegExp[], names: readonly string[]): ContainerIdentity | undefined {
  let id: string | undefined;
  let pod: string | undefined;
  let qos: string | undefined;
  for (const [index, pattern] of window.entries()) {
    const match = pattern.exec(names[index]!);
    if (match === null) return undefined;
    const groups = match.groups ?? {};
    if (groups.qos !== undefined) {
      if (qos !== undefined && qos !== groups.qos) return undefined;
      qos = groups.qos;
    }
    pod = groups.pod ?? pod;
    id = groups.id ?? id;
  }
  if (id === undefined) return undefined;
  return pod === undefined ? { containerId: id } : { containerId: id, podUid: pod.replaceAll('_', '-') };
}

/** The container one cgroup path names, if any, read from the root (after the agent's nesting prefix). */
function identityOfPath(path: string, prefix: readonly string[]): ContainerIdentity | undefined {
  const { names, relative } = segmentsOf(path);
  const nested = !relative && prefix.length > 0 && prefix.every((name, index) => names[index] === name);
  return matchShapes(nested ? names.slice(prefix.length) : names, relative);
}

function cgroupPaths(text: string): string[] {
  const paths: string[] = [];
  for (const [index, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const match = CGROUP_LINE.exec(line);
    if (match === null) {
      throw new ContainerIdentityError(
        `line ${index + 1}: must be hierarchy-ID:controller-list:cgroup-path, got ${JSON.stringify(line)}`,
      );
    }
    paths.push(match[3]!);
  }
  return paths;
}

/**
 * The container (and pod) a process is in, from the text of its `/proc/<pid>/cgroup`; undefined for a process in
 * no container. Every line counts (cgroup v1 has one per hierarchy, v2 one `0::` line, hybrid both): every line that
 * names a container must name the same one, and lines that name a pod the same pod (a line without the pod is fine
 * for that same container); anything else is an error, since which of them the caller is cannot be told.
 *
 * @throws ContainerIdentityError when the text is not a cgroup file or its lines name different containers or pods
 */
export function parseCgroupFile(text: string, options: CgroupParseOptions = {}): ContainerIdentity | undefined {
  const nestingPrefix = options.nestingPrefix ?? '';
  const { names: prefix, relative } = segmentsOf(nestingPrefix);
  if (relative || (nestingPrefix !== '' && !nestingPrefix.startsWith('/'))) {
    throw new ContainerIdentityError(
      `nesting prefix must be an absolute cgroup path, got ${JSON.stringify(nestingPrefix)}`,
    );
  }
  let containerId: string | undefined;
  let podUid: string | undefined;
  for (const path of cgroupPaths(text)) {
    const identity = identityOfPath(path, prefix);
    if (identity === undefined) continue;
    if (containerId !== undefined && containerId !== identity.containerId) {
      throw new ContainerIdentityError(
        `the cgroup paths name two containers: ${containerId} and ${identity.containerId}`,
      );
    }
    containerId = identity.containerId;
    if (identity.podUid === undefined) continue;
    if (podUid !== undefined && podUid !== identity.podUid) {
      throw new ContainerIdentityError(`the cgroup paths name two pods: ${podUid} and ${identity.podUid}`);
    }
    podUid = identity.podUid;
  }
  if (containerId === undefined) return undefined;
  return podUid === undefined ? { containerId } : { containerId, podUid };
}

/**
 * The agent's nesting prefix, from the text of its own `/proc/self/cgroup`: the path before the kubelet's tree
 * (`kubepods…`) that holds the agent's own pod (`/docker/<node id>` in kind, `/kubelet` for a kubelet run in a
 * cgroup of that name), or `` for an agent in no pod or in a pod at the root. Only a path that starts with it may
 * have a kubelet's tree below a container-looking segment.
 *
 * @throws ContainerIdentityError when the text is not a cgroup file or its lines give different prefixes
 */
export function nestingPrefixOf(text: string): string {
  let found: string | undefined;
  for (const path of cgroupPaths(text)) {
    const { names, relative } = segmentsOf(path);
    if (relative) continue;
    // The first position from which the rest of the path is a kubelet pod's container (the agent's own pod).
    for (let start = 0; start < names.length; start++) {
      if (matchShapes(names.slice(start), false)?.podUid === undefined) continue;
      const prefix = names
        .slice(0, start)
        .map((name) => `/${name}`)
        .join('');
      if (found !== undefined && found !== prefix) {
        throw new ContainerIdentityError(`the cgroup paths nest the agent's pod under ${found} and ${prefix}`);
      }
      found = prefix;
      break;
    }
  }
  return found ?? '';
}

/** Far beyond a real cgroup file (one line per hierarchy, each path under PATH_MAX). */
const MAX_CGROUP_FILE_BYTES = 64 * 1024;

async function readCgroupFile(file: string): Promise<string> {
  const text = await readFile(file, 'utf8');
  if (text.length > MAX_CGROUP_FILE_BYTES) {
    throw new ContainerIdentityError(`${file} is longer than ${MAX_CGROUP_FILE_BYTES} bytes`);
  }
  return text;
}

/** The agent's nesting prefix by procfs root, read once (a failed read is tried again next time). */
const nestingPrefixes = new Map<string, Promise<string>>();

/**
 * The agent's own nesting prefix, from `<procRoot>/self/cgroup` (read once per `procRoot`); `` when that file does
 * not exist (no cgroups: nothing is nested).
 */
export function agentNestingPrefix(procRoot = '/proc'): Promise<string> {
  let prefix = nestingPrefixes.get(procRoot);
  if (prefix === undefined) {
    const file = `${procRoot}/self/cgroup`;
    prefix = readCgroupFile(file).then(
      (text) => {
        try {
          return nestingPrefixOf(text);
        } catch (error) {
          throw new ContainerIdentityError(`the agent's own ${file}: ${(error as Error).message}`, { cause: error });
        }
      },
      (error: unknown) => {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
        if (error instanceof ContainerIdentityError) throw error;
        const code = (error as NodeJS.ErrnoException).code ?? 'error';
        throw new ContainerIdentityError(`cannot read the agent's own ${file}: ${code}`, { cause: error });
      },
    );
    prefix.catch(() => nestingPrefixes.delete(procRoot));
    nestingPrefixes.set(procRoot, prefix);
  }
  return prefix;
}

/**
 * The container (and pod) process `pid` is in, from `<procRoot>/<pid>/cgroup` read with the agent's own nesting
 * prefix ({@link agentNestingPrefix}); undefined for a process in no container. `procRoot` is for tests. Read once
 * per call and kept nowhere: the caller proves that the process read is the one that connected (the composite's
 * pin check).
 *
 * @throws ContainerIdentityError naming the pid when the file cannot be read or names more than one container
 */
export async function readContainerIdentity(pid: number, procRoot = '/proc'): Promise<ContainerIdentity | undefined> {
  if (!Number.isSafeInteger(pid) || pid < 1) throw new ContainerIdentityError(`pid must be positive, got ${pid}`);
  const nestingPrefix = await agentNestingPrefix(procRoot);
  const file = `${procRoot}/${pid}/cgroup`;
  let text: string;
  try {
    text = await readCgroupFile(file);
  } catch (error) {
    if (error instanceof ContainerIdentityError) {
      throw new ContainerIdentityError(`process ${pid}: ${error.message}`, { cause: error });
    }
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    const why = code === 'ENOENT' || code === 'ESRCH' ? 'the process has exited' : code;
    throw new ContainerIdentityError(`process ${pid}: cannot read ${file}: ${why}`, { cause: error });
  }
  try {
    return parseCgroupFile(text, { nestingPrefix });
  } catch (error) {
    if (error instanceof ContainerIdentityError) {
      throw new ContainerIdentityError(`process ${pid}: ${file}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}
