import { createHash, sign, webcrypto } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { verifyX509Svid, type TrustBundle } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  derChainOf,
  newAgentKey,
  requestTls,
  startAgentApiTestServer,
  type AgentApiResponse,
  type AgentApiTestServer,
} from '../../../../test/support/agent-api.js';
import { TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import { AgentsService } from '../agents/agents.service.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { EntriesService } from '../entries/entries.service.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { serialNumberOf } from '../auth/client-svid.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const JOIN_TOKEN_AGENT = /^spiffe:\/\/example\.org\/sigil\/agent\/join_token\/([0-9a-f-]{36})$/;

/** Signs an x509pop nonce the way the agent does: SHA-256, DER ECDSA or RSA PKCS#1 v1.5. */
async function signNonce(node: TestSvid, nonceBase64: string): Promise<string> {
  const key = webcrypto.subtle.exportKey('pkcs8', node.keys.privateKey);
  const signature = sign('sha256', Buffer.from(nonceBase64, 'base64'), {
    key: Buffer.from(await key),
    format: 'der',
    type: 'pkcs8',
  });
  return signature.toString('base64');
}

/** A POST to the agent API from another loopback address, as a second host would call it. */
async function postFrom(localAddress: string, port: number, path: string, body: unknown): Promise<AgentApiResponse> {
  const { status, body: answer } = await requestTls(port, { method: 'POST', path, body, localAddress });
  return { status, body: answer };
}

const b64 = (node: TestSvid): string[] => node.chainDer().map((der) => Buffer.from(der).toString('base64'));
const sha1 = (der: Uint8Array | ArrayBuffer): string => createHash('sha1').update(new Uint8Array(der)).digest('hex');

describe(`agent API: node attestation (${backend})`, () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let bundle: TrustBundle;
  let nodeCa: TestCa;
  let node: TestSvid;

  const joinTokens = () => api.server.app.get(JoinTokensService);
  const attestJoinToken = async (token: string, csr?: string) =>
    api.call('POST', '/agent/v1/attest/join-token', { token, csr: csr ?? (await (await newAgentKey()).csr()) });
  const challenge = (certificates: string[]) =>
    api.call('POST', '/agent/v1/attest/x509pop/challenge', { certificates });
  const answer = async (challengeId: unknown, signature: string) =>
    api.call('POST', '/agent/v1/attest/x509pop', {
      challenge_id: challengeId,
      signature,
      csr: await (await newAgentKey()).csr(),
    });

  beforeAll(async () => {
    const root = await TestCa.create('nodes.test', { subject: 'CN=Node Root CA' });
    nodeCa = await root.createIntermediate({ subject: 'CN=Node Issuing CA' });
    node = await nodeCa.createX509Svid('unused', { subject: 'CN=node-1', uris: [] });
    api = await startAgentApiTestServer({
      clock,
      prepare: async (scratch) => {
        const file = join(scratch, 'x509pop-ca.pem');
        await writeFile(file, root.certificate.toString('pem'));
        return { x509popCaBundle: file };
      },
    });
    bundle = await api.trustBundle();
  });

  afterAll(async () => {
    await api?.close();
  });

  it('join token: issues an agent SVID named after the token id (never the token), and records the agent', async () => {
    const created = await joinTokens().create({});
    const response = await attestJoinToken(created.token);
    expect(response.status).toBe(200);
    const spiffeId = response.body['spiffe_id'] as string;
    expect(spiffeId).toMatch(JOIN_TOKEN_AGENT);
    expect(JOIN_TOKEN_AGENT.exec(spiffeId)?.[1]).toBe(created.id);
    expect(spiffeId).not.toContain(created.token);

    const chain = derChainOf(response.body['svid']);
    const verified = await verifyX509Svid(chain, bundle, { now: clock.now() });
    expect(verified.spiffeId.toString()).toBe(spiffeId);
    expect(response.body['expires_at']).toBe(verified.verifiedChain[0]!.notAfter.toISOString());
    expect((response.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence).toBe(bundle.sequenceNumber);

    const agent = await api.server.app.get(AgentsService).get(spiffeId);
    expect(agent).toMatchObject({
      attestationType: 'join_token',
      serialNumber: serialNumberOf(chain[0]!),
      selectors: [{ type: 'sigil', value: `agent_id:${spiffeId}` }],
      banned: false,
    });
  });

  it('join token: refuses a token used once already, an expired one and an unknown one, with one message', async () => {
    const used = await joinTokens().create({});
    expect((await attestJoinToken(used.token)).status).toBe(200);
    const expiring = await joinTokens().create({ ttlSeconds: 5 });
    clock.advance(6_000);
    for (const token of [used.token, expiring.token, 'no-such-token']) {
      expect(await attestJoinToken(token)).toEqual({
        status: 403,
        body: { error: 'permission_denied', message: 'join token: unknown, expired or already used' },
      });
    }
  });

  it('join token: a bad CSR is refused before the token is consumed', async () => {
    const created = await joinTokens().create({});
    const response = await attestJoinToken(
      created.token,
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
    );
    expect(response.status).toBe(400);
    expect(response.body['error']).toBe('invalid_argument');
    expect(response.body['message']).toMatch(/^csr: /);
    expect((await attestJoinToken(created.token)).status).toBe(200);
  });

  it('join token with a SPIFFE ID: creates the alias entry parented by the agent, once', async () => {
    const created = await joinTokens().create({ spiffeId: 'spiffe://example.org/node/rack-7' });
    const response = await attestJoinToken(created.token);
    expect(response.status).toBe(200);
    const agentId = response.body['spiffe_id'] as string;
    const { entries } = await api.server.app
      .get(EntriesService)
      .listEntries({ spiffeId: 'spiffe://example.org/node/rack-7' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      parentId: agentId,
      selectors: [{ type: 'sigil', value: `agent_id:${agentId}` }],
    });
  });

  it('x509pop: verifies the chain, checks the signed nonce and names the agent by the leaf fingerprint', async () => {
    const issued = await challenge(b64(node));
    expect(issued.status).toBe(200);
    expect(Buffer.from(issued.body['nonce'] as string, 'base64')).toHaveLength(32);
    const response = await answer(issued.body['challenge_id'], await signNonce(node, issued.body['nonce'] as string));
    expect(response.status).toBe(200);
    const spiffeId = `spiffe://example.org/sigil/agent/x509pop/${sha1(node.certificate.rawData)}`;
    expect(response.body['spiffe_id']).toBe(spiffeId);
    await verifyX509Svid(derChainOf(response.body['svid']), bundle, { now: clock.now() });

    const agent = await api.server.app.get(AgentsService).get(spiffeId);
    expect(agent.attestationType).toBe('x509pop');
    expect(agent.selectors).toEqual([
      { type: 'x509pop', value: 'subject:cn:node-1' },
      { type: 'x509pop', value: `ca:fingerprint:${sha1(nodeCa.certificate.rawData)}` },
      { type: 'x509pop', value: `ca:fingerprint:${sha1(nodeCa.root().certificate.rawData)}` },
    ]);

    // The same node may attest again (a new SVID replaces the old serial).
    const again = await challenge(b64(node));
    const second = await answer(again.body['challenge_id'], await signNonce(node, again.body['nonce'] as string));
    expect(second.status).toBe(200);
    expect((await api.server.app.get(AgentsService).get(spiffeId)).serialNumber).toBe(
      serialNumberOf(derChainOf(second.body['svid'])[0]!),
    );
  });

  it('x509pop: accepts an RSA leaf signing with PKCS#1 v1.5', async () => {
    const rsaNode = await nodeCa.createX509Svid('unused', {
      subject: 'CN=node-rsa',
      uris: [],
      keyAlgorithm: 'RSA-2048',
    });
    const issued = await challenge(b64(rsaNode));
    const response = await answer(
      issued.body['challenge_id'],
      await signNonce(rsaNode, issued.body['nonce'] as string),
    );
    expect(response.status).toBe(200);
  });

  it('x509pop: refuses a chain that does not lead to the configured CA', async () => {
    const stranger = await (
      await TestCa.create('other.test', { subject: 'CN=Stranger CA' })
    ).createX509Svid('unused', {
      subject: 'CN=node-x',
      uris: [],
    });
    expect(await challenge(b64(stranger))).toEqual({
      status: 403,
      body: {
        error: 'permission_denied',
        message: 'x509pop: certificate chain does not lead to a trusted ca (no issuer found for "CN=node-x")',
      },
    });
  });

  it('x509pop: refuses a wrong signature, and the challenge is used up by it', async () => {
    const issued = await challenge(b64(node));
    const impostor = await nodeCa.createX509Svid('unused', { subject: 'CN=node-1', uris: [] });
    const wrong = await answer(issued.body['challenge_id'], await signNonce(impostor, issued.body['nonce'] as string));
    expect(wrong).toEqual({
      status: 403,
      body: {
        error: 'permission_denied',
        message: 'x509pop: signature does not verify with the key of the leaf certificate',
      },
    });
    const retry = await answer(issued.body['challenge_id'], await signNonce(node, issued.body['nonce'] as string));
    expect(retry.body['message']).toBe('x509pop: challenge_id is unknown, expired or already answered');
  });

  it('x509pop: refuses a challenge answered twice or after 60 seconds', async () => {
    const issued = await challenge(b64(node));
    const signature = await signNonce(node, issued.body['nonce'] as string);
    expect((await answer(issued.body['challenge_id'], signature)).status).toBe(200);
    const reused = await answer(issued.body['challenge_id'], signature);
    expect(reused).toEqual({
      status: 403,
      body: { error: 'permission_denied', message: 'x509pop: challenge_id is unknown, expired or already answered' },
    });

    const late = await challenge(b64(node));
    clock.advance(61_000);
    const expired = await answer(late.body['challenge_id'], await signNonce(node, late.body['nonce'] as string));
    expect(expired.status).toBe(403);
    expect(expired.body['message']).toBe('x509pop: challenge_id is unknown, expired or already answered');
  });

  it('x509pop: a banned agent cannot attest again', async () => {
    const banned = await nodeCa.createX509Svid('unused', { subject: 'CN=node-banned', uris: [] });
    const first = await challenge(b64(banned));
    const attested = await answer(first.body['challenge_id'], await signNonce(banned, first.body['nonce'] as string));
    await api.server.app.get(AgentsService).ban(attested.body['spiffe_id'] as string);
    const again = await challenge(b64(banned));
    const refused = await answer(again.body['challenge_id'], await signNonce(banned, again.body['nonce'] as string));
    expect(refused).toEqual({
      status: 403,
      body: { error: 'permission_denied', message: `agent ${attested.body['spiffe_id'] as string} is banned` },
    });
  });

  it('x509pop: one certificate asking for challenges in a loop keeps at most 4 outstanding, the oldest replaced; another certificate still attests', async () => {
    clock.advance(61_000); // earlier tests' challenges expire
    const looping = await nodeCa.createX509Svid('unused', { subject: 'CN=node-looping', uris: [] });
    const issued: Record<string, unknown>[] = [];
    for (let i = 0; i < 12; i++) {
      const response = await challenge(b64(looping));
      expect(response.status).toBe(200);
      issued.push(response.body);
    }
    const answerWith = async (body: Record<string, unknown>) =>
      answer(body['challenge_id'], await signNonce(looping, body['nonce'] as string));
    // Even a right answer to a replaced challenge is refused: only the 4 newest are outstanding.
    for (const replaced of issued.slice(0, 8)) {
      expect(await answerWith(replaced)).toEqual({
        status: 403,
        body: { error: 'permission_denied', message: 'x509pop: challenge_id is unknown, expired or already answered' },
      });
    }
    expect((await answerWith(issued[8]!)).status).toBe(200);
    expect((await answerWith(issued[11]!)).status).toBe(200);
    const other = await nodeCa.createX509Svid('unused', { subject: 'CN=node-other', uris: [] });
    const otherChallenge = await challenge(b64(other));
    expect(otherChallenge.status).toBe(200);
    const attested = await answer(
      otherChallenge.body['challenge_id'],
      await signNonce(other, otherChallenge.body['nonce'] as string),
    );
    expect(attested.status).toBe(200);
    expect(attested.body['spiffe_id']).toBe(
      `spiffe://example.org/sigil/agent/x509pop/${sha1(other.certificate.rawData)}`,
    );
    clock.advance(61_000);
  });

  it('x509pop: one source address holds at most 64 challenges; more are refused with 429 until one is answered', async () => {
    clock.advance(61_000);
    const nodes = await Promise.all(
      Array.from({ length: 16 }, (_, index) =>
        nodeCa.createX509Svid('unused', { subject: `CN=node-many-${index}`, uris: [] }),
      ),
    );
    const issued: { node: TestSvid; body: Record<string, unknown> }[] = [];
    for (const each of nodes) {
      for (let i = 0; i < 4; i++) {
        const response = await challenge(b64(each));
        expect(response.status).toBe(200);
        issued.push({ node: each, body: response.body });
      }
    }
    const late = await nodeCa.createX509Svid('unused', { subject: 'CN=node-late', uris: [] });
    const refusal = {
      status: 429,
      body: {
        error: 'resource_exhausted',
        message:
          'x509pop: source address 127.0.0.1 has 64 challenges outstanding (the limit per address); answer them or wait up to 60 s for them to expire',
      },
    };
    expect(await challenge(b64(late))).toEqual(refusal);
    // A certificate at its own cap replaces its oldest challenge: no new slot taken, so it is still served.
    expect((await challenge(b64(nodes[0]!))).status).toBe(200);
    expect(await challenge(b64(late))).toEqual(refusal);

    // Another host beside the full one is served and attests.
    const beside = await postFrom('127.0.0.2', api.port, '/agent/v1/attest/x509pop/challenge', {
      certificates: b64(late),
    });
    expect(beside.status).toBe(200);
    const besideAnswer = await answer(
      beside.body['challenge_id'],
      await signNonce(late, beside.body['nonce'] as string),
    );
    expect(besideAnswer.status).toBe(200);

    const last = issued.at(-1)!;
    const answered = await answer(last.body['challenge_id'], await signNonce(last.node, last.body['nonce'] as string));
    expect(answered.status).toBe(200);
    const served = await challenge(b64(late));
    expect(served.status).toBe(200);
    expect(
      (await answer(served.body['challenge_id'], await signNonce(late, served.body['nonce'] as string))).status,
    ).toBe(200);
    clock.advance(61_000);
  });

  it("x509pop: a stranger holding a node's certificate cannot void the node's challenge, only make it wait with 429", async () => {
    clock.advance(61_000);
    const victim = await nodeCa.createX509Svid('unused', { subject: 'CN=node-victim', uris: [] });
    const fromNode = () =>
      postFrom('127.0.0.2', api.port, '/agent/v1/attest/x509pop/challenge', { certificates: b64(victim) });
    const held = await fromNode();
    expect(held.status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await challenge(b64(victim))).status).toBe(200);
    const answered = await answer(held.body['challenge_id'], await signNonce(victim, held.body['nonce'] as string));
    expect(answered.status).toBe(200);

    // The stranger held 3 slots beside the node's; with one more it holds all 4: the node is told to retry, not refused.
    expect((await challenge(b64(victim))).status).toBe(200);
    expect(await fromNode()).toEqual({
      status: 429,
      body: {
        error: 'resource_exhausted',
        message: `x509pop: certificate ${sha1(victim.certificate.rawData)} has 4 challenges outstanding (the limit per certificate), asked from other addresses; retry within 60 s`,
      },
    });
    clock.advance(61_000);
    expect((await fromNode()).status).toBe(200);
    clock.advance(61_000);
  });

  it('x509pop: validates the request shape', async () => {
    const response = await challenge(['not base64!']);
    expect(response.status).toBe(400);
    expect(response.body['message']).toBe('certificates: each value must be base64 encoded');
  });
});
