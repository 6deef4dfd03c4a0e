import { readFile } from 'node:fs/promises';

/**
 * Which container, and which Kubernetes pod, a process is in, from the cgroup paths the kernel lists for it in
 * `/proc/<pid>/cgroup`: the one rule the `docker` and `k8s` workload attestors share. The process cannot forge this
 * file (only whoever may create cgroups chooses their names, see {@link parseCgroupFile}); nothing the workload
 * says about itself is used.
 *
 * The path shapes, from the runtimes that write them (and SPIRE's pkg/common/containerinfo, which reads the same):
 * - kubelet, cgroupfs driver: `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` (Guaranteed QoS);
 * - kubelet, systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
 *   cri-containerd-<id>.scope` (also `crio-<id>.scope`, `docker-<id>.scope`), and containerd's
 *   `…-pod<uid>.slice:cri-containerd:<id>` form;
 * - Docker: `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd); containerd, nerdctl and
 *   Podman outside Kubernetes: `/<namespace>/<id>`, `…/nerdctl-<id>.scope`, `…/libpod-<id>.scope`;
 * - CRI-O's `crio-conmon-<id>.scope` holds conmon, the container's monitor, not the container: no identity;
 * - nested (kind, a kubelet in a container): `/kubelet/kubepods/…`, `/docker/<node id>/kubepods/…/pod<uid>/<id>`,
 *   where the container is the one after the pod;
 * - cgroup namespaces: a path seen from another namespace starts with `/..` (`0::/../crio-<id>.scope`).
 */

/** The container a process is in, as its cgroup paths name it. */
export interface ContainerIdentity {
  /** The container's ID as its runtime's API names it: 64 lower-case hex digits. */
  readonly containerId: string;
  /** The UID of the Kubernetes pod the container belongs to (`2c48913c-b29f-…`), when the path is a kubelet pod's. */
  readonly podUid?: string;
}

/** A cgroup file that names more than one container or pod, or is not a cgroup file. */
export class ContainerIdentityError extends Error {
  override readonly name = 'ContainerIdentityError';
}

/** `/proc/<pid>/cgroup` lines: `hierarchy-ID:controller-list:cgroup-path` (v1), `0::cgroup-path` (v2). */
const CGROUP_LINE = /^(\d+):([^:]*):(\/.*)$/;
/** A segment ending in a container ID, after an optional runtime prefix (`docker-`, `cri-containerd:`, …). */
const CONTAINER_SEGMENT = /^(?:(.*)[-:])?([0-9a-f]{64})(?:\.scope)?$/;
/** CRI-O's monitor process sits in `crio-conmon-<id>.scope`, next to the container's `crio-<id>.scope`. */
const CONMON_PREFIX = /(?:^|[-:])conmon$/;
/**
 * A pod UID in a segment: `pod<uid>` after a separator (`kubepods-burstable-pod…`); the systemd driver writes its
 * dashes as underscores. It ends the segment or is followed by `.slice` or a `:` (containerd's `slice:prefix:id`).
 */
const POD_SEGMENT =
  /(?:^|[-_.:])pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?::|$)/;
/**
 * systemd's per-user manager (`user@1000.service`) gets its subtree delegated: that user may create cgroups below it
 * with any name, `docker-<someone else's container id>.scope` included, and move its own processes there.
 */
const USER_DELEGATION = /^user@\d+\.service$/;

/**
 * The container (and pod) a process is in, from the text of its `/proc/<pid>/cgroup`; undefined for a process in
 * no container. Every line counts (cgroup v1 has one per hierarchy, v2 one `0::` line, hybrid both): a line whose
 * path names a pod wins over lines that name only a container (kind on cgroup v2 shows the node's own container
 * on the `0::` line), and lines that disagree are an error, as is one path that names two containers with no pod
 * between them (`/docker/<a>/docker-<b>.scope`: a container that made a cgroup named after another): which of them
 * the caller is cannot be told, and guessing could lend it another container's identity.
 *
 * A path under a systemd user delegation (`…/user@<uid>.service/…`) names no container: its user chose the names.
 *
 * @throws ContainerIdentityError when the text is not a cgroup file or names more than one container or pod
 */
