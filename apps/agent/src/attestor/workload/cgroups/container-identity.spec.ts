import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContainerIdentityError, parseCgroupFile, readContainerIdentity } from './container-identity.js';

const ID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const ID2 = 'a55d9ac3b312d8a2627824b6d6dd8af66fbec439bf4e0ec22d6d9945ad337a38';
const NODE = '93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26';
const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID_ = UID.replaceAll('-', '_');
const UID2 = '6bd2a4d3-a55a-4450-b6fd-2a7ecc72c904';

/** A cgroup v1 file (every hierarchy at `path`, as a process moved by a runtime shows) and its v2 line. */
const v1 = (path: string): string =>
  [
    `12:hugetlb:${path}`,
    `11:devices:${path}`,
    `10:pids:${path}`,
    `9:perf_event:${path}`,
    `8:net_cls,net_prio:${path}`,
    `7:cpu,cpuacct:${path}`,
    `1:name=systemd:${path}`,
    '0::/',
    '',
  ].join('\n');
const v2 = (path: string): string => `0::${path}\n`;

describe('parseCgroupFile: the path shapes runtimes write, on cgroup v1 and v2', () => {
  const shapes: [string, string, { containerId: string; podUid?: string } | undefined][] = [
    ['kubelet cgroupfs, BestEffort pod', `/kubepods/besteffort/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    ['kubelet cgroupfs, Burstable pod', `/kubepods/burstable/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    ['kubelet cgroupfs, Guaranteed pod', `/kubepods/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    [
      'kubelet systemd + containerd',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope`,
      { containerId: ID, podUid: UID },
    ],
    [
      'kubelet systemd + CRI-O',
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-${ID}.scope`,
      { containerId: ID, podUid: UID },
    ],
    [
      'kubelet systemd + Docker (dockershim)',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${ID}.scope`,
      { containerId: ID, podUid: UID },
    ],
    [
      'kubelet systemd, Guaranteed pod',
      `/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`,
      { containerId: ID, podUid: UID },
    ],
    [
      "containerd's slice:prefix:id form",
      `/kubepods-besteffort-pod${UID_}.slice:cri-containerd:${ID}`,
      { containerId: ID, podUid: UID },
    ],
    [
      'CRI-O conmon (the monitor, not the container)',
      `/kubepods.slice/kubepods-pod${UID_}.slice/crio-conmon-${ID}.scope`,
      undefined,
    ],
    ['CRI-O conmon outside a pod', `/system.slice/crio-conmon-${ID}.scope`, undefined],
    ['CRI-O without a pod (kubeedge), in a cgroup namespace', `/../crio-${ID}.scope`, { containerId: ID }],
    ['Docker, cgroupfs driver', `/docker/${ID}`, { containerId: ID }],
    ['Docker, systemd driver', `/system.slice/docker-${ID}.scope`, { containerId: ID }],
    ['Docker, a sub-cgroup inside the container', `/docker/${ID}/init.scope`, { containerId: ID }],
    ['containerd outside Kubernetes (namespace/id)', `/default/${ID}`, { containerId: ID }],
    ['nerdctl, systemd driver', `/system.slice/nerdctl-${ID}.scope`, { containerId: ID }],
    ['Podman', `/machine.slice/libpod-${ID}.scope`, { containerId: ID }],
    ['nested kubelet', `/kubelet/kubepods/besteffort/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    [
      'nested kubelet, doubled kubepods',
      `/kubepods/kubepods/besteffort/pod${UID2}/${ID2}`,
      { containerId: ID2, podUid: UID2 },
    ],
    [
      'kind (a kubelet in a Docker container)',
      `/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}`,
      { containerId: ID, podUid: UID },
    ],
    ['cgroup namespace, pod', `/../../../burstable/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    ['cgroup namespace, same pod as the reader', `/../${ID}`, { containerId: ID }],
    ['the root cgroup', '/', undefined],
    ['a systemd service', '/system.slice/containerd.service', undefined],
    ['a login session', '/user.slice/user-1000.slice/session-3.scope', undefined],
    ['a pod cgroup itself (no container)', `/kubepods/besteffort/pod${UID}`, undefined],
    ['an ID that is not 64 hex digits', '/process_api/b99f78455515726a7287e457e62ddd53', undefined],
    ['upper-case hex is no container ID', `/docker/${ID.toUpperCase()}`, undefined],
    // A user's delegated subtree: it names its cgroups as it likes, another container's ID included.
    [
      'under a systemd user delegation',
      `/user.slice/user-1000.slice/user@1000.service/app.slice/docker-${ID}.scope`,
      undefined,
    ],
  ];

  it.each(shapes)('%s (v1): %s', (_name, path, expected) => {
    expect(parseCgroupFile(v1(path))).toEqual(expected);
  });
  it.each(shapes)('%s (v2): %s', (_name, path, expected) => {
    expect(parseCgroupFile(v2(path))).toEqual(expected);
  });

  it('gives no identity for an empty file', () => {
    expect(parseCgroupFile('')).toBeUndefined();
  });
});

describe('parseCgroupFile: several lines', () => {
  it('prefers a line that names a pod over one that names only a container (kind on a cgroup v2 host)', () => {
    const text = `1:cpuset:/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}\n0::/docker/${NODE}/system.slice/containerd.service\n`;
    expect(parseCgroupFile(text)).toEqual({ containerId: ID, podUid: UID });
    const reversed = `0::/docker/${NODE}/system.slice/containerd.service\n1:cpuset:/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}\n`;
    expect(parseCgroupFile(reversed)).toEqual({ containerId: ID, podUid: UID });
  });

  it('takes the container from v1 lines when the v2 line is the root (hybrid hierarchy)', () => {
    expect(parseCgroupFile(`10:pids:/docker/${ID}\n1:name=systemd:/\n0::/\n`)).toEqual({ containerId: ID });
  });

  it.each([
    [
      'two containers',
      `10:pids:/kubepods/pod${UID}/${ID}\n9:cpu:/kubepods/pod${UID}/${ID2}\n`,
      `the cgroup paths name two containers: ${ID} and ${ID2}`,
    ],
    [
      'two containers, no pod',
      `10:pids:/docker/${ID}\n0::/docker/${ID2}\n`,
      `the cgroup paths name two containers: ${ID} and ${ID2}`,
    ],
    [
      'two pods',
      `10:pids:/kubepods/pod${UID}/${ID}\n9:cpu:/kubepods/pod${UID2}/${ID}\n`,
      `the cgroup paths name two pods: ${UID} and ${UID2}`,
    ],
    [
      'a container inside another, no pod between (made by the outer one)',
      `0::/docker/${ID}/docker-${ID2}.scope\n`,
      `cgroup path "/docker/${ID}/docker-${ID2}.scope" names two containers: which is unclear`,
    ],
    [
      'two containers after the pod',
      `0::/kubepods/pod${UID}/${ID}/docker/${ID2}\n`,
      `cgroup path "/kubepods/pod${UID}/${ID}/docker/${ID2}" names two containers: which is unclear`,
    ],
    [
      'a line that is not a cgroup line',
      `0::/\nnonsense\n`,
      'line 2: must be hierarchy-ID:controller-list:cgroup-path, got "nonsense"',
    ],
    [
      'a path that is not absolute',
      `0::docker/${ID}\n`,
      `line 1: must be hierarchy-ID:controller-list:cgroup-path, got "0::docker/${ID}"`,
    ],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseCgroupFile(text)).toThrow(new ContainerIdentityError(message));
  });
});

describe('readContainerIdentity', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sigil-proc-'));
    await mkdir(join(root, '42'));
    await writeFile(join(root, '42', 'cgroup'), v2(`/system.slice/docker-${ID}.scope`));
    await mkdir(join(root, '43'));
    await writeFile(join(root, '43', 'cgroup'), `0::/docker/${ID}\n10:pids:/docker/${ID2}\n`);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('reads <procRoot>/<pid>/cgroup', async () => {
    await expect(readContainerIdentity(42, root)).resolves.toEqual({ containerId: ID });
  });

  it('names the pid and the file in its errors', async () => {
    await expect(readContainerIdentity(43, root)).rejects.toThrow(
      `process 43: ${root}/43/cgroup: the cgroup paths name two containers: ${ID} and ${ID2}`,
    );
    await expect(readContainerIdentity(44, root)).rejects.toThrow(
      `process 44: cannot read ${root}/44/cgroup: the process has exited`,
    );
    await expect(readContainerIdentity(0, root)).rejects.toThrow('pid must be positive, got 0');
  });
});
