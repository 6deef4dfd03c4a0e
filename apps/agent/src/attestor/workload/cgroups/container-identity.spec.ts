import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ContainerIdentityError,
  nestingPrefixOf,
  parseCgroupFile,
  readContainerIdentity,
} from './container-identity.js';

const ID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const ID2 = 'a55d9ac3b312d8a2627824b6d6dd8af66fbec439bf4e0ec22d6d9945ad337a38';
const NODE = '93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26';
const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID_ = UID.replaceAll('-', '_');
const UID2 = '6bd2a4d3-a55a-4450-b6fd-2a7ecc72c904';
const UID2_ = UID2.replaceAll('-', '_');

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

type Expected = { containerId: string; podUid?: string } | undefined;

describe('parseCgroupFile: the path shapes runtimes write, on cgroup v1 and v2', () => {
  const shapes: [string, string, Expected][] = [
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
      "containerd's slice:prefix:id form in containerd's service (cgroup v1, name=systemd)",
      `/system.slice/containerd.service/kubepods-burstable-pod${UID_}.slice:cri-containerd:${ID}`,
      { containerId: ID, podUid: UID },
    ],
    [
      'kubelet systemd, a sub-cgroup inside the container (systemd in it)',
      `/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope/init.scope`,
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
    ['Podman --systemd (its container sub-cgroup)', `/machine.slice/libpod-${ID}.scope/container`, { containerId: ID }],
    [
      "kind seen by an agent that is not in its node (the node container is the process's container)",
      `/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}`,
      { containerId: NODE },
    ],
    ['cgroup namespace, pod', `/../../../burstable/pod${UID}/${ID}`, { containerId: ID, podUid: UID }],
    ['cgroup namespace, same pod as the reader', `/../${ID}`, { containerId: ID }],
    ['the root cgroup', '/', undefined],
    ['a systemd service', '/system.slice/containerd.service', undefined],
    ['a login session', '/user.slice/user-1000.slice/session-3.scope', undefined],
    ['a pod cgroup itself (no container)', `/kubepods/besteffort/pod${UID}`, undefined],
    ['an ID that is not 64 hex digits', '/process_api/b99f78455515726a7287e457e62ddd53', undefined],
    ['upper-case hex is no container ID', `/docker/${ID.toUpperCase()}`, undefined],
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

// A process that may create cgroups below its own (a privileged or systemd container, Podman --systemd, sysbox, a
// Delegate=yes service, a CI runner) names a child after a victim (pod UID2, container ID2) and moves itself there.
describe('parseCgroupFile: cgroups named after another pod or container by whoever made them', () => {
  const forged: [string, string, Expected][] = [
    [
      'a victim slice:cri-containerd:id segment below its own systemd scope',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope/` +
        `kubepods-besteffort-pod${UID2_}.slice:cri-containerd:${ID2}`,
      { containerId: ID, podUid: UID },
    ],
    [
      "a victim pod's systemd tree below its own scope",
      `/kubepods.slice/kubepods-pod${UID_}.slice/crio-${ID}.scope/kubepods.slice/kubepods-pod${UID2_}.slice/` +
        `crio-${ID2}.scope`,
      { containerId: ID, podUid: UID },
    ],
    [
      'a kubepods tree below its own cgroupfs container',
      `/kubepods/besteffort/pod${UID}/${ID}/kubepods/pod${UID2}/${ID2}`,
      { containerId: ID, podUid: UID },
    ],
    [
      "a victim segment below its own in containerd's service",
      `/system.slice/containerd.service/kubepods-pod${UID_}.slice:cri-containerd:${ID}/` +
        `kubepods-pod${UID2_}.slice:cri-containerd:${ID2}`,
      { containerId: ID, podUid: UID },
    ],
    [
      'a kind-like kubepods tree below its own Docker container',
      `/docker/${ID}/kubepods/besteffort/pod${UID2}/${ID2}`,
      { containerId: ID },
    ],
    ['a Docker scope below its own Docker container', `/docker/${ID}/docker-${ID2}.scope`, { containerId: ID }],
    [
      'a Docker scope below its own systemd Docker scope',
      `/system.slice/docker-${ID}.scope/system.slice/docker-${ID2}.scope`,
      { containerId: ID },
    ],
    [
      'a kubepods tree below its own Podman --systemd container',
      `/machine.slice/libpod-${ID}.scope/container/kubepods/pod${UID2}/${ID2}`,
      { containerId: ID },
    ],
    [
      'a kubepods tree below its own containerd namespace container',
      `/default/${ID}/kubepods/pod${UID2}/${ID2}`,
      { containerId: ID },
    ],
    [
      'a kubepods tree below its own container, seen from another cgroup namespace',
      `/../../../burstable/pod${UID}/${ID}/kubepods/pod${UID2}/${ID2}`,
      { containerId: ID, podUid: UID },
    ],
    ['a Docker scope in a CI service (Delegate=yes)', `/system.slice/ci.service/docker-${ID2}.scope`, undefined],
    [
      'a kubepods tree in a CI service (Delegate=yes)',
      `/system.slice/ci.service/kubepods/besteffort/pod${UID2}/${ID2}`,
      undefined,
    ],
    [
      "a slice:cri-containerd:id segment in a service other than containerd's",
      `/system.slice/ci.service/kubepods-pod${UID2_}.slice:cri-containerd:${ID2}`,
      undefined,
    ],
    [
      'a Docker scope under a systemd user delegation',
      `/user.slice/user-1000.slice/user@1000.service/app.slice/docker-${ID2}.scope`,
      undefined,
    ],
    [
      'a kubepods tree under a login session',
      `/user.slice/user-1000.slice/session-3.scope/kubepods/pod${UID2}/${ID2}`,
      undefined,
    ],
    ['a kubelet-nested tree the agent is not nested in', `/kubelet/kubepods/besteffort/pod${UID2}/${ID2}`, undefined],
    ['a container deeper than its shape allows', `/kubepods/besteffort/extra/pod${UID2}/${ID2}`, undefined],
    [
      'a pod slice under the QoS slice of another class',
      `/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod${UID2_}.slice/crio-${ID2}.scope`,
      undefined,
    ],
    [
      "a container below CRI-O's conmon",
      `/kubepods.slice/kubepods-pod${UID_}.slice/crio-conmon-${ID}.scope/crio-${ID2}.scope`,
      undefined,
    ],
  ];

  it.each(forged)('%s (v1): %s', (_name, path, expected) => {
    expect(parseCgroupFile(v1(path))).toEqual(expected);
  });
  it.each(forged)('%s (v2): %s', (_name, path, expected) => {
    expect(parseCgroupFile(v2(path))).toEqual(expected);
  });
});

describe("parseCgroupFile: a nested kubelet (kind) only below the agent's own nesting prefix", () => {
  const kind = `/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}`;
  const cases: [string, string, string, Expected][] = [
    ['kind, agent in the same node', kind, `/docker/${NODE}`, { containerId: ID, podUid: UID }],
    ['kind, agent not nested', kind, '', { containerId: NODE }],
    ['kind, agent in another node', kind, `/docker/${ID2}`, { containerId: NODE }],
    [
      'kind with the systemd driver',
      `/docker/${NODE}/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`,
      `/docker/${NODE}`,
      { containerId: ID, podUid: UID },
    ],
    [
      'a workload of the node that forges below its own container',
      `/docker/${NODE}/kubepods/pod${UID}/${ID}/kubepods/pod${UID2}/${ID2}`,
      `/docker/${NODE}`,
      { containerId: ID, podUid: UID },
    ],
    [
      'the node container itself (the node, not a container)',
      `/docker/${NODE}/system.slice/containerd.service`,
      `/docker/${NODE}`,
      undefined,
    ],
    ['nested kubelet', `/kubelet/kubepods/besteffort/pod${UID}/${ID}`, '/kubelet', { containerId: ID, podUid: UID }],
    ['nested kubelet, agent not nested', `/kubelet/kubepods/besteffort/pod${UID}/${ID}`, '', undefined],
    [
      'nested kubelet, doubled kubepods',
      `/kubepods/kubepods/besteffort/pod${UID2}/${ID2}`,
      '/kubepods',
      { containerId: ID2, podUid: UID2 },
    ],
    [
      'nested kubelet, doubled kubepods, agent not nested',
      `/kubepods/kubepods/besteffort/pod${UID2}/${ID2}`,
      '',
      undefined,
    ],
    [
      'a host pod, agent in kind (not below the prefix: read from the root)',
      `/kubepods/pod${UID}/${ID}`,
      `/docker/${NODE}`,
      { containerId: ID, podUid: UID },
    ],
  ];
  it.each(cases)('%s (v1): %s, agent prefix %j', (_name, path, nestingPrefix, expected) => {
    expect(parseCgroupFile(v1(path), { nestingPrefix })).toEqual(expected);
  });
  it.each(cases)('%s (v2): %s, agent prefix %j', (_name, path, nestingPrefix, expected) => {
    expect(parseCgroupFile(v2(path), { nestingPrefix })).toEqual(expected);
  });
});

describe("nestingPrefixOf: the path before the kubelet tree holding the agent's own pod", () => {
  it.each([
    ['an agent in a pod of kind', v1(`/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}`), `/docker/${NODE}`],
    [
      'an agent in a pod of kind, systemd driver (containerd.service on name=systemd)',
      `10:pids:/docker/${NODE}/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope\n` +
        `1:name=systemd:/docker/${NODE}/system.slice/containerd.service/kubepods-pod${UID_}.slice:cri-containerd:${ID}\n` +
        '0::/\n',
      `/docker/${NODE}`,
    ],
    ['an agent under a nested kubelet', v2(`/kubelet/kubepods/pod${UID}/${ID}`), '/kubelet'],
    ['an agent under doubled kubepods', v2(`/kubepods/kubepods/burstable/pod${UID}/${ID}`), '/kubepods'],
    ['an agent in a pod at the root', v2(`/kubepods/pod${UID}/${ID}`), ''],
    ['an agent in a pod, systemd driver', v2(`/kubepods.slice/kubepods-pod${UID_}.slice/crio-${ID}.scope`), ''],
    [
      "an agent in containerd's service form",
      v1(`/system.slice/containerd.service/kubepods-pod${UID_}.slice:cri-containerd:${ID}`),
      '',
    ],
    ['an agent in a Docker container', v2(`/docker/${ID}`), ''],
    ['an agent in a systemd service', v2('/system.slice/sigil-agent.service'), ''],
    ['an agent in a kind node, not in a pod', v2(`/docker/${NODE}/system.slice/sigil-agent.service`), ''],
    ['an agent in its own cgroup namespace', v2('/'), ''],
  ])('%s', (_name, text, prefix) => {
    expect(nestingPrefixOf(text)).toBe(prefix);
  });

  it("refuses lines that nest the agent's pod under two prefixes", () => {
    expect(() =>
      nestingPrefixOf(`10:pids:/docker/${NODE}/kubepods/pod${UID}/${ID}\n0::/kubelet/kubepods/pod${UID}/${ID}\n`),
    ).toThrow(new ContainerIdentityError(`the cgroup paths nest the agent's pod under /docker/${NODE} and /kubelet`));
  });
});

describe('parseCgroupFile: several lines', () => {
  it("reads kind on a cgroup v2 host by the agent's prefix: the unified line is the node's containerd", () => {
    const text = `1:cpuset:/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}\n0::/docker/${NODE}/system.slice/containerd.service\n`;
    expect(parseCgroupFile(text, { nestingPrefix: `/docker/${NODE}` })).toEqual({ containerId: ID, podUid: UID });
    expect(parseCgroupFile(text)).toEqual({ containerId: NODE });
  });

  it('takes the container from v1 lines when the v2 line is the root (hybrid hierarchy)', () => {
    expect(parseCgroupFile(`10:pids:/docker/${ID}\n1:name=systemd:/\n0::/\n`)).toEqual({ containerId: ID });
  });

  it('takes the pod from the lines that name it when the others name the same container only', () => {
    const text = `10:pids:/kubepods/besteffort/pod${UID}/${ID}\n0::/../${ID}\n`;
    expect(parseCgroupFile(text)).toEqual({ containerId: ID, podUid: UID });
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
      'a line naming a pod and one naming another container (the pod line does not win)',
      `10:pids:/kubepods/pod${UID}/${ID}\n0::/docker/${ID2}\n`,
      `the cgroup paths name two containers: ${ID} and ${ID2}`,
    ],
    [
      'a line naming a container and one naming a pod with another container',
      `10:pids:/system.slice/docker-${ID2}.scope\n9:cpu:/kubepods/besteffort/pod${UID}/${ID}\n`,
      `the cgroup paths name two containers: ${ID2} and ${ID}`,
    ],
    [
      'two pods',
      `10:pids:/kubepods/pod${UID}/${ID}\n9:cpu:/kubepods/pod${UID2}/${ID}\n`,
      `the cgroup paths name two pods: ${UID} and ${UID2}`,
    ],
    ['a path with .. inside it', `0::/docker/../${ID}\n`, `cgroup path "/docker/../${ID}" has .. inside it`],
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

  it.each(['docker/x', '/../docker/x'])('refuses the nesting prefix %j (not an absolute cgroup path)', (prefix) => {
    expect(() => parseCgroupFile(v2(`/docker/${ID}`), { nestingPrefix: prefix })).toThrow(
      new ContainerIdentityError(`nesting prefix must be an absolute cgroup path, got ${JSON.stringify(prefix)}`),
    );
  });
});

describe('readContainerIdentity', () => {
  let root: string;
  let kindRoot: string;
  let badRoot: string;
  const kind = `/docker/${NODE}/kubepods/besteffort/pod${UID}/${ID}`;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sigil-proc-'));
    await mkdir(join(root, '42'));
    await writeFile(join(root, '42', 'cgroup'), v2(`/system.slice/docker-${ID}.scope`));
    await mkdir(join(root, '43'));
    await writeFile(join(root, '43', 'cgroup'), `0::/docker/${ID}\n10:pids:/docker/${ID2}\n`);
    await mkdir(join(root, '45'));
    await writeFile(join(root, '45', 'cgroup'), v1(kind));
    // An agent in a pod of kind's node container NODE: its own cgroup file is <procRoot>/self/cgroup.
    kindRoot = await mkdtemp(join(tmpdir(), 'sigil-proc-kind-'));
    await mkdir(join(kindRoot, 'self'));
    await writeFile(join(kindRoot, 'self', 'cgroup'), v1(`/docker/${NODE}/kubepods/burstable/pod${UID2}/${ID2}`));
    await mkdir(join(kindRoot, '45'));
    await writeFile(join(kindRoot, '45', 'cgroup'), v1(kind));
    badRoot = await mkdtemp(join(tmpdir(), 'sigil-proc-bad-'));
    await mkdir(join(badRoot, 'self'));
    await writeFile(join(badRoot, 'self', 'cgroup'), 'nonsense\n');
    await mkdir(join(badRoot, '45'));
    await writeFile(join(badRoot, '45', 'cgroup'), v1(kind));
  });
  afterAll(async () => {
    for (const dir of [root, kindRoot, badRoot]) await rm(dir, { recursive: true, force: true });
  });

  it('reads <procRoot>/<pid>/cgroup', async () => {
    await expect(readContainerIdentity(42, root)).resolves.toEqual({ containerId: ID });
  });

  it("reads a nested kubelet's pod below the agent's own nesting prefix, from <procRoot>/self/cgroup", async () => {
    await expect(readContainerIdentity(45, kindRoot)).resolves.toEqual({ containerId: ID, podUid: UID });
    // No <procRoot>/self/cgroup: nothing is nested, the process is in the node container.
    await expect(readContainerIdentity(45, root)).resolves.toEqual({ containerId: NODE });
  });

  it('names the pid and the file in its errors', async () => {
    await expect(readContainerIdentity(43, root)).rejects.toThrow(
      `process 43: ${root}/43/cgroup: the cgroup paths name two containers: ${ID} and ${ID2}`,
    );
    await expect(readContainerIdentity(44, root)).rejects.toThrow(
      `process 44: cannot read ${root}/44/cgroup: the process has exited`,
    );
    await expect(readContainerIdentity(0, root)).rejects.toThrow('pid must be positive, got 0');
    await expect(readContainerIdentity(45, badRoot)).rejects.toThrow(
      `the agent's own ${badRoot}/self/cgroup: line 1: must be hierarchy-ID:controller-list:cgroup-path, got "nonsense"`,
    );
  });
});
