/**
 * The kubelet's pod list (`GET /pods`: a v1 `PodList`), read as far as the k8s attestor needs it, and the lookup of
 * a container in it. Only the fields below are read; everything else of a pod is ignored. A field of the wrong type
 * reads as absent, so a surprising pod can only lose selectors, never gain some.
 */

/** `spec.containers[]`, `spec.initContainers[]`, `spec.ephemeralContainers[]`: what the pod asked for. */
export interface PodContainerSpec {
  readonly name: string;
  /** The image reference as the pod spec names it (`nginx:1.27`, `registry/app@sha256:…`). */
  readonly image: string | undefined;
}

/** `status.containerStatuses[]` and its init/ephemeral siblings: what the kubelet reports. */
export interface PodContainerStatus {
  readonly name: string;
  /** `<runtime>://<id>` (`containerd://…`, `docker://…`, `cri-o://…`); absent until the runtime created it. */
  readonly containerId: string | undefined;
  /** The image the runtime reports: a tag of the digest, which need not be the one the spec names. */
  readonly image: string | undefined;
  /** The image digest reference the runtime reports (`docker.io/library/nginx@sha256:…`). */
  readonly imageId: string | undefined;
}

/** Which list of the pod a container is in. */
export type ContainerKind = 'container' | 'init' | 'ephemeral';

export interface PodOwner {
  readonly kind: string;
  readonly name: string;
  readonly uid: string | undefined;
}

/** One pod of the kubelet's list, reduced to what selectors are made of. */
export interface KubeletPod {
  readonly uid: string;
  readonly name: string | undefined;
  readonly namespace: string | undefined;
  readonly labels: ReadonlyMap<string, string>;
  readonly owners: readonly PodOwner[];
  readonly serviceAccountName: string | undefined;
  readonly nodeName: string | undefined;
  readonly specs: Readonly<Record<ContainerKind, readonly PodContainerSpec[]>>;
  readonly statuses: Readonly<Record<ContainerKind, readonly PodContainerStatus[]>>;
}

/** The pod's container that runs the workload: its status, and its spec matched by name. */
export interface FoundContainer {
  readonly kind: ContainerKind;
  readonly status: PodContainerStatus;
  readonly spec: PodContainerSpec | undefined;
}

/** Why a kubelet answer is not a pod list. */
export class PodListError extends Error {
  override readonly name = 'PodListError';
}

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);
const objects = (value: unknown): Json[] => (Array.isArray(value) ? value.filter(isObject) : []);
const field = (value: unknown, key: string): unknown => (isObject(value) ? value[key] : undefined);

function containerSpecs(value: unknown): PodContainerSpec[] {
  return objects(value).flatMap((item) => {
    const name = text(item['name']);
    return name === undefined ? [] : [{ name, image: text(item['image']) }];
  });
}

function containerStatuses(value: unknown): PodContainerStatus[] {
  return objects(value).flatMap((item) => {
    const name = text(item['name']);
    if (name === undefined) return [];
    return [
      {
        name,
        containerId: text(item['containerID']),
        image: text(item['image']),
        imageId: text(item['imageID']),
      },
    ];
  });
}

function parsePod(item: Json): KubeletPod | undefined {
  const metadata = field(item, 'metadata');
  const spec = field(item, 'spec');
  const status = field(item, 'status');
  const uid = text(field(metadata, 'uid'));
  if (uid === undefined) return undefined;
  const labels = new Map<string, string>();
  const rawLabels = field(metadata, 'labels');
  if (isObject(rawLabels)) {
    for (const [key, value] of Object.entries(rawLabels)) if (typeof value === 'string') labels.set(key, value);
  }
  const owners = objects(field(metadata, 'ownerReferences')).flatMap((owner) => {
    const kind = text(owner['kind']);
    const name = text(owner['name']);
    return kind === undefined || name === undefined ? [] : [{ kind, name, uid: text(owner['uid']) }];
  });
  return {
    uid,
    name: text(field(metadata, 'name')),
    namespace: text(field(metadata, 'namespace')),
    labels,
    owners,
    serviceAccountName: text(field(spec, 'serviceAccountName')),
    nodeName: text(field(spec, 'nodeName')),
    specs: {
      container: containerSpecs(field(spec, 'containers')),
      init: containerSpecs(field(spec, 'initContainers')),
      ephemeral: containerSpecs(field(spec, 'ephemeralContainers')),
    },
    statuses: {
      container: containerStatuses(field(status, 'containerStatuses')),
      init: containerStatuses(field(status, 'initContainerStatuses')),
      ephemeral: containerStatuses(field(status, 'ephemeralContainerStatuses')),
    },
  };
}

/**
 * The pods of a kubelet `/pods` answer, by pod UID. Items without a UID are skipped (they cannot be the caller's pod),
 * and so is a UID listed twice (either item could be the caller's pod; a kubelet never lists one twice).
 *
 * @throws PodListError when the body is not a `PodList` object with an `items` array
 */
export function parsePodList(body: string): ReadonlyMap<string, KubeletPod> {
  let list: unknown;
  try {
    list = JSON.parse(body);
  } catch (error) {
    throw new PodListError(`kubelet pod list: not JSON (${(error as Error).message})`);
  }
  if (!isObject(list)) throw new PodListError('kubelet pod list: must be a JSON object');
  if (list['kind'] !== undefined && list['kind'] !== 'PodList') {
    throw new PodListError(`kubelet pod list: kind must be PodList, got ${JSON.stringify(list['kind'])}`);
  }
  const items = list['items'];
  // Go's encoding/json writes an empty list's nil slice as null.
  if (items !== null && !Array.isArray(items)) throw new PodListError('kubelet pod list: items must be an array');
  const pods = new Map<string, KubeletPod>();
  const twice = new Set<string>();
  for (const item of objects(items)) {
    const pod = parsePod(item);
    if (pod === undefined) continue;
    if (pods.has(pod.uid)) twice.add(pod.uid);
    pods.set(pod.uid, pod);
  }
  for (const uid of twice) pods.delete(uid);
  return pods;
}

/**
 * The runtime's own ID in a status `containerID`: `containerd://<hex>` → `<hex>` (cgroups show the bare ID). Undefined
 * for a value without the `<runtime>://` prefix, which no kubelet writes.
 */
export function runtimeContainerId(containerId: string): string | undefined {
  const match = /^[a-z][a-z0-9+.-]*:\/\/([^/]+)$/i.exec(containerId);
  return match?.[1];
}

const KINDS: readonly ContainerKind[] = ['container', 'init', 'ephemeral'];

/**
 * The container of `pod` whose runtime ID is `containerId` (the bare ID from the caller's cgroup), looked for in the
 * regular, init and ephemeral container statuses, with the spec of the same name from the same list. Undefined while
 * the kubelet has not published it.
 */
export function findContainer(pod: KubeletPod, containerId: string): FoundContainer | undefined {
  for (const kind of KINDS) {
    for (const status of pod.statuses[kind]) {
      if (status.containerId === undefined || runtimeContainerId(status.containerId) !== containerId) continue;
      const spec = pod.specs[kind].find((candidate) => candidate.name === status.name);
      return { kind, status, spec };
    }
  }
  return undefined;
}
