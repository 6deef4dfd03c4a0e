/**
 * The example node attestor of README's "Writing an attestor" (test/support/example-node-attestor.ts), registered
 * on both sides, through the real HTTP routes: the server issues the agent ID and records the selectors the plug-in
 * returns, and the generic part (routing by attestor, body checks, re-attestation rule, unknown or disabled
 * attestors) holds for any plug-in.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TrustBundle, verifyX509Svid } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_ATTESTORS } from '../../apps/agent/src/attestor/node/node-attestors.js';
import { parseServerAddress, type ServerAddress } from '../../apps/agent/src/client/server-address.js';
import { ServerClient } from '../../apps/agent/src/client/server-client.js';
import { AgentIdentity } from '../../apps/agent/src/manager/agent-identity.js';
import { AgentManager } from '../../apps/agent/src/manager/agent-manager.js';
import { AgentStorage } from '../../apps/agent/src/storage/agent-storage.js';
import { AgentsService } from '../../apps/server/src/agents/agents.service.js';
import { type AgentApiTestServer, newAgentKey, startAgentApiTestServer } from '../support/agent-api.js';
import { PresharedAttestor, presharedAttestor } from '../support/example-node-attestor.js';
import { FakeClock } from '../support/fake-clock.js';

const quiet = { log: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
const RACK_7 = 'rack-7-secret-0123456789';
const RACK_8 = 'rack-8-secret-0123456789';

/** A server with the example attestor registered, enabled by `settings(nodes file)`, with this fixture of nodes. */
function startWithExample(clock: FakeClock, nodes: Record<string, string>, settings: (file: string) => string[]) {
  return startAgentApiTestServer({
    clock,
    nodeAttestors: [PresharedAttestor],
    prepare: async (scratch) => {
      const file = join(scratch, 'nodes.json');
      await writeFile(file, JSON.stringify(nodes));
      return { nodeAttestor: settings(file) };
    },
  });
}

