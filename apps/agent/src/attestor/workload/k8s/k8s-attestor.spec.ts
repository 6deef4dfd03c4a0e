/**
 * The k8s attestor against the fake kubelet on a real TLS socket, with callers' cgroup files in a procfs-shaped
 * directory (the real-cgroup spec puts real processes in real cgroups): matching, the pitfalls, polling, the fallback,
 * a kubelet that is down or refuses the token.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSelector } from '@sigil/runtime';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubelet, type FakePod } from '../../../../../../test/support/fake-kubelet.js';
import { CompositeWorkloadAttestor, WorkloadAttestationError, type WorkloadCaller } from '../workload-attestor.js';
import { K8sWorkloadAttestor } from './k8s-attestor.js';
import { parseK8sOptions } from './k8s-options.js';

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.agent.sig';
const hex = (digit: string): string => digit.repeat(64);
const POD_UID = '6f1c2d9e-8a43-4f0b-9d2e-3b7c1a5e9f00';
const APP_ID = hex('a');
const INIT_ID = hex('c');
const DEBUG_ID = hex('d');
const NEW_ID = hex('e');
const DIGEST = 'docker.io/library/nginx@sha256:' + '9'.repeat(64);

const pod: FakePod = {
  uid: POD_UID,
  name: 'web-0',
  namespace: 'shop',
  serviceAccount: 'web',
  nodeName: 'node-1',
  labels: { app: 'web' },
  owners: [{ kind: 'StatefulSet', name: 'web', uid: '0d6f4c1e-2b3a-4c5d-8e9f-a0b1c2d3e4f5' }],
  containers: [
    { name: 'app', image: 'nginx:1.27', id: APP_ID, statusImage: 'nginx:latest', imageId: DIGEST },
    { name: 'late', image: 'shop/late:1', id: NEW_ID, runtime: 'cri-o' },
  ],
  initContainers: [{ name: 'migrate', image: 'shop/migrate:3', id: INIT_ID, runtime: 'docker' }],
  ephemeralContainers: [{ name: 'debugger', image: 'busybox:1.36', id: DEBUG_ID }],
};

const POD_SELECTORS = [
  'k8s:sa:web',
  'k8s:ns:shop',
  'k8s:node-name:node-1',
  `k8s:pod-uid:${POD_UID}`,
  'k8s:pod-name:web-0',
  'k8s:pod-image-count:2',
  'k8s:pod-init-image-count:1',
  'k8s:pod-image:nginx:1.27',
  'k8s:pod-image:shop/late:1',
  `k8s:pod-image:${DIGEST}`,
  'k8s:pod-init-image:shop/migrate:3',
  'k8s:pod-label:app:web',
  'k8s:pod-owner:StatefulSet:web',
  'k8s:pod-owner-uid:StatefulSet:0d6f4c1e-2b3a-4c5d-8e9f-a0b1c2d3e4f5',
];

/** cgroup v2 paths of the kubelet's systemd driver and cgroupfs driver. */
const systemdPath = (id: string, runtime = 'cri-containerd'): string =>
  `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_UID.replaceAll('-', '_')}.slice/` +
  `${runtime}-${id}.scope\n`;
const cgroupfsPath = (id: string): string => `0::/kubepods/besteffort/pod${POD_UID}/${id}\n`;