export function parseCgroupFile(text: string): ContainerIdentity | undefined {
  let found: ContainerIdentity | undefined;
  for (const [index, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const match = CGROUP_LINE.exec(line);
    if (match === null) {
      throw new ContainerIdentityError(
        `line ${index + 1}: must be hierarchy-ID:controller-list:cgroup-path, got ${JSON.stringify(line)}`,
      );
    }
    const identity = identityOfPath(match[3]!);
    if (identity === undefined) continue;
    if (found === undefined || (found.podUid === undefined && identity.podUid !== undefined)) {
      found = identity;
    } else if (found.podUid !== undefined && identity.podUid === undefined) {
      continue;
    } else if (found.podUid !== identity.podUid) {
      throw new ContainerIdentityError(`the cgroup paths name two pods: ${found.podUid} and ${identity.podUid}`);
    } else if (found.containerId !== identity.containerId) {
      throw new ContainerIdentityError(
        `the cgroup paths name two containers: ${found.containerId} and ${identity.containerId}`,
      );
    }
  }
  return found;
}

/** The container one cgroup path names, if any. */
function identityOfPath(path: string): ContainerIdentity | undefined {
  const segments = path.split('/').filter((segment) => segment !== '' && segment !== '.' && segment !== '..');
  // The container is the innermost segment that ends in a container ID: a process inside a container may sit in
  // a sub-cgroup of it (`/docker/<id>/init`, systemd inside the container).
  let at = segments.length - 1;
  let match: RegExpExecArray | null = null;
  for (; at >= 0; at--) {
    match = CONTAINER_SEGMENT.exec(segments[at]!);
    if (match !== null) break;
  }
  if (match === null) return undefined;
  if (CONMON_PREFIX.test(match[1] ?? '')) return undefined;
  if (segments.slice(0, at).some((segment) => USER_DELEGATION.test(segment))) return undefined;
  const containerId = match[2]!;
  // The pod is in the container's own segment (`…-pod<uid>.slice:cri-containerd:<id>`) or the nearest one above.
  let podUid: string | undefined;
  let podAt = -1;
  const ownPod = POD_SEGMENT.exec(match[1] ?? '');
  if (ownPod !== null) {
    podUid = ownPod[1];
    podAt = at;
  } else {
    for (let index = at - 1; index >= 0; index--) {
      const pod = POD_SEGMENT.exec(segments[index]!);
      if (pod !== null) {
        podUid = pod[1];
        podAt = index;
        break;
      }
    }
  }
  // Any other container ID between the pod (or the root, without one) and the container makes the path ambiguous.
  // Above the pod are the hosts of a nested kubelet (kind's node container), which are not the caller's container.
  for (let index = at - 1; index > podAt; index--) {
    const other = CONTAINER_SEGMENT.exec(segments[index]!);
    if (other !== null) {
      throw new ContainerIdentityError(`cgroup path ${JSON.stringify(path)} names two containers: which is unclear`);
    }
  }
  return podUid === undefined ? { containerId } : { containerId, podUid: podUid.replaceAll('_', '-') };
}

/** Far beyond a real cgroup file (one line per hierarchy, each path under PATH_MAX). */
const MAX_CGROUP_FILE_BYTES = 64 * 1024;

/**
 * The container (and pod) process `pid` is in, from `<procRoot>/<pid>/cgroup`; undefined for a process in no
 * container. `procRoot` is for tests. Read once per call and kept nowhere: the caller proves that the process
 * read is the one that connected (the composite's pin check).
 *
 * @throws ContainerIdentityError naming the pid when the file cannot be read or names more than one container
 */
export async function readContainerIdentity(pid: number, procRoot = '/proc'): Promise<ContainerIdentity | undefined> {
  if (!Number.isSafeInteger(pid) || pid < 1) throw new ContainerIdentityError(`pid must be positive, got ${pid}`);
  const file = `${procRoot}/${pid}/cgroup`;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    const why = code === 'ENOENT' || code === 'ESRCH' ? 'the process has exited' : code;
    throw new ContainerIdentityError(`process ${pid}: cannot read ${file}: ${why}`, { cause: error });
  }
  if (text.length > MAX_CGROUP_FILE_BYTES) {
    throw new ContainerIdentityError(`process ${pid}: ${file} is longer than ${MAX_CGROUP_FILE_BYTES} bytes`);
  }
  try {
    return parseCgroupFile(text);
  } catch (error) {
    if (error instanceof ContainerIdentityError) {
      throw new ContainerIdentityError(`process ${pid}: ${file}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}
