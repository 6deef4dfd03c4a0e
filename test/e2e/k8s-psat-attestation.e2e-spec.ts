/**
 * k8s_psat node attestation end to end: the real sigil-server (with `--node-attestor k8s_psat:…` and a kubeconfig)
 * and real sigil-agent processes (with `--node-attestor k8s_psat:cluster=…,token_path=…`), against the stand-in
 * Kubernetes API server (test/support/fake-kube-apiserver.ts) on a real HTTPS socket. The agent becomes
 * `spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node uid>` with SPIRE's node selectors, serves a workload parented
 * by a node alias on those selectors, and attests again with the rotated token after an eviction. Short SVID
 * lifetimes make the agent notice the eviction at its next renewal.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubeApiServer } from '../support/fake-kube-apiserver.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import {
  type WorkloadClient,
  firstMessage,
  idsOf,
  securityHeader,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const TTL_SECONDS = 10;
const NODE = { name: 'node-a', uid: '3f2d6c1e-8a7b-4c5d-9e0f-1a2b3c4d5e6f', internalIp: '10.0.0.11' };
const AGENT_ID = `${TD}/sigil/agent/k8s_psat/prod/${NODE.uid}`;

describe('k8s_psat node attestation (real server and agent, stand-in Kubernetes API)', () => {
  let scratch: string;
  let kube: FakeKubeApiServer;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: WorkloadClient;
  let bundleFile: string;
  let tokenPath: string;
  const children: SigilProcess[] = [];

  const agentToken = (): string =>
    kube.issueToken({
      namespace: 'sigil',
      serviceAccount: 'sigil-agent',
      pod: { name: 'sigil-agent-x7k2p' },
      audiences: ['sigil-server'],
    });

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-k8s-psat-e2e-'));
    kube = await FakeKubeApiServer.start();
    kube.addNode({ ...NODE, labels: { 'topology.kubernetes.io/zone': 'eu-1a' } });
    kube.addPod({
      namespace: 'sigil',
      name: 'sigil-agent-x7k2p',
      nodeName: NODE.name,
      serviceAccount: 'sigil-agent',
      labels: { app: 'sigil-agent' },
    });
    const kubeconfig = join(scratch, 'kubeconfig');
    await writeFile(kubeconfig, await kube.kubeconfig(), { mode: 0o600 });
    tokenPath = join(scratch, 'tokens', 'sigil-agent');
    await mkdir(join(scratch, 'tokens'));
    await writeFile(tokenPath, agentToken(), { mode: 0o600 });

    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: [
        '--x509-svid-ttl',
        String(TTL_SECONDS),
        '--node-attestor',
        `k8s_psat:cluster=prod,service_account_allow_list=kube-system:other;sigil:sigil-agent,` +
          `kube_config_file=${kubeconfig},allowed_node_label_keys=topology.kubernetes.io/zone`,
      ],
    });
    children.push(server.process);
    bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    // SPIRE's node alias on a node selector: every agent in zone eu-1a of cluster prod.
    for (const [spiffeId, parentId, selector] of [
      [`${TD}/k8s/eu-1a`, `${TD}/sigil/server`, 'k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a'],
      [`${TD}/web`, `${TD}/k8s/eu-1a`, `unix:uid:${UID}`],
    ] as const) {
      await server.json(['entry', 'create', '--spiffe-id', spiffeId, '--parent-id', parentId, '--selector', selector]);
    }

    await mkdir(join(scratch, 'agent'));
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      flags: ['--node-attestor', `k8s_psat:cluster=prod,token_path=${tokenPath}`],
    });
    children.push(agent);
    await agentReady(agent);
    client = workloadClient(join(scratch, 'agent', 'api.sock'));
  }, 180_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await kube?.close();
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('attests with the projected token as the node the API server names, with its selectors', async () => {
    await agent.waitFor(new RegExp(`"agentId":"${AGENT_ID}","method":"k8s_psat"`));
    const shown = await server.json<{ attestation_type: string; selectors: { type: string; value: string }[] }>([
      'agent',
      'show',
      '--spiffe-id',
      AGENT_ID,
    ]);
    expect(shown.attestation_type).toBe('k8s_psat');
    expect(shown.selectors.map((selector) => `${selector.type}:${selector.value}`)).toEqual(
      expect.arrayContaining([
        'k8s_psat:cluster:prod',
        'k8s_psat:agent_ns:sigil',
        'k8s_psat:agent_sa:sigil-agent',
        'k8s_psat:agent_pod_name:sigil-agent-x7k2p',
        'k8s_psat:agent_node_name:node-a',
        `k8s_psat:agent_node_uid:${NODE.uid}`,
        'k8s_psat:agent_node_ip:10.0.0.11',
        'k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a',
      ]),
    );
  });

  it('serves the workload of an entry parented by the node alias', async () => {
    const response = await firstMessage(client.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([`${TD}/web`]);
    expect((await verifySvidMessage(response.svids[0]!)).spiffeId.toString()).toBe(`${TD}/web`);
  });

  it('attests again with the rotated token after the server evicted it', async () => {
    const rotated = agentToken();
    await writeFile(tokenPath, rotated);
    expect((await server.cli(['agent', 'evict', '--spiffe-id', AGENT_ID])).code).toBe(0);
    // Refused on its next call, or at its next renewal, which for a k8s_psat agent is an attestation (5892905, as
    // SPIRE's agent): either way it attests again after the eviction, with the token now in the file.
    const from = agent.output().length;
    await agent.waitFor(new RegExp(`"agentId":"${AGENT_ID}","method":"k8s_psat".*"msg":"node attested"`), {
      from,
      timeoutMs: 3 * TTL_SECONDS * 1000,
    });
    expect(kube.reviewedTokens.at(-1)).toBe(rotated);
    expect((await server.json<{ spiffe_id: string }>(['agent', 'show', '--spiffe-id', AGENT_ID])).spiffe_id).toBe(
      AGENT_ID,
    );
    const response = await firstMessage(client.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([`${TD}/web`]);
    expect(agent.running).toBe(true);
  }, 60_000);

  it('stops an agent whose service account is not allowed, saying which', async () => {
    kube.addPod({ namespace: 'default', name: 'intruder', nodeName: NODE.name, serviceAccount: 'default' });
    const intruderToken = join(scratch, 'tokens', 'intruder');
    await writeFile(
      intruderToken,
      kube.issueToken({
        namespace: 'default',
        serviceAccount: 'default',
        pod: { name: 'intruder' },
        audiences: ['sigil-server'],
      }),
    );
    await mkdir(join(scratch, 'intruder'));
    const intruder = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'intruder', 'api.sock'),
      dataDir: join(scratch, 'intruder', 'data'),
      trustBundle: bundleFile,
      flags: ['--node-attestor', `k8s_psat:cluster=prod,token_path=${intruderToken}`],
    });
    children.push(intruder);
    expect(await intruder.exited).not.toBe(0);
    expect(intruder.output()).toContain(
      'node attestation (k8s_psat) refused by the server: ' +
        'k8s_psat: service account "default:default" is not allowed for cluster "prod"',
    );
  }, 60_000);

  it('never writes a token to the server or agent logs', () => {
    const output = children.map((child) => child.output()).join('\n');
    expect(kube.reviewedTokens.length).toBeGreaterThanOrEqual(3);
    for (const token of [...kube.reviewedTokens, kube.callerToken]) expect(output).not.toContain(token);
  });
});
