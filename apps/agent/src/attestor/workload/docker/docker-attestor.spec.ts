import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeDockerEngine, randomContainer } from '../../../../../../test/support/fake-docker-engine.js';
import { loadAgentConfig } from '../../../config.js';
import { type ContainerIdentity } from '../cgroups/container-identity.js';
import { WorkloadAttestationError, type WorkloadCaller } from '../workload-attestor.js';
import {
  DEFAULT_DOCKER_REQUEST_TIMEOUT_MS,
  DockerWorkloadAttestor,
  type DockerAttestorOptions,
  parseDockerOptions,
} from './docker-attestor.js';

const caller: WorkloadCaller = { pid: 4321, uid: 0, gid: 0, startTime: 1n, process: { isAlive: () => true } };
const quiet = { debug: () => undefined };
const never = new AbortController().signal;

const web = randomContainer({
  name: 'web',
  image: 'nginx:1.27',
  labels: { 'com.example.app': 'web', 'com.example.tier': 'front' },
  env: ['PATH=/usr/bin', 'APP_ROLE=frontend', 'DB_PASSWORD=hunter2', 'REGION=eu-west-1'],
});

describe('docker workload attestor (against a fake Docker Engine on a real Unix socket)', () => {
  let engine: FakeDockerEngine;
  const attestor = (
    options: Partial<DockerAttestorOptions> = {},
    containerOf: (pid: number) => Promise<ContainerIdentity | undefined> = async () => ({ containerId: web.id }),
  ) =>
    new DockerWorkloadAttestor(
      {
        socketPath: engine.socketPath,
        socketName: engine.url,
        apiVersion: undefined,
        envAllowList: new Set(['APP_ROLE', 'REGION']),
        requestTimeoutMs: DEFAULT_DOCKER_REQUEST_TIMEOUT_MS,
        ...options,
      },
      { logger: quiet, containerOf },
    );

  beforeAll(async () => {
    engine = await FakeDockerEngine.start();
    engine.add(web);
  });
  afterEach(() => {
    engine.requests.length = 0;
    engine.override = undefined;
    engine.delayMs = 0;
  });
  afterAll(async () => {
    await engine.stop();
  });

  it("gives SPIRE's selectors: labels, image reference, image ID and only the allow-listed variables", async () => {
    const selectors = await attestor().attest(caller, never);
    expect(selectors.map((selector) => `${selector.type}:${selector.value}`)).toEqual([
      'docker:label:com.example.app:web',
      'docker:label:com.example.tier:front',
      'docker:image_id:nginx:1.27',
      `docker:image_config_digest:${web.imageId}`,
      'docker:env:APP_ROLE=frontend',
      'docker:env:REGION=eu-west-1',
    ]);
  });

  it('negotiates the API version with /_ping once, then inspects the container by its full ID', async () => {
    const docker = attestor();
    await docker.attest(caller, never);
    await docker.attest(caller, never);
    expect(engine.requests).toEqual([
      'GET /_ping',
      `GET /v1.47/containers/${web.id}/json`,
      `GET /v1.47/containers/${web.id}/json`,
    ]);
  });

  it('uses docker_version when set, without /_ping', async () => {
    await attestor({ apiVersion: '1.44' }).attest(caller, never);
    expect(engine.requests).toEqual([`GET /v1.44/containers/${web.id}/json`]);
  });

  it('gives a process in no container no selectors and asks the daemon nothing', async () => {
    expect(await attestor({}, async () => undefined).attest(caller, never)).toEqual([]);
    expect(engine.requests).toEqual([]);
  });

  it("gives no selectors, and no error, for a container the daemon does not know (another runtime's)", async () => {
    const other = randomContainer({ name: 'unused', image: 'x' }).id;
    expect(await attestor({}, async () => ({ containerId: other })).attest(caller, never)).toEqual([]);
    expect(engine.requests.at(-1)).toBe(`GET /v1.47/containers/${other}/json`);
  });

  it("does not take a container *named* like the caller's container ID for it", async () => {
    // A kubelet's containerd container has no Docker twin; whoever may run Docker containers could name one after
    // it, and the daemon resolves names too: the answer's Id must be the ID asked for.
    const kubeletContainer = randomContainer({ name: 'x', image: 'x' }).id;
    const squatter = randomContainer({ name: kubeletContainer, image: 'evil', labels: { 'com.example.app': 'web' } });
    engine.add(squatter);
    try {
      expect(await attestor({}, async () => ({ containerId: kubeletContainer })).attest(caller, never)).toEqual([]);
    } finally {
      engine.containers.delete(squatter.id);
    }
  });

  it('skips values that cannot be selectors and keeps the others', async () => {
    const odd = randomContainer({
      name: 'odd',
      image: 'busybox',
      labels: { good: 'yes', bad: 'line\nbreak', huge: 'x'.repeat(2000) },
      env: ['APP_ROLE=a\u0007b', 'REGION=ok', 'APP_ROLE_EXTRA=1', 'NOEQUALS'],
    });
    engine.add(odd);
    const selectors = await attestor({}, async () => ({ containerId: odd.id })).attest(caller, never);
    expect(selectors.map((selector) => selector.value)).toEqual([
      'label:good:yes',
      'image_id:busybox',
      `image_config_digest:${odd.imageId}`,
      'env:REGION=ok',
    ]);
  });

  it('fails the call, naming the socket, when the daemon cannot be reached', async () => {
    const missing = `${engine.socketPath}.missing`;
    const docker = attestor({ socketPath: missing, socketName: `unix://${missing}` });
    const failure = docker.attest(caller, never);
    await expect(failure).rejects.toBeInstanceOf(WorkloadAttestationError);
    await expect(failure).rejects.toThrow(`process 4321: cannot reach the Docker Engine at unix://${missing}: ENOENT`);
  });

  it('fails the call when the daemon does not answer within request_timeout', async () => {
    engine.delayMs = 2000;
    await expect(attestor({ requestTimeoutMs: 200 }).attest(caller, never)).rejects.toThrow(
      `process 4321: the Docker Engine at ${engine.url} did not answer within 200ms`,
    );
  });

  it('stops at once when the call is aborted', async () => {
    // The daemon would answer after 2 s (a success): only stopping at the abort gives this rejection.
    engine.delayMs = 2000;
    const abort = new AbortController();
    const attesting = attestor().attest(caller, abort.signal);
    setTimeout(() => abort.abort(new Error('the call was cancelled')), 100);
    await expect(attesting).rejects.toThrow('the call was cancelled');
  });

  it('fails on an error status, quoting the daemon, and on a body that is not a container', async () => {
    engine.override = { status: 500, body: '{"message":"driver \\"overlay2\\" failed\\u0007"}' };
    await expect(attestor({ apiVersion: '1.47' }).attest(caller, never)).rejects.toThrow(
      `process 4321: the Docker Engine at ${engine.url} answered 500 inspecting container ${web.id}: driver "overlay2" failed?`,
    );
    engine.override = { status: 200, body: '{"Id": 42}' };
    await expect(attestor({ apiVersion: '1.47' }).attest(caller, never)).rejects.toThrow(
      'a body that is not a container',
    );
    engine.override = { status: 200, body: '{"Id":"x","Config":{"Labels":{"a":1}}}' };
    await expect(attestor({ apiVersion: '1.47' }).attest(caller, never)).rejects.toThrow(
      'a body that is not a container',
    );
  });

  it('refuses an answer larger than its cap', async () => {
    engine.override = { status: 200, body: JSON.stringify({ Id: web.id, Config: { Env: ['A='.padEnd(5e6, 'x')] } }) };
    await expect(attestor({ apiVersion: '1.47' }).attest(caller, never)).rejects.toThrow(
      `the Docker Engine at ${engine.url} answered /v1.47/containers/${web.id}/json with more than 4194304 bytes`,
    );
  });

  it("quotes the daemon's refusal of a docker_version it does not serve", async () => {
    await expect(attestor({ apiVersion: '1.99' }).attest(caller, never)).rejects.toThrow(
      'answered 400 inspecting container ' +
        `${web.id}: client version 1.99 is too new. Maximum supported API version is 1.47`,
    );
  });

  it("fails the call with the cgroup rule's message when the caller's cgroups name two containers", async () => {
    const docker = attestor({}, async () => {
      throw new Error('process 4321: /proc/4321/cgroup: the cgroup paths name two containers: a and b');
    });
    await expect(docker.attest(caller, never)).rejects.toThrow(
      'process 4321: /proc/4321/cgroup: the cgroup paths name two containers: a and b',
    );
  });
});

