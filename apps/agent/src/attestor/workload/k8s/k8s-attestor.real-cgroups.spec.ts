/**
 * Real processes in real cgroups of the shapes the kubelet (cgroupfs and systemd drivers) and its runtimes
 * (containerd, CRI-O, Docker) create, on cgroup v1 and v2: the kernel writes /proc/<pid>/cgroup, and the unix and k8s
 * attestors together (the composite, with a real pidfd pin) give the child its pod's selectors from the fake kubelet.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSelector } from '@sigil/runtime';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type CgroupChild,
  type CgroupVersion,
  cgroupSkipReason,
  randomContainerId,
  randomPodUid,
  spawnInCgroup,
} from '../../../../../../test/support/cgroups.js';
import { type ContainerRuntime, FakeKubelet, type FakePod } from '../../../../../../test/support/fake-kubelet.js';
import { PidFd } from '../../../endpoints/pidfd.js';
import { readStartTime } from '../unix/proc.js';
import { UnixWorkloadAttestor } from '../unix/unix-attestor.js';
import { CompositeWorkloadAttestor, type WorkloadCaller } from '../workload-attestor.js';
import { K8sWorkloadAttestor } from './k8s-attestor.js';
import { parseK8sOptions } from './k8s-options.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.agent.sig';
const quiet = { debug: () => undefined, warn: () => undefined };

interface Shape {
  readonly name: string;
  readonly runtime: ContainerRuntime;
  readonly path: (podUid: string, containerId: string) => string;
}

const underscores = (uid: string): string => uid.replaceAll('-', '_');
const shapes: Shape[] = [
  {
    name: 'kubelet cgroupfs + containerd',
    runtime: 'containerd',
    path: (uid, id) => `/kubepods/besteffort/pod${uid}/${id}`,
  },
  { name: 'kubelet cgroupfs, Guaranteed + docker', runtime: 'docker', path: (uid, id) => `/kubepods/pod${uid}/${id}` },
  {
    name: 'kubelet systemd + containerd',
    runtime: 'containerd',
    path: (uid, id) =>
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${underscores(uid)}.slice/` +
      `cri-containerd-${id}.scope`,
  },
  {
    name: 'kubelet systemd + CRI-O',
    runtime: 'cri-o',
    path: (uid, id) =>
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${underscores(uid)}.slice/crio-${id}.scope`,
  },
  {
    name: 'kubelet systemd + docker',
    runtime: 'docker',
    path: (uid, id) => `/kubepods.slice/kubepods-pod${underscores(uid)}.slice/docker-${id}.scope`,
  },
];

describe.each<CgroupVersion>(['v1', 'v2'])('the k8s attestor on a real process in a cgroup %s group', (version) => {
  const skip = cgroupSkipReason(version);
  const skipped = skip === undefined ? '' : ` (skipped: ${skip})`;
  let kubelet: FakeKubelet;
  let dir: string;
  let attestors: CompositeWorkloadAttestor;
  let k8s: K8sWorkloadAttestor;
  const children: CgroupChild[] = [];
  const pins: PidFd[] = [];

  async function caller(pid: number): Promise<WorkloadCaller> {
    const pin = PidFd.open(pid);
    pins.push(pin);
    return { pid, uid: process.geteuid!(), gid: process.getegid!(), startTime: await readStartTime(pid), process: pin };
  }

  beforeAll(async () => {
    if (skip !== undefined) return;
    kubelet = await FakeKubelet.start({ nodeName: 'node-1', tokens: [TOKEN] });
    dir = await mkdtemp(join(tmpdir(), 'sigil-k8s-cgroups-'));
    await writeFile(join(dir, 'ca.crt'), kubelet.caPem);
    await writeFile(join(dir, 'token'), TOKEN);
    const settings = parseK8sOptions(
      {
        kubelet_host: '127.0.0.1',
        node_name: 'node-1',
        kubelet_secure_port: String(kubelet.port),
        kubelet_ca_path: join(dir, 'ca.crt'),
        token_path: join(dir, 'token'),
        poll_retry_interval: '20ms',
        max_poll_attempts: '3',
      },
      {},
    );
    k8s = new K8sWorkloadAttestor(settings, { attestationTimeoutMs: 10_000, logger: quiet });
    attestors = new CompositeWorkloadAttestor([new UnixWorkloadAttestor({ logger: quiet }), k8s]);
  });

  afterEach(async () => {
    for (const child of children.splice(0)) await child.stop();
    for (const pin of pins.splice(0)) pin.close();
  });

  afterAll(async () => {
    k8s?.close();
    await kubelet?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(skip !== undefined).each(shapes)(`$name${skipped}`, async ({ runtime, path }) => {
    const podUid = randomPodUid();
    const containerId = randomContainerId();
    const pod: FakePod = {
      uid: podUid,
      name: 'web-0',
      namespace: 'shop',
      serviceAccount: 'web',
      nodeName: 'node-1',
      containers: [{ name: 'app', image: 'nginx:1.27', id: containerId, runtime }],
    };
    kubelet.setPods([pod]);
    const child = await spawnInCgroup(version, path(podUid, containerId));
    children.push(child);
    const selectors = (await attestors.attest(await caller(child.pid))).map(formatSelector);
    expect(selectors).toContain(`unix:uid:${process.geteuid!()}`);
    expect(selectors).toEqual(
      expect.arrayContaining([
        'k8s:ns:shop',
        'k8s:sa:web',
        `k8s:pod-uid:${podUid}`,
        'k8s:container-name:app',
        'k8s:container-image:nginx:1.27',
      ]),
    );
  });

  it.skipIf(skip !== undefined)(
    `gives a process outside any pod its unix selectors and no k8s selector${skipped}`,
    async () => {
      const child = await spawnInCgroup(version, '/system.slice/sigil-test.service');
      children.push(child);
      const before = kubelet.requests;
      const selectors = (await attestors.attest(await caller(child.pid))).map(formatSelector);
      expect(selectors).toContain(`unix:uid:${process.geteuid!()}`);
      expect(selectors.filter((selector) => selector.startsWith('k8s:'))).toEqual([]);
      expect(kubelet.requests).toBe(before);
    },
  );

  // The forger: pod "ci" (listed), container `own`; the victim: pod "payments" (listed). The forger makes a cgroup
  // named after the victim below its own and moves there; it gets its own pod's selectors (or none), never the victim's.
  it.skipIf(skip !== undefined).each([
    [
      "a kubepods tree below its own pod's container",
      (own: string, ownId: string, uid: string, id: string) =>
        `/kubepods/burstable/pod${own}/${ownId}/kubepods/besteffort/pod${uid}/${id}`,
      ['k8s:ns:ci', 'k8s:sa:runner'],
    ],
    [
      "a victim slice:cri-containerd:id below its own pod's systemd scope",
      (own: string, ownId: string, uid: string, id: string) =>
        `/kubepods.slice/kubepods-pod${underscores(own)}.slice/cri-containerd-${ownId}.scope/` +
        `kubepods-pod${underscores(uid)}.slice:cri-containerd:${id}`,
      ['k8s:ns:ci', 'k8s:sa:runner'],
    ],
    [
      "a kind-like tree below a Docker container that is not the agent's node",
      (_own: string, ownId: string, uid: string, id: string) => `/docker/${ownId}/kubepods/besteffort/pod${uid}/${id}`,
      [],
    ],
    [
      'a pod slice:cri-containerd:id segment in a CI service',
      (_own: string, _ownId: string, uid: string, id: string) =>
        `/system.slice/sigil-test-ci.service/kubepods-pod${underscores(uid)}.slice:cri-containerd:${id}`,
      [],
    ],
  ])(`gives no victim's k8s selectors to a process in %s${skipped}`, async (_name, path, own) => {
    const [podUid, containerId, ownUid, ownId] = [
      randomPodUid(),
      randomContainerId(),
      randomPodUid(),
      randomContainerId(),
    ];
    kubelet.setPods([
      {
        uid: podUid,
        name: 'victim',
        namespace: 'prod',
        serviceAccount: 'payments',
        nodeName: 'node-1',
        containers: [{ name: 'app', image: 'pay:1', id: containerId }],
      },
      {
        uid: ownUid,
        name: 'runner',
        namespace: 'ci',
        serviceAccount: 'runner',
        nodeName: 'node-1',
        containers: [{ name: 'build', image: 'ci:1', id: ownId }],
      },
    ]);
    const child = await spawnInCgroup(version, path(ownUid, ownId, podUid, containerId));
    children.push(child);
    const selectors = (await attestors.attest(await caller(child.pid))).map(formatSelector);
    expect(selectors).toContain(`unix:uid:${process.geteuid!()}`);
    const k8sSelectors = selectors.filter((selector) => selector.startsWith('k8s:'));
    expect(k8sSelectors).toEqual(expect.arrayContaining(own));
    if (own.length === 0) expect(k8sSelectors).toEqual([]);
    expect(
      k8sSelectors.filter((selector) => /prod|payments|victim/.test(selector) || selector.includes(podUid)),
    ).toEqual([]);
  });

  it.skipIf(skip !== undefined)(
    `does not lend a pod's identity to a process in another pod's cgroup with the same container ID${skipped}`,
    async () => {
      const containerId = randomContainerId();
      kubelet.setPods([
        {
          uid: randomPodUid(),
          name: 'victim',
          namespace: 'prod',
          serviceAccount: 'payments',
          nodeName: 'node-1',
          containers: [{ name: 'app', image: 'pay:1', id: containerId }],
        },
      ]);
      // The caller's cgroup names the same container ID under a pod the kubelet does not list.
      const child = await spawnInCgroup(version, `/kubepods/besteffort/pod${randomPodUid()}/${containerId}`);
      children.push(child);
      await expect(attestors.attest(await caller(child.pid))).rejects.toThrow(/is not listed/);
    },
  );
});
