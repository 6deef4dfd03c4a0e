import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CgroupVersion,
  cgroupSkipReason,
  randomPodUid,
  spawnInCgroup,
} from '../../../../../../test/support/cgroups.js';
import { FakeDockerEngine, randomContainer } from '../../../../../../test/support/fake-docker-engine.js';
import { parseCgroupFile } from '../cgroups/container-identity.js';
import { type WorkloadCaller } from '../workload-attestor.js';
import { DockerWorkloadAttestor, parseDockerOptions, type DockerAttestorOptions } from './docker-attestor.js';

// Real processes in real cgroups of Docker's shapes, the real cgroup rule, the attestor, and a stand-in daemon.

const never = new AbortController().signal;
const callerOf = (pid: number): WorkloadCaller => ({
  pid,
  uid: 0,
  gid: 0,
  startTime: 1n,
  process: { isAlive: () => true },
});
const web = randomContainer({ name: 'web', image: 'nginx:1.27', labels: { 'com.example.app': 'web' } });

describe.each<CgroupVersion>(['v1', 'v2'])('docker attestor, real cgroup %s groups', (version) => {
  const skip = cgroupSkipReason(version);
  const title = (text: string): string => (skip === undefined ? text : `${text} (skipped: ${skip})`);
  let engine: FakeDockerEngine;
  let docker: DockerWorkloadAttestor;

  beforeAll(async () => {
    engine = await FakeDockerEngine.start();
    engine.add(web);
    const options = parseDockerOptions({ docker_socket_path: engine.url }) as DockerAttestorOptions;
    docker = new DockerWorkloadAttestor(options, { logger: { debug: () => undefined } });
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it.skipIf(skip !== undefined).each([`/docker/${web.id}`, `/system.slice/docker-${web.id}.scope`])(
    title("a process in the container's cgroup %s gets its labels"),
    async (path) => {
      const child = await spawnInCgroup(version, path);
      try {
        const selectors = await docker.attest(callerOf(child.pid), never);
        expect(selectors.map((selector) => selector.value)).toEqual([
          'label:com.example.app:web',
          'image_id:nginx:1.27',
          `image_config_digest:${web.imageId}`,
        ]);
      } finally {
        await child.stop();
      }
    },
  );

  it.skipIf(skip !== undefined)(title('a process in a kubelet container Docker does not know gets none'), async () => {
    const other = randomContainer({ name: 'k', image: 'k' });
    const child = await spawnInCgroup(version, `/kubepods/besteffort/pod${randomPodUid()}/${other.id}`);
    try {
      expect(await docker.attest(callerOf(child.pid), never)).toEqual([]);
    } finally {
      await child.stop();
    }
  });

  // Only meaningful where this test runs outside any container itself (its children start in its cgroups).
  const inContainer = parseCgroupFile(readFileSync('/proc/self/cgroup', 'utf8')) !== undefined;
  it.skipIf(inContainer)(
    `a process outside any container gets none, and the daemon is not asked${
      inContainer ? ' (skipped: this test runs in a container)' : ''
    }`,
    async () => {
      const child = spawn('sleep', ['30'], { stdio: 'ignore' });
      await once(child, 'spawn');
      try {
        engine.requests.length = 0;
        expect(await docker.attest(callerOf(child.pid!), never)).toEqual([]);
        expect(engine.requests).toEqual([]);
      } finally {
        child.kill('SIGKILL');
      }
    },
  );
});