describe('docker attestor options', () => {
  it("defaults to SPIRE's socket, a negotiated version, no variables and a 5s request timeout", () => {
    expect(parseDockerOptions({})).toEqual({
      socketPath: '/var/run/docker.sock',
      socketName: 'unix:///var/run/docker.sock',
      apiVersion: undefined,
      envAllowList: new Set(),
      requestTimeoutMs: 5000,
    });
    expect(
      parseDockerOptions({
        docker_socket_path: 'unix:///run/docker.sock',
        docker_version: '1.44',
        env_allow_list: 'APP_ROLE; REGION;',
        request_timeout: '1500ms',
      }),
    ).toEqual({
      socketPath: '/run/docker.sock',
      socketName: 'unix:///run/docker.sock',
      apiVersion: '1.44',
      envAllowList: new Set(['APP_ROLE', 'REGION']),
      requestTimeoutMs: 1500,
    });
  });

  it('names every bad option', () => {
    expect(
      parseDockerOptions({
        docker_socket_path: 'tcp://127.0.0.1:2375',
        docker_version: 'latest',
        env_allow_list: 'A;B=C',
        request_timeout: '2h',
      }),
    ).toEqual([
      'docker_socket_path: must be unix:// and an absolute Unix socket path (the agent talks to the Docker Engine ' +
        'only on its local socket), got "tcp://127.0.0.1:2375"',
      'docker_version: must be a Docker Engine API version such as 1.44, got "latest"',
      'env_allow_list: must be variable names separated by ;, got "B=C"',
      'request_timeout: must be from 100ms to 1m, got "2h"',
    ]);
    expect(parseDockerOptions({ docker_socket_path: 'unix://relative.sock' })).toHaveLength(1);
  });

  it('is checked when the agent config loads: unknown options and bad values are config errors', () => {
    const base = { serverAddress: ['127.0.0.1:8081'], insecureBootstrap: true, trustDomain: 'example.org' };
    const load = (workloadAttestor: string[]) => loadAgentConfig({ flags: { ...base, workloadAttestor } });
    expect(
      load(['unix', 'docker:docker_socket_path=unix:///run/docker.sock,env_allow_list=A;B']).workloadAttestors,
    ).toEqual([
      { type: 'unix', options: {} },
      { type: 'docker', options: { docker_socket_path: 'unix:///run/docker.sock', env_allow_list: 'A;B' } },
    ]);
    // The last of a comma list of types may carry its options.
    expect(load(['unix,docker:docker_socket_path=unix:///d.sock,env_allow_list=A']).workloadAttestors).toEqual([
      { type: 'unix', options: {} },
      { type: 'docker', options: { docker_socket_path: 'unix:///d.sock', env_allow_list: 'A' } },
    ]);
    const fromEnv = loadAgentConfig({
      flags: base,
      env: { SIGIL_AGENT_WORKLOAD_ATTESTOR: ' unix  docker:docker_version=1.44 ' },
    }).workloadAttestors;
    expect(fromEnv).toEqual([
      { type: 'unix', options: {} },
      { type: 'docker', options: { docker_version: '1.44' } },
    ]);
    expect(() => load(['docker,unix:x=1'])).toThrow('--workload-attestor: unix: unknown option "x" (known: none)');
    expect(() => load(['docker:socket=/x'])).toThrow(
      '--workload-attestor: docker: unknown option "socket" (known: docker_socket_path, docker_version, ' +
        'env_allow_list, request_timeout)',
    );
    expect(() => load(['docker:request_timeout=forever'])).toThrow(
      '--workload-attestor: docker: request_timeout: must be a duration such as 90s, 15m or 1h30m',
    );
  });
});
