/**
 * The k8s workload attestor end to end: the real built `sigil-server` (with `--node-attestor k8s_psat:…`) and
 * `sigil-agent` (attesting with a projected-token file, and running `--workload-attestor unix --workload-attestor
 * k8s:…`) processes, against the stand-ins for what cannot run here: the Kubernetes API server
 * (test/support/fake-kube-apiserver.ts) and the kubelet (test/support/fake-kubelet.ts). A workload is a real process
 * in a real cgroup of the kubelet's shape for its pod (root only), calling the agent's Workload API socket: it gets
 * the SVID of an entry with `k8s:ns`/`k8s:sa` selectors parented by the agent's ID, a process outside the pod does
 * not, and with the kubelet down the pod workload gets nothing while the agent stays up.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CgroupPlacement,
  type CgroupVersion,
  cgroupSkipReason,
  placeInCgroup,
  randomContainerId,
  randomPodUid,
} from '../support/cgroups.js';
import { FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import { FakeKubelet, type FakePod } from '../support/fake-kubelet.js';
import { type RelayCaller, spawnRelayCaller } from '../support/relay-caller.js';
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
const KUBELET_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.sigil-agent-service-account.sig';
const NODE = { name: 'node-1', uid: '7c1e9a4f-2b6d-4e3a-9f8c-5d0b1a2c3e4f', internalIp: '10.0.0.21' };
const AGENT_ID = `${TD}/sigil/agent/k8s_psat/prod/${NODE.uid}`;
const PERMISSION_DENIED = 7;

/** The cgroup version this machine lets root create groups in (v2 first), or why none. */
const version: CgroupVersion | undefined = (['v2', 'v1'] as const).find((each) => cgroupSkipReason(each) === undefined);
const skip = version === undefined ? cgroupSkipReason('v2') : undefined;
const skipped = skip === undefined ? '' : ` (skipped: ${skip})`;

describe.skipIf(skip !== undefined)(`k8s workload attestation end to end${skipped}`, () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let kubelet: FakeKubelet;
  let kube: FakeKubeApiServer;
  const socketPath = (): string => join(scratch, 'agent', 'api.sock');
  const podUid = randomPodUid();
  const containerId = randomContainerId();
  const pod: FakePod = {
    uid: podUid,
    name: 'web-5d8f7-abcde',
    namespace: 'shop',
    serviceAccount: 'web',
    nodeName: 'node-1',
    labels: { app: 'web' },
    owners: [{ kind: 'ReplicaSet', name: 'web-5d8f7', uid: randomPodUid() }],
    containers: [{ name: 'app', image: 'shop/web:2.1', id: containerId }],
  };
  const callers: RelayCaller[] = [];
  const placements: CgroupPlacement[] = [];

  /** A Workload API caller in the pod's container cgroup (the kubelet cgroupfs driver's path). */
  async function podCaller(): Promise<RelayCaller> {
    const caller = await spawnRelayCaller(socketPath());
    callers.push(caller);
    placements.push(placeInCgroup(caller.pid, version!, `/kubepods/besteffort/pod${podUid}/${containerId}`));
    return caller;
  }

  async function hostCaller(): Promise<RelayCaller> {
    const caller = await spawnRelayCaller(socketPath());
    callers.push(caller);
    return caller;
  }

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-k8s-e2e-'));
    await chmod(scratch, 0o755);
    kubelet = await FakeKubelet.start({ nodeName: 'node-1', tokens: [KUBELET_TOKEN], pods: [pod] });
    const caPath = join(scratch, 'kubelet-ca.crt');
    const tokenPath = join(scratch, 'token');
    await writeFile(caPath, kubelet.caPem);
    await writeFile(tokenPath, KUBELET_TOKEN, { mode: 0o600 });

    // The cluster as the server sees it: the agent's node and pod, and the agent's projected token for the server.
    kube = await FakeKubeApiServer.start();
    kube.addNode(NODE);
    kube.addPod({ namespace: 'sigil', name: 'sigil-agent-q8x2z', nodeName: NODE.name, serviceAccount: 'sigil-agent' });
    const kubeconfig = join(scratch, 'kubeconfig');
    await writeFile(kubeconfig, await kube.kubeconfig(), { mode: 0o600 });
    const psatPath = join(scratch, 'sigil-agent-token');
    const psat = kube.issueToken({
      namespace: 'sigil',
      serviceAccount: 'sigil-agent',
      pod: { name: 'sigil-agent-q8x2z' },
      audiences: ['sigil-server'],
    });
    await writeFile(psatPath, psat, { mode: 0o600 });

    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: [
        '--node-attestor',
        `k8s_psat:cluster=prod,service_account_allow_list=sigil:sigil-agent,kube_config_file=${kubeconfig}`,
      ],
    });
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      `${TD}/ns/shop/sa/web`,
      '--parent-id',
      AGENT_ID,
      '--selector',
      'k8s:ns:shop',
      '--selector',
      'k8s:sa:web',
    ]);
    await mkdir(join(scratch, 'agent'), { mode: 0o755 });
    const k8sOptions = [
      'kubelet_host=127.0.0.1',
      'node_name=node-1',
      `kubelet_secure_port=${kubelet.port}`,
      `kubelet_ca_path=${caPath}`,
      `token_path=${tokenPath}`,
      'poll_retry_interval=100ms',
    ];
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: socketPath(),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      flags: [
        '--node-attestor',
        `k8s_psat:cluster=prod,token_path=${psatPath}`,
        '--workload-attestor',
        'unix',
        '--workload-attestor',
        `k8s:${k8sOptions.join(',')}`,
      ],
    });
    await agentReady(agent);
    await agent.waitFor(new RegExp(`"agentId":"${AGENT_ID}","method":"k8s_psat"`));
  }, 180_000);

  afterAll(async () => {
    for (const caller of callers) await caller.close();
    for (const placement of placements) placement.release();
    await agent?.stop('SIGKILL');
    await server?.process.stop('SIGKILL');
    await kubelet?.stop();
    await kube?.close();
    await closeTestDatabase();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  it("gives a workload in the pod's container the SVID of the entry naming its namespace and service account", async () => {
    const caller = await podCaller();
    expect(await caller.fetchX509SvidIds()).toEqual({ ids: [`${TD}/ns/shop/sa/web`] });
  });

  it('gives a process outside the pod nothing', async () => {
    const caller = await hostCaller();
    expect(await caller.fetchX509SvidIds()).toEqual({ grpcStatus: PERMISSION_DENIED, message: 'no identity issued' });
  });

  it('gives the pod workload nothing while the kubelet is down, and the agent stays up', async () => {
    await kubelet.stop();
    const from = agent.output().length;
    const caller = await podCaller();
    expect(await caller.fetchX509SvidIds()).toEqual({ grpcStatus: PERMISSION_DENIED, message: 'no identity issued' });
    await agent.waitFor(/k8s: cannot use the kubelet's pod list, pod workloads get no k8s selectors: .*ECONNREFUSED/, {
      from,
      timeoutMs: 5_000,
    });
    expect(agent.running).toBe(true);
    expect(agent.output()).not.toContain(KUBELET_TOKEN);
    // Back up: the same workload gets its identity again on its next call.
    await kubelet.restart();
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(await caller.fetchX509SvidIds()).toEqual({ ids: [`${TD}/ns/shop/sa/web`] });
  });
});
