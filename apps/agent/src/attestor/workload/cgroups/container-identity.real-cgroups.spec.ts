import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CgroupChild,
  type CgroupPlacement,
  type CgroupVersion,
  cgroupSkipReason,
  placeInCgroup,
  randomContainerId,
  randomPodUid,
  spawnInCgroup,
} from '../../../../../../test/support/cgroups.js';
import { readContainerIdentity } from './container-identity.js';

// Real processes in real cgroups: the kernel writes /proc/<pid>/cgroup, the rule reads it.

const id = randomContainerId();
const uid = randomPodUid();
const uid_ = uid.replaceAll('-', '_');
const node = randomContainerId();

const shapes: [string, string, { containerId: string; podUid?: string } | undefined][] = [
  ['kubelet cgroupfs', `/kubepods/besteffort/pod${uid}/${id}`, { containerId: id, podUid: uid }],
  ['kubelet cgroupfs, Guaranteed', `/kubepods/pod${uid}/${id}`, { containerId: id, podUid: uid }],
  [
    'kubelet systemd + containerd',
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid_}.slice/cri-containerd-${id}.scope`,
    { containerId: id, podUid: uid },
  ],
  [
    'kubelet systemd + CRI-O',
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid_}.slice/crio-${id}.scope`,
    { containerId: id, podUid: uid },
  ],
  [
    'CRI-O conmon',
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid_}.slice/crio-conmon-${id}.scope`,
    undefined,
  ],
  ['Docker cgroupfs', `/docker/${id}`, { containerId: id }],
  ['Docker systemd', `/system.slice/docker-${id}.scope`, { containerId: id }],
  ['containerd namespace/id', `/default/${id}`, { containerId: id }],
  // Seen by an agent that is not in kind's node container: the process is in the node container.
  ['kind, agent not in the node', `/docker/${node}/kubepods/besteffort/pod${uid}/${id}`, { containerId: node }],
  ['nested kubelet, agent not nested', `/kubelet/kubepods/besteffort/pod${uid}/${id}`, undefined],
  ['a systemd service, no container', '/system.slice/sigil-test.service', undefined],
];

describe.each<CgroupVersion>(['v1', 'v2'])(
  'readContainerIdentity of a real process in a cgroup %s group',
  (version) => {
    const skip = cgroupSkipReason(version);
    let child: CgroupChild | undefined;
    afterEach(async () => {
      await child?.stop();
      child = undefined;
    });

    it.skipIf(skip !== undefined).each(shapes)(
      `%s: %s${skip === undefined ? '' : ` (skipped: ${skip})`}`,
      async (_name, path, expected) => {
        child = await spawnInCgroup(version, path);
        await expect(readContainerIdentity(child.pid)).resolves.toEqual(expected);
      },
    );

    // A process that may create cgroups below its container's makes one named after a victim and moves there: the
    // kernel lists the forged path, and the rule gives the parent's identity (or none), never the victim's.
    const victim = randomContainerId();
    const victimUid = randomPodUid();
    const forged: [string, string, { containerId: string; podUid?: string } | undefined][] = [
      [
        'a victim slice:cri-containerd:id below its own systemd scope',
        `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid_}.slice/cri-containerd-${id}.scope/` +
          `kubepods-besteffort-pod${victimUid.replaceAll('-', '_')}.slice:cri-containerd:${victim}`,
        { containerId: id, podUid: uid },
      ],
      [
        'a kubepods tree below its own container',
        `/kubepods/besteffort/pod${uid}/${id}/kubepods/pod${victimUid}/${victim}`,
        { containerId: id, podUid: uid },
      ],
      ['a Docker scope in a CI service', `/system.slice/sigil-test-ci.service/docker-${victim}.scope`, undefined],
    ];
    it.skipIf(skip !== undefined).each(forged)(
      `forged: %s: %s${skip === undefined ? '' : ` (skipped: ${skip})`}`,
      async (_name, path, expected) => {
        child = await spawnInCgroup(version, path);
        await expect(readContainerIdentity(child.pid)).resolves.toEqual(expected);
      },
    );
  },
);

describe.each<CgroupVersion>(['v1', 'v2'])(
  'readContainerIdentity by an agent in a pod of kind, cgroup %s',
  (version) => {
    const skip = cgroupSkipReason(version);
    let child: CgroupChild | undefined;
    let agent: CgroupPlacement | undefined;
    let dir: string | undefined;
    afterEach(async () => {
      await child?.stop();
      agent?.release();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
      child = agent = dir = undefined;
    });

    // This process stands for the agent: it moves into a pod of kind's node container for the test, and reads the
    // real /proc through a link of its own (the agent's prefix is read once per procfs root).
    it.skipIf(skip !== undefined)(
      `reads the node's pods below its own prefix, and not another container's kubepods tree${skip === undefined ? '' : ` (skipped: ${skip})`}`,
      async () => {
        const node = randomContainerId();
        agent = placeInCgroup(
          process.pid,
          version,
          `/docker/${node}/kubepods/burstable/pod${randomPodUid()}/${randomContainerId()}`,
        );
        dir = await mkdtemp(join(tmpdir(), 'sigil-proc-link-'));
        await symlink('/proc', join(dir, 'proc'));
        const procRoot = join(dir, 'proc');
        const [podUid, containerId] = [randomPodUid(), randomContainerId()];
        child = await spawnInCgroup(version, `/docker/${node}/kubepods/besteffort/pod${podUid}/${containerId}`);
        await expect(readContainerIdentity(child.pid, procRoot)).resolves.toEqual({ containerId, podUid });
        await child.stop();
        const other = randomContainerId();
        child = await spawnInCgroup(version, `/docker/${other}/kubepods/besteffort/pod${podUid}/${containerId}`);
        await expect(readContainerIdentity(child.pid, procRoot)).resolves.toEqual({ containerId: other });
      },
    );
  },
);