describe('K8sWorkloadAttestor', () => {
  let kubelet: FakeKubelet;
  let dir: string;
  let procRoot: string;
  const warnings: string[] = [];
  const logger = { debug: () => undefined, warn: (message: string) => void warnings.push(message) };
  const attestors: K8sWorkloadAttestor[] = [];
  let nextPid = 1000;

  /** A caller whose `/proc/<pid>/cgroup` holds `cgroup`. */
  async function caller(cgroup: string): Promise<WorkloadCaller> {
    const pid = nextPid++;
    await mkdir(join(procRoot, String(pid)), { recursive: true });
    await writeFile(join(procRoot, String(pid), 'cgroup'), cgroup);
    return { pid, uid: 1000, gid: 1000, startTime: 1n, process: { isAlive: () => true } };
  }

  function attestor(options: Record<string, string> = {}, attestationTimeoutMs = 10_000): K8sWorkloadAttestor {
    const settings = parseK8sOptions(
      {
        kubelet_host: '127.0.0.1',
        node_name: 'node-1',
        kubelet_secure_port: String(kubelet.port),
        kubelet_ca_path: join(dir, 'ca.crt'),
        token_path: join(dir, 'token'),
        poll_retry_interval: '20ms',
        ...options,
      },
      {},
    );
    const created = new K8sWorkloadAttestor(settings, { attestationTimeoutMs, procRoot, logger });
    attestors.push(created);
    return created;
  }

  const attest = async (k8s: K8sWorkloadAttestor, of: WorkloadCaller, signal = new AbortController().signal) =>
    (await k8s.attest(of, signal)).map(formatSelector);

  beforeAll(async () => {
    kubelet = await FakeKubelet.start({ nodeName: 'node-1', tokens: [TOKEN], pods: [pod] });
    dir = await mkdtemp(join(tmpdir(), 'sigil-k8s-attestor-'));
    procRoot = join(dir, 'proc');
    await writeFile(join(dir, 'ca.crt'), kubelet.caPem);
    await writeFile(join(dir, 'token'), TOKEN);
  });

  afterEach(async () => {
    for (const created of attestors.splice(0)) created.close();
    warnings.length = 0;
    kubelet.setPods([pod]);
    kubelet.acceptTokens([TOKEN]);
    await kubelet.restart();
  });

  afterAll(async () => {
    await kubelet?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("gives a pod's container its pod and container selectors (systemd driver path, containerd)", async () => {
    expect(await attest(attestor(), await caller(systemdPath(APP_ID)))).toEqual([
      ...POD_SELECTORS,
      'k8s:container-name:app',
      'k8s:container-image:nginx:1.27',
      `k8s:container-image:${DIGEST}`,
    ]);
  });

  it('finds a container of the cgroupfs driver path whose status says cri-o://', async () => {
    const selectors = await attest(attestor(), await caller(cgroupfsPath(NEW_ID)));
    expect(selectors.slice(-2)).toEqual(['k8s:container-name:late', 'k8s:container-image:shop/late:1']);
  });

  it('finds an init container under initContainerStatuses (docker://)', async () => {
    const selectors = await attest(attestor(), await caller(systemdPath(INIT_ID, 'docker')));
    expect(selectors.slice(-2)).toEqual(['k8s:container-name:migrate', 'k8s:container-image:shop/migrate:3']);
  });

  it('finds an ephemeral container under ephemeralContainerStatuses', async () => {
    const selectors = await attest(attestor(), await caller(cgroupfsPath(DEBUG_ID)));
    expect(selectors.slice(-2)).toEqual(['k8s:container-name:debugger', 'k8s:container-image:busybox:1.36']);
  });

  it('gives a process in no pod no selectors and no error, without asking the kubelet', async () => {
    const before = kubelet.requests;
    const k8s = attestor();
    expect(await attest(k8s, await caller('0::/user.slice/user-1000.slice/session-3.scope\n'))).toEqual([]);
    expect(await attest(k8s, await caller(`0::/system.slice/docker-${hex('f')}.scope\n`))).toEqual([]);
    expect(kubelet.requests).toBe(before);
  });

  it('fails when the cgroup file cannot be read (the process is gone)', async () => {
    const gone: WorkloadCaller = { pid: 999_999, uid: 0, gid: 0, startTime: 1n, process: { isAlive: () => true } };
    await expect(attestor().attest(gone, new AbortController().signal)).rejects.toThrow(/999999/);
  });

  it('shares one kubelet read between concurrent calls', async () => {
    const k8s = attestor({ poll_retry_interval: '5s' });
    const callers = await Promise.all(Array.from({ length: 20 }, () => caller(systemdPath(APP_ID))));
    const before = kubelet.requests;
    const answers = await Promise.all(callers.map((each) => attest(k8s, each)));
    expect(kubelet.requests - before).toBe(1);
    for (const answer of answers) expect(answer).toContain('k8s:container-name:app');
  });

  describe('a container calling before the kubelet publishes its status', () => {
    it('is found by reading the pod list again every poll_retry_interval', async () => {
      kubelet.withholdStatus(NEW_ID, 2);
      const before = kubelet.requests;
      const selectors = await attest(attestor(), await caller(systemdPath(NEW_ID, 'crio')));
      expect(selectors).toContain('k8s:container-name:late');
      expect(kubelet.requests - before).toBe(3);
    });

    it('fails after max_poll_attempts, naming the pod UID and container ID looked for', async () => {
      kubelet.withholdStatus(NEW_ID, 100);
      const before = kubelet.requests;
      const error = await attestor({ max_poll_attempts: '3' })
        .attest(await caller(systemdPath(NEW_ID)), new AbortController().signal)
        .then(
          () => expect.unreachable('expected a rejection'),
          (caught: unknown) => caught as Error,
        );
      expect(error).toBeInstanceOf(WorkloadAttestationError);
      expect(error.message).toBe(
        `k8s: the kubelet's pod list has no container ${NEW_ID} of pod ${POD_UID} after 3 reads: ` +
          `pod ${POD_UID} is listed without a status for container ${NEW_ID}`,
      );
      expect(kubelet.requests - before).toBe(3);
      kubelet.withholdStatus(NEW_ID, 0);
    });

    it('says when the pod itself is not listed', async () => {
      kubelet.setPods([]);
      await expect(
        attestor({ max_poll_attempts: '2' }).attest(await caller(cgroupfsPath(APP_ID)), new AbortController().signal),
      ).rejects.toThrow(`after 2 reads: pod ${POD_UID} (container ${APP_ID}) is not listed`);
    });

    it("stops polling in time to answer within the call's deadline", async () => {
      kubelet.setPods([]);
      // Reads at 0, 1 and 2 s: a fourth, at 3 s, would come at the composite's deadline. The attestor's own answer
      // (not the composite's "did not answer within" timeout) shows it stopped in time; no clock is asserted.
      const composite = new CompositeWorkloadAttestor([attestor({ poll_retry_interval: '1s' }, 3_000)], {
        timeoutMs: 3_000,
      });
      const before = kubelet.requests;
      const error = await composite.attest(await caller(cgroupfsPath(APP_ID))).then(
        () => expect.unreachable('expected a rejection'),
        (caught: unknown) => caught as Error,
      );
      expect(error.message).toMatch(/after 3 reads: pod .* is not listed/);
      expect(kubelet.requests - before).toBe(3);
    });

    it('stops at once when the call is aborted', async () => {
      kubelet.setPods([]);
      const controller = new AbortController();
      // A poll interval far longer than the test's own timeout: only stopping at the abort lets it finish.
      const attesting = attestor({ poll_retry_interval: '60s' }, 120_000).attest(
        await caller(cgroupfsPath(APP_ID)),
        controller.signal,
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      controller.abort(new Error('the call was cancelled'));
      await expect(attesting).rejects.toThrow('the call was cancelled');
    });

    it('gets the pod selectors only, at once, with pod_level_fallback; its container selectors once published', async () => {
      kubelet.withholdStatus(NEW_ID, 1);
      const k8s = attestor({ pod_level_fallback: 'true' });
      expect(await attest(k8s, await caller(systemdPath(NEW_ID)))).toEqual(POD_SELECTORS);
      await new Promise((resolve) => setTimeout(resolve, 30));
      expect(await attest(k8s, await caller(systemdPath(NEW_ID)))).toContain('k8s:container-name:late');
    });

    it.each([['pod_level_fallback'], ['disable_container_selectors']])(
      "refuses the pod selectors with %s for a container ID the list gives another pod (the victim's)",
      async (option) => {
        const victimUid = '0b7e9a52-3c1d-4e6f-8a9b-c0d1e2f3a4b5';
        const victimId = hex('f');
        kubelet.setPods([
          pod,
          {
            uid: victimUid,
            name: 'payments-0',
            namespace: 'prod',
            serviceAccount: 'payments',
            nodeName: 'node-1',
            containers: [{ name: 'pay', image: 'pay:1', id: victimId }],
          },
        ]);
        await expect(
          attestor({ [option]: 'true' }).attest(await caller(systemdPath(victimId)), new AbortController().signal),
        ).rejects.toThrow(
          `k8s: container ${victimId} is pod ${victimUid}'s in the kubelet's pod list, not pod ${POD_UID}'s as the ` +
            `caller's cgroups say: no pod selectors`,
        );
      },
    );

    it('gets no fallback for a pod that is not listed', async () => {
      kubelet.setPods([]);
      await expect(
        attestor({ pod_level_fallback: 'true', max_poll_attempts: '2' }).attest(
          await caller(systemdPath(NEW_ID)),
          new AbortController().signal,
        ),
      ).rejects.toThrow('is not listed');
    });
  });

  it("never gives container selectors with SPIRE's disable_container_selectors", async () => {
    const k8s = attestor({ disable_container_selectors: 'true' });
    expect(await attest(k8s, await caller(systemdPath(APP_ID)))).toEqual(POD_SELECTORS);
    kubelet.withholdStatus(NEW_ID, 1);
    expect(await attest(k8s, await caller(systemdPath(NEW_ID)))).toEqual(POD_SELECTORS);
  });

  describe('a kubelet that cannot be used', () => {
    it('gives a pod workload no k8s selectors when the kubelet is down, with one warning for many calls', async () => {
      await kubelet.stop();
      const k8s = attestor({ poll_retry_interval: '10ms' });
      for (let call = 0; call < 5; call++) {
        expect(await attest(k8s, await caller(systemdPath(APP_ID)))).toEqual([]);
        await new Promise((resolve) => setTimeout(resolve, 15));
      }
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(
        /^k8s: cannot use the kubelet's pod list, pod workloads get no k8s selectors: kubelet https:\/\/127\.0\.0\.1:\d+\/pods: .*ECONNREFUSED/,
      );
    });

    it('gives no k8s selectors when the kubelet refuses the token, never logging the token', async () => {
      kubelet.acceptTokens(['rotated-elsewhere']);
      expect(await attest(attestor(), await caller(systemdPath(APP_ID)))).toEqual([]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('answered 401 Unauthorized');
      expect(warnings.join('\n')).not.toContain(TOKEN);
    });

    it('gives no k8s selectors when the kubelet answers too slowly for the deadline', async () => {
      kubelet.setDelay(3_000);
      try {
        // The warning names the attestor's own request timeout: it gave up, rather than the deadline passing.
        expect(await attest(attestor({}, 1_000), await caller(systemdPath(APP_ID)))).toEqual([]);
        expect(warnings[0]).toMatch(/no complete answer within 500 ms/);
      } finally {
        kubelet.setDelay(0);
      }
    });
  });

  it('warns at start without a node name: the kubelet certificate is then checked against the CA only', async () => {
    const settings = parseK8sOptions(
      {
        kubelet_secure_port: String(kubelet.port),
        kubelet_ca_path: join(dir, 'ca.crt'),
        token_path: join(dir, 'token'),
      },
      {},
    );
    const k8s = new K8sWorkloadAttestor(settings, { attestationTimeoutMs: 10_000, procRoot, logger });
    attestors.push(k8s);
    await k8s.prepare();
    expect(warnings).toEqual([
      'k8s workload attestor: no node name (node_name, or the variable node_name_env names): the kubelet is ' +
        'dialled on 127.0.0.1 and its certificate is checked against the CA without a name',
    ]);
    expect(await attest(k8s, await caller(systemdPath(APP_ID)))).toContain('k8s:container-name:app');
  });

  it('checks its files at start', async () => {
    await expect(attestor().prepare()).resolves.toBeUndefined();
    await expect(attestor({ token_path: join(dir, 'missing-token') }).prepare()).rejects.toThrow(
      /k8s workload attestor: token_path .*missing-token: cannot be read/,
    );
  });
});
