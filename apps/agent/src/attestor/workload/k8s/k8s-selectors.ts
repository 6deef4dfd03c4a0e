import { type Selector, checkSelector } from '@sigil/runtime';
import { type FoundContainer, type KubeletPod, type PodContainerSpec, type PodContainerStatus } from './pods.js';

/** The selector type of the k8s attestor (SPIRE's plug-in name). */
export const K8S_SELECTOR_TYPE = 'k8s';

/**
 * Image references of a set of containers: the reference each spec names (`nginx:1.27`), and the digest reference the
 * runtime reports for it (`imageID`, `docker.io/library/nginx@sha256:…`) for exact pinning. The status `image` is
 * left out on purpose: when tags share a digest on the node, the runtime may report any of them (spiffe/spire#4287),
 * so `nginx:1.27` in a status could stand for a pod that asked for `attacker/tool:latest` of the same digest.
 */
function imageReferences(specs: readonly PodContainerSpec[], statuses: readonly PodContainerStatus[]): string[] {
  const references = new Set<string>();
  for (const spec of specs) if (spec.image !== undefined) references.add(spec.image);
  for (const status of statuses) if (status.imageId !== undefined) references.add(status.imageId);
  return [...references];
}

/**
 * Selectors of the pod itself (SPIRE's names and formats): `sa`, `ns`, `node-name`, `pod-uid`, `pod-name`,
 * `pod-image-count`, `pod-init-image-count`, `pod-image`, `pod-init-image`, `pod-label:<key>:<value>`,
 * `pod-owner:<Kind>:<name>`, `pod-owner-uid:<Kind>:<uid>`. Counts are of the pod spec's containers (SPIRE counts
 * published statuses, which is the same number once the kubelet has published them all).
 */
export function podSelectorValues(pod: KubeletPod): string[] {
  const values: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined) values.push(`${name}:${value}`);
  };
  add('sa', pod.serviceAccountName);
  add('ns', pod.namespace);
  add('node-name', pod.nodeName);
  add('pod-uid', pod.uid);
  add('pod-name', pod.name);
  add('pod-image-count', String(pod.specs.container.length));
  add('pod-init-image-count', String(pod.specs.init.length));
  for (const image of imageReferences(pod.specs.container, pod.statuses.container)) add('pod-image', image);
  for (const image of imageReferences(pod.specs.init, pod.statuses.init)) add('pod-init-image', image);
  for (const [key, value] of [...pod.labels].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    add('pod-label', `${key}:${value}`);
  }
  for (const owner of pod.owners) {
    add('pod-owner', `${owner.kind}:${owner.name}`);
    if (owner.uid !== undefined) add('pod-owner-uid', `${owner.kind}:${owner.uid}`);
  }
  return values;
}

/**
 * Selectors of the workload's container: `container-name`, and `container-image` for the reference its spec names
 * and for the digest reference the runtime reports (see {@link imageReferences}).
 */
export function containerSelectorValues(container: FoundContainer): string[] {
  const images = imageReferences(container.spec === undefined ? [] : [container.spec], [container.status]);
  return [`container-name:${container.status.name}`, ...images.map((image) => `container-image:${image}`)];
}

/**
 * The values as `k8s` selectors, in order, without duplicates. A value that cannot be a selector (a label value over
 * the selector size limit, a control character) is left out: a missing selector can only make fewer entries match.
 */
export function k8sSelectors(values: readonly string[]): Selector[] {
  const seen = new Set<string>();
  const selectors: Selector[] = [];
  for (const value of values) {
    if (seen.has(value)) continue;
    seen.add(value);
    try {
      selectors.push(checkSelector({ type: K8S_SELECTOR_TYPE, value }));
    } catch {
      // Skipped: see above.
    }
  }
  return selectors;
}