describe('an example node attestor registered on both sides', () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let bundle: TrustBundle;
  let dir: string;

  beforeAll(async () => {
    api = await startWithExample(clock, { 'rack-7': RACK_7, 'rack-8': RACK_8 }, (file) => [
      'join_token',
      `preshared:nodes_file=${file}`,
    ]);
    bundle = await api.trustBundle();
    dir = await mkdtemp(join(tmpdir(), 'sigil-example-attestor-'));
  }, 120_000);

  afterAll(async () => {
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The agent's real classes, attesting with the example attestor added to the agent's registry. */
  async function attestAgent(secret: string, dataDir: string) {
    const identity = new AgentIdentity({ kind: 'bundle', file: 'bundle.pem', bundle }, bundle.trustDomain);
    const client = new ServerClient({
      addresses: [parseServerAddress(`127.0.0.1:${api.port}`) as ServerAddress],
      trust: () => identity.trust(),
      credentials: () => identity.credentials(),
    });
    const manager = new AgentManager(identity, client, new AgentStorage(dataDir), {
      attestation: { type: 'preshared', options: { secret } },
      nodeAttestors: { ...NODE_ATTESTORS, preshared: presharedAttestor },
      trustDomain: bundle.trustDomain,
      logger: quiet,
    });
    try {
      await manager.start();
      return identity.current()!;
    } finally {
      await manager.stop();
      client.close();
    }
  }

  it('issues the agent ID and records the selectors the plug-in returns', async () => {
    const current = await attestAgent(RACK_7, join(dir, 'a'));
    const agentId = 'spiffe://example.org/sigil/agent/preshared/rack-7';
    expect(current.spiffeId.toString()).toBe(agentId);
    const verified = await verifyX509Svid([...current.state.svidChain], bundle, { now: clock.now() });
    expect(verified.spiffeId.toString()).toBe(agentId);
    expect(await api.server.app.get(AgentsService).get(agentId)).toMatchObject({
      attestationType: 'preshared',
      selectors: [{ type: 'preshared', value: 'node:rack-7' }],
      banned: false,
    });
  });

  it('refuses a secret no node holds, and checks the body against the plug-in request type', async () => {
    const csr = await (await newAgentKey()).csr();
    expect(await api.call('POST', '/agent/v1/attest/preshared', { secret: 'x'.repeat(20), csr })).toEqual({
      status: 403,
      body: { error: 'permission_denied', message: 'preshared: no node holds this secret' },
    });
    expect(await api.call('POST', '/agent/v1/attest/preshared', { secret: 'short', csr, extra: 1 })).toEqual({
      status: 400,
      body: {
        error: 'invalid_argument',
        message: 'extra: unknown field; secret: must be 16 to 128 letters, digits, _ or -',
      },
    });
  });

  it('answers an unknown or disabled attestor with 404 naming the enabled ones', async () => {
    const csr = await (await newAgentKey()).csr();
    expect(await api.call('POST', '/agent/v1/attest/tpm', { csr })).toEqual({
      status: 404,
      body: {
        error: 'not_found',
        message: 'node attestor "tpm": unknown (enabled on this server: join-token, preshared)',
      },
    });
    expect(await api.call('POST', '/agent/v1/attest/x509pop/challenge', { certificates: ['AQID'] })).toEqual({
      status: 404,
      body: {
        error: 'not_found',
        message:
          'node attestor x509pop: not enabled on this server (enabled: join-token, preshared); the server enables ' +
          'it with --node-attestor x509pop',
      },
    });
    expect(await api.call('POST', '/agent/v1/attest/preshared/challenge', {})).toEqual({
      status: 404,
      body: { error: 'not_found', message: 'node attestor preshared: has no challenge step' },
    });
  });

  it("documents each attestor's messages in the OpenAPI document", async () => {
    const { body } = await api.call('GET', '/docs/json');
    const paths = body['paths'] as Record<string, { post: { requestBody: { content: Record<string, unknown> } } }>;
    const schemaOf = (path: string) =>
      paths[path]!.post.requestBody.content['application/json'] as { schema: { oneOf: { $ref: string }[] } };
    expect(schemaOf('/agent/v1/attest/{attestor}').schema.oneOf.map((ref) => ref.$ref)).toEqual([
      '#/components/schemas/JoinTokenAttestationDto',
      '#/components/schemas/X509popAttestationDto',
      '#/components/schemas/K8sPsatAttestationDto',
      '#/components/schemas/PresharedAttestationDto',
    ]);
    expect(schemaOf('/agent/v1/attest/{attestor}/challenge').schema.oneOf.map((ref) => ref.$ref)).toEqual([
      '#/components/schemas/X509popChallengeRequestDto',
    ]);
    const schemas = (body['components'] as { schemas: Record<string, { required?: string[] }> }).schemas;
    expect(schemas['PresharedAttestationDto']?.required).toEqual(['secret', 'csr']);
  });

  it('lets a node attest again when the plug-in allows it', async () => {
    const first = await attestAgent(RACK_8, join(dir, 'b1'));
    const again = await attestAgent(RACK_8, join(dir, 'b2'));
    expect(again.spiffeId.toString()).toBe(first.spiffeId.toString());
    expect(again.state.svidChain[0]).not.toEqual(first.state.svidChain[0]);
  });
});

describe('an example node attestor that allows no re-attestation', () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;

  beforeAll(async () => {
    api = await startWithExample(clock, { 'rack-9': RACK_7 }, (file) => [
      `preshared:nodes_file=${file},can_reattest=false`,
    ]);
  }, 120_000);

  afterAll(async () => {
    await api?.close();
  });

  it('refuses the second attestation of the same agent, and records nothing new', async () => {
    const attest = async () =>
      api.call('POST', '/agent/v1/attest/preshared', { secret: RACK_7, csr: await (await newAgentKey()).csr() });
    const first = await attest();
    expect(first.status).toBe(200);
    const agentId = 'spiffe://example.org/sigil/agent/preshared/rack-9';
    const recorded = await api.server.app.get(AgentsService).get(agentId);
    expect(await attest()).toEqual({
      status: 403,
      body: {
        error: 'permission_denied',
        message: `agent ${agentId} is already attested, and preshared attestation cannot attest it again`,
      },
    });
    expect((await api.server.app.get(AgentsService).get(agentId)).serialNumber).toBe(recorded.serialNumber);
  });
});

describe('node attestor settings the server refuses at start', () => {
  const clock = new FakeClock(Date.now());

  it.each([
    [
      { nodeAttestor: ['join_token', 'tpm'] },
      '--node-attestor: unknown node attestor "tpm" (known: join_token, x509pop, k8s_psat, preshared)',
    ],
    [{ nodeAttestor: ['join_token:ttl=5'] }, '--node-attestor join_token: unknown option ttl (known: none)'],
    [
      { nodeAttestor: ['x509pop'] },
      '--node-attestor x509pop: option ca_bundle: required: the PEM file of the CAs node certificates chain to',
    ],
    [{ nodeAttestor: ['preshared:can_reattest=false'] }, '--node-attestor preshared: option nodes_file: required'],
  ])('%j', async (flags, message) => {
    await expect(
      startAgentApiTestServer({ clock, flags, nodeAttestors: [PresharedAttestor] }).then((api) => api.close()),
    ).rejects.toThrow(message);
  });
});
