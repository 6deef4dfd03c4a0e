import { formatSelector } from '@sigil/runtime';
import { describe, expect, it } from 'vitest';
import { type FakePod, kubeletPodJson } from '../../../../../../test/support/fake-kubelet.js';
import { containerSelectorValues, k8sSelectors, podSelectorValues } from './k8s-selectors.js';
import { PodListError, findContainer, parsePodList, runtimeContainerId } from './pods.js';

const hex = (digit: string): string => digit.repeat(64);
const APP_ID = hex('a');
const SIDECAR_ID = hex('b');
const INIT_ID = hex('c');
const DEBUG_ID = hex('d');
const POD_UID = '6f1c2d9e-8a43-4f0b-9d2e-3b7c1a5e9f00';
const NGINX_DIGEST = 'docker.io/library/nginx@sha256:' + 'e'.repeat(64);

const pod: FakePod = {
  uid: POD_UID,
  name: 'web-7d4b9c-x2x8q',
  namespace: 'shop',
  serviceAccount: 'web',
  nodeName: 'node-1',
  labels: { app: 'web', 'app.kubernetes.io/part-of': 'shop' },
  owners: [{ kind: 'ReplicaSet', name: 'web-7d4b9c', uid: '0d6f4c1e-2b3a-4c5d-8e9f-a0b1c2d3e4f5' }],
  containers: [
    // The runtime reports another tag of the same digest than the one the spec names.
    {
      name: 'app',
      image: 'nginx:1.27',
      id: APP_ID,
      statusImage: 'docker.io/library/nginx:latest',
      imageId: NGINX_DIGEST,
    },
    { name: 'sidecar', image: 'envoyproxy/envoy:v1.31', id: SIDECAR_ID, runtime: 'cri-o' },
  ],
  initContainers: [{ name: 'migrate', image: 'shop/migrate:3', id: INIT_ID, runtime: 'docker' }],
  ephemeralContainers: [{ name: 'debugger', image: 'busybox:1.36', id: DEBUG_ID }],
};

function podList(...items: object[]): string {
  return JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items });
}

describe('parsePodList', () => {
  it('reads the pods of a kubelet PodList by UID', () => {
    const pods = parsePodList(podList(kubeletPodJson(pod)));
    const parsed = pods.get(POD_UID);
    expect(parsed).toMatchObject({
      name: 'web-7d4b9c-x2x8q',
      namespace: 'shop',
      serviceAccountName: 'web',
      nodeName: 'node-1',
    });
    expect(parsed?.statuses.init[0]).toEqual({
      name: 'migrate',
      containerId: `docker://${INIT_ID}`,
      image: 'shop/migrate:3',
      imageId: undefined,
    });
  });

  it('accepts the null items of an empty list (Go writes a nil slice as null)', () => {
    expect(parsePodList('{"kind":"PodList","apiVersion":"v1","metadata":{},"items":null}').size).toBe(0);
  });

  it('skips items without a UID and a UID listed twice', () => {
    const other = { ...pod, uid: 'other-uid' };
    const pods = parsePodList(
      podList({ metadata: { name: 'no-uid' } }, kubeletPodJson(pod), kubeletPodJson(pod), kubeletPodJson(other)),
    );
    expect([...pods.keys()]).toEqual(['other-uid']);
  });

  it('reads fields of the wrong type as absent', () => {
    const item = kubeletPodJson(pod) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
    item.metadata['labels'] = { app: 7, tier: 'front' };
    item.spec['serviceAccountName'] = ['web'];
    const parsed = parsePodList(podList(item)).get(POD_UID);
    expect([...(parsed?.labels ?? [])]).toEqual([['tier', 'front']]);
    expect(parsed?.serviceAccountName).toBeUndefined();
  });

  it.each([
    ['not JSON', '<html>', /not JSON/],
    ['not an object', '[]', /must be a JSON object/],
    ['another kind', '{"kind":"Status","items":[]}', /kind must be PodList, got "Status"/],
    ['items not an array', '{"kind":"PodList","items":{}}', /items must be an array/],
  ])('refuses a body that is %s', (_name, body, message) => {
    expect(() => parsePodList(body)).toThrow(PodListError);
    expect(() => parsePodList(body)).toThrow(message);
  });
});

describe('runtimeContainerId', () => {
  it.each([
    [`containerd://${APP_ID}`, APP_ID],
    [`docker://${APP_ID}`, APP_ID],
    [`cri-o://${APP_ID}`, APP_ID],
    [APP_ID, undefined],
    ['containerd://', undefined],
    [`containerd://${APP_ID}/x`, undefined],
  ])('%s → %s', (containerId, expected) => {
    expect(runtimeContainerId(containerId)).toBe(expected);
  });
});

