import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubeApiServer } from '../../../../test/support/fake-kube-apiserver.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { systemClock } from '../common/clock.js';
import { loadServerConfig, type LoadServerConfigInput } from '../config.js';
import { K8sPsatAttestor } from './k8s-psat/k8s-psat.attestor.js';
import type { NodeAttestor } from './node-attestor.js';
import { NodeAttestorRegistry } from './node-attestors.js';
import { X509popAttestor } from './x509pop/x509pop.attestor.js';

let prod: FakeKubeApiServer;
let east: FakeKubeApiServer;
let dir: string;
/** A readable CA bundle: x509pop listed twice would be configured twice without the registry's refusal. */
let caBundle: string;

beforeAll(async () => {
  Logger.overrideLogger(false);
  [prod, east] = await Promise.all([FakeKubeApiServer.start(), FakeKubeApiServer.start()]);
  dir = await mkdtemp(join(tmpdir(), 'sigil-node-attestors-'));
  caBundle = join(dir, 'nodes.pem');
  await writeFile(caBundle, (await TestCa.create('example.org')).certificate.toString('pem'));
});

afterAll(async () => {
  await Promise.all([prod?.close(), east?.close()]);
  await rm(dir, { recursive: true, force: true });
});

/** The registry of the real x509pop and k8s_psat attestors, with the settings the config loader makes of `input`. */
function registryOf(input: LoadServerConfigInput): { registry: NodeAttestorRegistry; psat: K8sPsatAttestor } {
  const psat = new K8sPsatAttestor();
  const attestors: NodeAttestor[] = [new X509popAttestor(systemClock), psat as NodeAttestor];
  return { registry: new NodeAttestorRegistry(attestors, loadServerConfig(input)), psat };
}

async function refusal(input: LoadServerConfigInput): Promise<string> {
  const { registry, psat } = registryOf(input);
  const error = await registry.onModuleInit().then(
    () => undefined,
    (caught: unknown) => caught,
  );
  psat.onModuleDestroy();
  expect(error).toBeInstanceOf(Error);
  return (error as Error).message;
}

describe('node attestor registry: an attestor enabled several times', () => {
  it('enables k8s_psat once per cluster, from the file array, each against its own API server', async () => {
    const prodConfig = join(dir, 'prod.json');
    const eastConfig = join(dir, 'east.json');
    await writeFile(prodConfig, await prod.kubeconfig(), { mode: 0o600 });
    await writeFile(eastConfig, await east.kubeconfig(), { mode: 0o600 });
    const file = join(dir, 'server.json');
    await writeFile(
      file,
      JSON.stringify({
        node_attestors: {
          k8s_psat: [
            { cluster: 'prod', service_account_allow_list: 'sigil:sigil-agent', kube_config_file: prodConfig },
            { cluster: 'east', service_account_allow_list: 'sigil:sigil-agent', kube_config_file: eastConfig },
          ],
        },
      }),
    );
    const { registry, psat } = registryOf({ file });
    await registry.onModuleInit();
    expect(registry.enabledTypes()).toEqual(['k8s_psat']);
    expect(registry.require('k8s-psat')).toBe(psat);
    for (const [cluster, api] of [
      ['prod', prod],
      ['east', east],
    ] as const) {
      const node = { name: `node-${cluster}`, uid: `uid-${cluster}` };
      api.addNode(node);
      api.addPod({ namespace: 'sigil', name: 'agent', nodeName: node.name, serviceAccount: 'sigil-agent' });
      const token = api.issueToken({
        namespace: 'sigil',
        serviceAccount: 'sigil-agent',
        pod: { name: 'agent' },
        audiences: ['sigil-server'],
      });
      const found = await psat.attest({ cluster, token, csr: 'unused' });
      expect(found.agentIdSuffix).toEqual([cluster, node.uid]);
    }
    psat.onModuleDestroy();
  });

  it.each<[string, LoadServerConfigInput, string]>([
    [
      'k8s_psat twice for one cluster (flags)',
      {
        flags: {
          nodeAttestor: [
            'k8s_psat:cluster=a,kube_config_file=/nonexistent/a',
            'k8s_psat:cluster=b,kube_config_file=/nonexistent/b',
            'k8s_psat:cluster=a,kube_config_file=/nonexistent/c',
          ],
        },
      },
      '--node-attestor: k8s_psat is enabled twice for cluster "a" (once per cluster)',
    ],
    [
      'k8s_psat twice for one cluster (environment)',
      { env: { SIGIL_NODE_ATTESTORS: 'k8s_psat:cluster=a k8s_psat:cluster=a' } },
      'SIGIL_NODE_ATTESTORS: k8s_psat is enabled twice for cluster "a" (once per cluster)',
    ],
  ])('refuses %s before configuring any', async (_name, input, message) => {
    expect(await refusal(input)).toBe(message);
  });

  it('refuses an attestor without an instance option listed twice, even with options that would do', async () => {
    const twice = [`x509pop:ca_bundle=${caBundle}`, `x509pop:ca_bundle=${caBundle}`];
    expect(await refusal({ flags: { nodeAttestor: twice } })).toBe(
      '--node-attestor: x509pop is enabled twice (only k8s_psat (once per cluster) may be enabled more than once)',
    );
  });

  it('refuses k8s_psat twice for one cluster in the file array, naming the source', async () => {
    const file = join(dir, 'twice.json');
    await writeFile(
      file,
      JSON.stringify({ node_attestors: { k8s_psat: [{ cluster: 'a' }, { cluster: 'a', audience: 'x' }] } }),
    );
    expect(await refusal({ file })).toBe(
      'node_attestors: k8s_psat is enabled twice for cluster "a" (once per cluster)',
    );
  });
});
