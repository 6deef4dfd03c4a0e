import { afterEach, describe, expect, it } from 'vitest';
import {
  type CgroupChild,
  type CgroupVersion,
  cgroupSkipReason,
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
  ['kind', `/docker/${node}/kubepods/besteffort/pod${uid}/${id}`, { containerId: id, podUid: uid }],
  ['nested kubelet', `/kubelet/kubepods/besteffort/pod${uid}/${id}`, { containerId: id, podUid: uid }],
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
  },
);
