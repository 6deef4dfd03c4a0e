/**
 * The `docker` workload attestor end to end: the real built `sigil-server` and `sigil-agent` processes, the agent
 * run with `--workload-attestor unix,docker:docker_socket_path=…` against a stand-in Docker Engine on a real Unix
 * socket (Docker cannot run here), and real workload processes placed in real cgroups of Docker's shapes. A
 * process in the container's cgroup gets the SVID of an entry with `docker:label:…` selectors; one outside does not.
 */
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CgroupVersion, cgroupSkipReason, placeInCgroup } from '../support/cgroups.js';
import { FakeDockerEngine, randomContainer } from '../support/fake-docker-engine.js';
import { spawnRelayCaller } from '../support/relay-caller.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';

const TD = 'spiffe://example.org';
const PERMISSION_DENIED = 7;
const UNAVAILABLE = 14;

const versions = (['v2', 'v1'] as const).filter((version) => cgroupSkipReason(version) === undefined);
const skip = versions.length === 0 ? cgroupSkipReason('v2') : undefined;

describe.skipIf(skip !== undefined)(
  `docker workload attestor, real server and agent${skip === undefined ? '' : ` (skipped: ${skip})`}`,
  () => {
    let scratch: string;
    let server: ServerProcess;
    let agent: SigilProcess;
    let engine: FakeDockerEngine;
    const socket = (): string => join(scratch, 'agent', 'api.sock');
    const web = randomContainer({
      name: 'web',
      image: 'registry.example/web:2.1',
      labels: { 'com.example.app': 'web', 'com.example.team': 'payments' },
      env: ['APP_ROLE=frontend', 'SECRET_TOKEN=do-not-show'],
    });
    const worker = randomContainer({ name: 'worker', image: 'registry.example/worker:1', labels: {} });

    beforeAll(async () => {
      requireBuild();
      scratch = await mkdtemp(join(tmpdir(), 'sigil-docker-e2e-'));
      await chmod(scratch, 0o755);
      engine = await FakeDockerEngine.start();
      engine.add(web);
      engine.add(worker);
      server = await startServerProcess({ dir: join(scratch, 'server') });
      const bundleFile = join(scratch, 'bundle.pem');
      await server.writeBundle(bundleFile);
      const token = await server.joinToken(`${TD}/host/docker`);
      const entry = async (path: string, selectors: string[]): Promise<void> => {
        const args = ['entry', 'create', '--spiffe-id', `${TD}${path}`, '--parent-id', `${TD}/host/docker`];
        for (const selector of selectors) args.push('--selector', selector);
        await server.json<{ id: string }>(args);
      };
      await entry('/web', ['docker:label:com.example.app:web', 'docker:label:com.example.team:payments']);
      // Only a variable on the allow-list gives a selector: this entry must match nobody.
      await entry('/leaky', ['docker:env:SECRET_TOKEN=do-not-show']);
      await entry('/frontend', ['docker:env:APP_ROLE=frontend', `docker:image_id:${web.image}`]);
      await mkdir(join(scratch, 'agent'), { mode: 0o755 });
      agent = startAgentProcess({
        servers: [server.port],
        socketPath: socket(),
        dataDir: join(scratch, 'agent', 'data'),
        trustBundle: bundleFile,
        joinToken: token,
        flags: ['--workload-attestor', `unix,docker:docker_socket_path=${engine.url},env_allow_list=APP_ROLE`],
      });
      await agentReady(agent);
    }, 180_000);

    afterAll(async () => {
      await agent?.stop('SIGKILL');
      await server?.process.stop('SIGKILL');
      await engine?.stop();
      await closeTestDatabase();
      await rm(scratch, { recursive: true, force: true });
    });

    it.each(versions)(
      'gives a process in the container (cgroup %s, /docker/<id>) the SVIDs of its docker selectors',
      async (version: CgroupVersion) => {
        const caller = await spawnRelayCaller(socket());
        const placement = placeInCgroup(caller.pid, version, `/docker/${web.id}`);
        try {
          const answer = await caller.fetchX509SvidIds();
          expect(answer).toHaveProperty('ids');
          expect([...(answer as { ids: string[] }).ids].sort()).toEqual([`${TD}/frontend`, `${TD}/web`]);
        } finally {
          placement.release();
          await caller.close();
        }
      },
    );

    it.each(versions)(
      'gives the systemd shape (cgroup %s, /system.slice/docker-<id>.scope) the same',
      async (version: CgroupVersion) => {
        const caller = await spawnRelayCaller(socket());
        const placement = placeInCgroup(caller.pid, version, `/system.slice/docker-${web.id}.scope`);
        try {
          const answer = (await caller.fetchX509SvidIds()) as { ids: string[] };
          expect([...answer.ids].sort()).toEqual([`${TD}/frontend`, `${TD}/web`]);
        } finally {
          placement.release();
          await caller.close();
        }
      },
    );

    it('gives no identity to a process outside the container, nor to one in another container', async () => {
      const outside = await spawnRelayCaller(socket());
      const other = await spawnRelayCaller(socket());
      const placement = placeInCgroup(other.pid, versions[0]!, `/docker/${worker.id}`);
      try {
        expect(await outside.fetchX509SvidIds()).toEqual({
          grpcStatus: PERMISSION_DENIED,
          message: 'no identity issued',
        });
        expect(await other.fetchX509SvidIds()).toEqual({
          grpcStatus: PERMISSION_DENIED,
          message: 'no identity issued',
        });
      } finally {
        placement.release();
        await Promise.all([outside.close(), other.close()]);
      }
    });

    it('fails the call of a process in a container, naming the socket, when the Docker Engine is down', async () => {
      await engine.stop();
      const inside = await spawnRelayCaller(socket());
      const outside = await spawnRelayCaller(socket());
      const placement = placeInCgroup(inside.pid, versions[0]!, `/docker/${web.id}`);
      try {
        const answer = (await inside.fetchX509SvidIds()) as { grpcStatus: number; message: string };
        expect(answer.grpcStatus).toBe(UNAVAILABLE);
        expect(answer.message).toContain(`cannot reach the Docker Engine at ${engine.url}`);
        // A process in no container does not need the daemon.
        expect(await outside.fetchX509SvidIds()).toEqual({
          grpcStatus: PERMISSION_DENIED,
          message: 'no identity issued',
        });
      } finally {
        placement.release();
        await Promise.all([inside.close(), outside.close()]);
      }
    });

    it('never logs the value of a variable that is not on the allow-list', () => {
      expect(agent.output()).not.toContain('do-not-show');
    });
  },
);