describe('findContainer', () => {
  const parsed = parsePodList(podList(kubeletPodJson(pod))).get(POD_UID)!;

  it.each([
    ['a regular container (containerd://)', APP_ID, 'container', 'app'],
    ['a regular container (cri-o://)', SIDECAR_ID, 'container', 'sidecar'],
    ['an init container, under initContainerStatuses (docker://)', INIT_ID, 'init', 'migrate'],
    ['an ephemeral container, under ephemeralContainerStatuses', DEBUG_ID, 'ephemeral', 'debugger'],
  ])('finds %s by the bare ID cgroups show', (_name, id, kind, name) => {
    const found = findContainer(parsed, id);
    expect(found?.kind).toBe(kind);
    expect(found?.status.name).toBe(name);
    expect(found?.spec?.name).toBe(name);
  });

  it('does not find a container whose status has no ID yet, nor an unknown ID', () => {
    const creating = parsePodList(podList(kubeletPodJson(pod, new Set([APP_ID])))).get(POD_UID)!;
    expect(findContainer(creating, APP_ID)).toBeUndefined();
    expect(findContainer(parsed, hex('f'))).toBeUndefined();
  });

  it('does not match a status carrying the bare ID without a runtime prefix, nor a prefix of the ID', () => {
    const item = kubeletPodJson(pod) as { status: { containerStatuses: { containerID: string }[] } };
    item.status.containerStatuses[0]!.containerID = APP_ID;
    item.status.containerStatuses[1]!.containerID = `containerd://${SIDECAR_ID}`;
    const odd = parsePodList(podList(item)).get(POD_UID)!;
    expect(findContainer(odd, APP_ID)).toBeUndefined();
    expect(findContainer(odd, SIDECAR_ID.slice(0, 12))).toBeUndefined();
  });
});

describe('k8s selectors', () => {
  const parsed = parsePodList(podList(kubeletPodJson(pod))).get(POD_UID)!;
  const show = (values: string[]): string[] => k8sSelectors(values).map(formatSelector);

  it("gives SPIRE's pod selectors", () => {
    expect(show(podSelectorValues(parsed))).toEqual([
      'k8s:sa:web',
      'k8s:ns:shop',
      'k8s:node-name:node-1',
      `k8s:pod-uid:${POD_UID}`,
      'k8s:pod-name:web-7d4b9c-x2x8q',
      'k8s:pod-image-count:2',
      'k8s:pod-init-image-count:1',
      'k8s:pod-image:nginx:1.27',
      'k8s:pod-image:envoyproxy/envoy:v1.31',
      `k8s:pod-image:${NGINX_DIGEST}`,
      'k8s:pod-init-image:shop/migrate:3',
      'k8s:pod-label:app:web',
      'k8s:pod-label:app.kubernetes.io/part-of:shop',
      'k8s:pod-owner:ReplicaSet:web-7d4b9c',
      'k8s:pod-owner-uid:ReplicaSet:0d6f4c1e-2b3a-4c5d-8e9f-a0b1c2d3e4f5',
    ]);
  });

  it('names the image the pod spec names and the digest, never the tag the runtime reports', () => {
    const values = show(containerSelectorValues(findContainer(parsed, APP_ID)!));
    expect(values).toEqual([
      'k8s:container-name:app',
      'k8s:container-image:nginx:1.27',
      `k8s:container-image:${NGINX_DIGEST}`,
    ]);
    expect(values).not.toContain('k8s:container-image:docker.io/library/nginx:latest');
    expect(show(podSelectorValues(parsed))).not.toContain('k8s:pod-image:docker.io/library/nginx:latest');
  });

  it('gives the init and ephemeral containers their own name and image', () => {
    expect(show(containerSelectorValues(findContainer(parsed, INIT_ID)!))).toEqual([
      'k8s:container-name:migrate',
      'k8s:container-image:shop/migrate:3',
    ]);
    expect(show(containerSelectorValues(findContainer(parsed, DEBUG_ID)!))).toEqual([
      'k8s:container-name:debugger',
      'k8s:container-image:busybox:1.36',
    ]);
  });

  it('leaves out values that cannot be selectors and duplicates', () => {
    expect(show(['ns:a', 'ns:a', `pod-label:big:${'x'.repeat(2000)}`, 'pod-label:bad:a\nb'])).toEqual(['k8s:ns:a']);
  });
});
