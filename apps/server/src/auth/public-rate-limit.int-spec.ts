import { sign, webcrypto } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Agent } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  credentialsOf,
  newAgentKey,
  requestTls,
  startAgentApiTestServer,
  type AgentApiTestServer,
  type ClientCredentials,
  type TestAgentKey,
} from '../../../../test/support/agent-api.js';
import { TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import { SpiffeId } from '@sigil/spiffe';
import { CSR_MAX_BYTES, toPem } from '@sigil/pki';
import { X509POP_MAX_CHAIN_BYTES } from '../node-attestation/x509pop/x509pop.js';
import { AgentsService } from '../agents/agents.service.js';
import { AuthorisedEntriesService } from '../agent-api/authorised-entries.service.js';
import { EntriesService } from '../entries/entries.service.js';
import { AdminClient } from '../cli/admin-client.js';
import { ATTESTATION_BODY_LIMIT_BYTES } from '../common/request-body.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { IGNORED_RETRY_AFTER_HOLD_MS } from './ignored-retry-after.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const ATTESTATION_LIMIT = 'over its attestation rate limit (1/s, burst 20; a refused attestation counts 10)';

const b64 = (node: TestSvid): string[] => node.chainDer().map((der) => Buffer.from(der).toString('base64'));

async function signNonce(node: TestSvid, nonceBase64: string): Promise<string> {
  const key = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', node.keys.privateKey));
  return sign('sha256', Buffer.from(nonceBase64, 'base64'), { key, format: 'der', type: 'pkcs8' }).toString('base64');
}

/**
 * The per-source-address limits of the unauthenticated routes, on the real TLS port, with small budgets (attestation
 * 1/s burst 20, reads 1/s burst 5) on a fake clock, so nothing refills unless the test moves time.
 */
describe(`unauthenticated routes: per-source-address rate limits (${backend})`, () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let nodeCa: TestCa;
  let rootName: string;

  const post = (path: string, body: unknown, localAddress = '127.0.0.1', credentials?: ClientCredentials) =>
    requestTls(api.port, { method: 'POST', path, body, localAddress, ...(credentials && { credentials }) });
  const get = (path: string, localAddress = '127.0.0.1') => requestTls(api.port, { method: 'GET', path, localAddress });
  const attestJoinToken = async (token: string, localAddress?: string) =>
    post('/agent/v1/attest/join-token', { token, csr: await (await newAgentKey()).csr() }, localAddress);
  /**
   * A whole x509pop attestation (challenge, then the signed nonce) from `localAddress`, both requests presenting
   * `credentials` as the TLS client certificate when given (an agent attesting again with its SVID).
   */
  const attestX509pop = async (
    node: TestSvid,
    localAddress: string,
    credentials?: ClientCredentials,
    key?: TestAgentKey,
  ) => {
    const challenge = await post(
      '/agent/v1/attest/x509pop/challenge',
      { certificates: b64(node) },
      localAddress,
      credentials,
    );
    if (challenge.status !== 200) return challenge;
    const signature = await signNonce(node, challenge.body['nonce'] as string);
    const csr = await (key ?? (await newAgentKey())).csr();
    return post(
      '/agent/v1/attest/x509pop',
      { challenge_id: challenge.body['challenge_id'], signature, csr },
      localAddress,
      credentials,
    );
  };
  /** An x509pop attestation from `localAddress` that must succeed: the agent's ID, and its SVID as credentials. */
  const attestedX509pop = async (node: TestSvid, localAddress: string, credentials?: ClientCredentials) => {
    const key = await newAgentKey();
    const attested = await attestX509pop(node, localAddress, credentials, key);
    expect(attested.status).toBe(200);
    return {
      spiffeId: attested.body['spiffe_id'] as string,
      credentials: credentialsOf(attested.body['svid'], key.privateKeyPem),
    };
  };
  /** Moves time far enough for every bucket to be full again. */
  const refill = () => clock.advance(600_000);

  beforeAll(async () => {
    const root = await TestCa.create('nodes.test', { subject: 'CN=Node Root CA' });
    rootName = root.certificate.subject;
    nodeCa = await root.createIntermediate({ subject: 'CN=Node Issuing CA' });
    api = await startAgentApiTestServer({
      clock,
      flags: { attestationRate: '1', attestationBurst: '20', publicReadRate: '1', publicReadBurst: '5' },
      prepare: async (scratch) => {
        const file = join(scratch, 'x509pop-ca.pem');
        await writeFile(file, root.certificate.toString('pem'));
        return { x509popCaBundle: file };
      },
    });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('join token guesses: each refused guess costs 10, then 429 with Retry-After; another address attests meanwhile', async () => {
    refill();
    expect((await attestJoinToken('guess-1')).status).toBe(403);
    expect((await attestJoinToken('guess-2')).status).toBe(403);
    // 20 - 2 × 10: the bucket is empty after two guesses, where 20 accepted attestations would have been allowed.
    const refused = await attestJoinToken('guess-3');
    expect(refused).toMatchObject({
      status: 429,
      headers: { 'retry-after': '1' },
      body: {
        error: 'resource_exhausted',
        message: `source address 127.0.0.1: ${ATTESTATION_LIMIT}; retry in 1 s`,
      },
    });
    // Refused before its body is read: malformed JSON gets 429, not 400.
    const unread = await requestTls(api.port, {
      method: 'POST',
      path: '/agent/v1/attest/join-token',
      rawBody: '{"token": ',
    });
    expect(unread.status).toBe(429);
    // A real token from the same address is refused too: the address is out of budget, not the token.
    const token = await api.server.app.get(JoinTokensService).create({});
    expect((await attestJoinToken(token.token)).status).toBe(429);

    const other = await api.server.app.get(JoinTokensService).create({});
    expect((await attestJoinToken(other.token, '127.0.0.2')).status).toBe(200);

    clock.advance(1_000);
    expect((await attestJoinToken(token.token)).status).toBe(200);
  });

  it('a flood of forged x509pop chains from one address: at most the burst is checked, the rest get 429; a real agent on another address attests', async () => {
    refill();
    const impostorRoot = await TestCa.create('nodes.test', { subject: rootName });
    const forged = b64(await impostorRoot.createX509Svid('unused', { subject: 'CN=forged', uris: [] }));
    const answers = await Promise.all(
      Array.from({ length: 60 }, () => post('/agent/v1/attest/x509pop/challenge', { certificates: forged })),
    );
    const statuses = answers.map((answer) => answer.status);
    const checked = statuses.filter((status) => status === 403).length;
    expect(statuses.filter((status) => status !== 403 && status !== 429)).toEqual([]);
    expect(checked).toBeGreaterThanOrEqual(2);
    expect(checked).toBeLessThanOrEqual(20);
    expect(answers.find((answer) => answer.status === 403)?.body['message']).toBe(
      'x509pop: certificate chain does not lead to a trusted ca (no issuer found for "CN=forged")',
    );

    const node = await nodeCa.createX509Svid('unused', { subject: 'CN=node-beside', uris: [] });
    expect((await attestX509pop(node, '127.0.0.3')).status).toBe(200);
    // The flooding address stays refused until its debt is paid back: 1 token per second.
    expect((await attestX509pop(node, '127.0.0.1')).status).toBe(429);
  });

  it('x509pop: only the challenge takes a token, so an address attests burst agents; a wrong answer costs the whole refusal', async () => {
    refill();
    // Burst 20: 20 whole attestations (challenge and answer), where charging both would allow 10 and strand the rest.
    for (let index = 0; index < 20; index++) {
      const node = await nodeCa.createX509Svid('unused', { subject: `CN=nat-${index}`, uris: [] });
      expect((await attestX509pop(node, '127.0.0.4')).status).toBe(200);
    }
    expect((await post('/agent/v1/attest/x509pop/challenge', { certificates: [] }, '127.0.0.4')).status).toBe(429);

    // A wrong answer from a fresh address: 403, and 10 tokens gone (20 - 10 leaves exactly 10 challenges).
    const node = await nodeCa.createX509Svid('unused', { subject: 'CN=wrong-answer', uris: [] });
    const challenge = await post('/agent/v1/attest/x509pop/challenge', { certificates: b64(node) }, '127.0.0.5');
    const wrong = await post(
      '/agent/v1/attest/x509pop',
      { challenge_id: challenge.body['challenge_id'], signature: 'AAAA', csr: await (await newAgentKey()).csr() },
      '127.0.0.5',
    );
    expect(wrong.status).toBe(403);
    const statuses: number[] = [];
    for (let index = 0; index < 10; index++) {
      statuses.push((await post('/agent/v1/attest/x509pop/challenge', { certificates: [] }, '127.0.0.5')).status);
    }
    // 1 (challenge) + 10 (refusal) leaves 9: a request refused as invalid (400) costs a refusal too, so after the
    // first the address is in debt and the rest get 429.
    expect(statuses).toEqual([400, ...Array<number>(9).fill(429)]);
  });

  it('an agent attesting again with its SVID pays from its own budget: an address in debt refuses only attestations without a valid agent SVID', async () => {
    refill();
    const nat = '127.0.0.8';
    const node = await nodeCa.createX509Svid('unused', { subject: 'CN=behind-nat', uris: [] });
    const first = await attestedX509pop(node, nat);
    // Attesting again with the first SVID replaces it: its serial is outdated from now on.
    const current = await attestedX509pop(node, nat, first.credentials);
    expect(current.spiffeId).toBe(first.spiffeId);
    const neighbourNode = await nodeCa.createX509Svid('unused', { subject: 'CN=neighbour', uris: [] });
    const neighbour = await attestedX509pop(neighbourNode, nat);
    const bannedNode = await nodeCa.createX509Svid('unused', { subject: 'CN=banned', uris: [] });
    const banned = await attestedX509pop(bannedNode, nat);
    await api.server.app.get(AgentsService).ban(banned.spiffeId);
    // A workload SVID of this trust domain (it chains to the same CA, but names no agent).
    const entry = await api.server.app.get(EntriesService).createEntry({
      spiffeId: 'spiffe://example.org/workload/behind-nat',
      parentId: current.spiffeId,
      selectors: [{ type: 'unix', value: 'uid:1000' }],
    });
    await api.server.app.get(AuthorisedEntriesService).refresh();
    const workloadKey = await newAgentKey();
    const signed = await api.call(
      'POST',
      '/agent/v1/svids/x509',
      { csrs: [{ entry_id: entry.id, csr: await workloadKey.csr(SpiffeId.parse(entry.spiffeId)) }] },
      current.credentials,
    );
    const workload = credentialsOf(
      (signed.body['results'] as { svid: string[] }[])[0]!.svid,
      workloadKey.privateKeyPem,
    );
    // An agent ID in an SVID of another CA of this trust domain's name, and one of another trust domain.
    const pemOf = async (svid: TestSvid): Promise<ClientCredentials> => ({
      certificatePem: svid.certificate.toString('pem'),
      privateKeyPem: toPem('PRIVATE KEY', await svid.privateKeyPkcs8()),
    });
    const forged = await pemOf(await (await TestCa.create('example.org')).createX509Svid(current.spiffeId));
    const otherDomain = await pemOf(
      await (await TestCa.create('other.org')).createX509Svid('spiffe://other.org/sigil/agent/x509pop/1'),
    );

    // Whoever shares the address floods it with refused attestations (no client certificate): it is in debt.
    const csr = await (await newAgentKey()).csr();
    let flooded = 0;
    while ((await post('/agent/v1/attest/join-token', { token: `guess-${flooded}`, csr }, nat)).status !== 429) {
      if (++flooded > 5) break;
    }
    expect(flooded).toBeLessThanOrEqual(2);
    expect((await attestX509pop(node, nat)).status).toBe(429);
    for (const credentials of [first.credentials, banned.credentials, workload, forged, otherDomain]) {
      expect(await attestX509pop(node, nat, credentials)).toMatchObject({
        status: 429,
        body: {
          message: expect.stringMatching(/^source address 127\.0\.0\.8: over its attestation rate limit/) as unknown,
        },
      });
    }

    // The agent's current SVID: its own budget pays, and it attests again; its identity still comes from the evidence.
    const again = await attestedX509pop(node, nat, current.credentials);
    expect(again.spiffeId).toBe(current.spiffeId);
    // The SVID only chooses who pays: presenting it with another node's evidence attests as that node, no other.
    const other = await attestedX509pop(neighbourNode, nat, again.credentials);
    expect(other.spiffeId).toBe(neighbour.spiffeId);

    // Refused attempts made with an agent's SVID spend that agent's budget (burst 20, 3 attestations paid so far, a
    // refusal counts 10): then it is refused, and the other agents behind the address are not.
    const refusals: number[] = [];
    for (let i = 0; i < 3; i++) {
      refusals.push(
        (await post('/agent/v1/attest/x509pop/challenge', { certificates: [] }, nat, again.credentials)).status,
      );
    }
    expect(refusals).toEqual([400, 400, 429]);
    expect(
      (await post('/agent/v1/attest/x509pop/challenge', { certificates: [] }, nat, again.credentials)).body,
    ).toEqual({
      error: 'resource_exhausted',
      message: `agent ${again.spiffeId}: ${ATTESTATION_LIMIT}; retry in 4 s`,
    });
    expect((await attestX509pop(neighbourNode, nat, other.credentials)).status).toBe(200);
  });

  it('an attestation body over the attestation body limit gets 413 before it is parsed; a real chain fits', async () => {
    refill();
    const padded = JSON.stringify({ certificates: ['x'.repeat(ATTESTATION_BODY_LIMIT_BYTES)] });
    const tooLarge = await requestTls(api.port, {
      method: 'POST',
      path: '/agent/v1/attest/x509pop/challenge',
      rawBody: padded,
    });
    expect(tooLarge).toMatchObject({
      status: 413,
      body: {
        error: 'resource_exhausted',
        message: `request body: larger than the ${ATTESTATION_BODY_LIMIT_BYTES}-byte limit`,
      },
    });
    // The largest chain and CSR the routes accept fit under it, with room for the other fields.
    const largest = JSON.stringify({
      certificates: ['x'.repeat(Math.ceil(X509POP_MAX_CHAIN_BYTES / 3) * 4)],
      csr: 'x'.repeat(Math.ceil(CSR_MAX_BYTES / 3) * 4),
      signature: 'x'.repeat(1024),
    });
    expect(Buffer.byteLength(largest)).toBeLessThan(ATTESTATION_BODY_LIMIT_BYTES);
    // Routes that are not open keep the general limit.
    const admin = await requestTls(api.port, { method: 'POST', path: '/agent/v1/renew', rawBody: padded });
    expect(admin.status).not.toBe(413);
  });

  it('bundle, health and metrics share one read budget per address; other addresses and the admin socket are served', async () => {
    refill();
    for (let i = 0; i < 5; i++) expect((await get(i % 2 === 0 ? '/healthz' : '/bundle')).status).toBe(200);
    expect(await get('/bundle')).toMatchObject({
      status: 429,
      headers: { 'retry-after': '1' },
      body: {
        error: 'resource_exhausted',
        message:
          'source address 127.0.0.1: over its rate limit for bundle, health and metrics requests (1/s, burst 5); retry in 1 s',
      },
    });
    expect((await get('/metrics')).status).toBe(429);
    expect((await get('/bundle', '127.0.0.2')).status).toBe(200);
    const admin = new AdminClient(api.server.adminSocket);
    for (let i = 0; i < 10; i++) expect((await admin.call('GET', '/healthz')).status).toBe(200);
    // Attestation has its own budget: reads do not spend it.
    const token = await api.server.app.get(JoinTokensService).create({});
    expect((await attestJoinToken(token.token)).status).toBe(200);
    // The agent API's mTLS routes are not open routes: an agent behind this spent address is limited per agent only.
    const key = await newAgentKey();
    const { token: another } = await api.server.app.get(JoinTokensService).create({});
    const attested = await post('/agent/v1/attest/join-token', { token: another, csr: await key.csr() });
    const credentials = credentialsOf(attested.body['svid'], key.privateKeyPem);
    for (let i = 0; i < 8; i++) {
      const unknownEntry = { entry_id: '00000000-0000-4000-8000-000000000000', audience: ['db'] };
      expect(await api.call('POST', '/agent/v1/svids/jwt', unknownEntry, credentials)).toMatchObject({
        status: 403,
        body: { error: 'permission_denied' },
      });
    }
  });

  it('a connection that asks again before its Retry-After is refused after a hold and closed; another connection of the address, and one that waits, are not', async () => {
    refill();
    const address = '127.0.0.5';
    const flood = new Agent({ keepAlive: true, maxSockets: 1 });
    const neighbour = new Agent({ keepAlive: true, maxSockets: 1 });
    const healthz = (agent: Agent) =>
      requestTls(api.port, { method: 'GET', path: '/healthz', localAddress: address, agent });
    try {
      for (let i = 0; i < 5; i++) expect((await healthz(flood)).status).toBe(200);
      const refused = await healthz(flood);
      expect(refused).toMatchObject({ status: 429, headers: { 'retry-after': '1' }, reusedConnection: true });
      expect(refused.headers.connection).not.toBe('close');
      // A second client behind the same address (a NAT) is refused by the address's budget, but has ignored nothing.
      const other = await healthz(neighbour);
      expect(other.status).toBe(429);
      expect(other.headers.connection).not.toBe('close');

      // Again at once (the clock has not moved): the answer is held, then sent with Connection: close.
      const started = performance.now();
      const impatient = await healthz(flood);
      expect(impatient).toMatchObject({
        status: 429,
        headers: { 'retry-after': '1', connection: 'close' },
        body: { error: 'resource_exhausted' },
        reusedConnection: true,
      });
      expect(performance.now() - started).toBeGreaterThanOrEqual(IGNORED_RETRY_AFTER_HOLD_MS - 50);
      // Its next request needs a new connection, whose first refusal is answered at once and keeps it open.
      const reconnected = await healthz(flood);
      expect(reconnected).toMatchObject({ status: 429, reusedConnection: false });
      expect(reconnected.headers.connection).not.toBe('close');

      // The neighbour waits its Retry-After and asks again on its connection: served, the connection kept.
      clock.advance(1_000);
      const patient = await healthz(neighbour);
      expect(patient).toMatchObject({ status: 200, reusedConnection: true });
      expect(patient.headers.connection).not.toBe('close');
    } finally {
      flood.destroy();
      neighbour.destroy();
    }
  });

  it('requests pipelined behind a held refusal close the connection: one answer held per connection, not one each', async () => {
    refill();
    const tcp = netConnect({ port: api.port, host: '127.0.0.1', localAddress: '127.0.0.6' });
    const socket = tlsConnect({ socket: tcp, rejectUnauthorized: false });
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (received += chunk));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    // The read budget is 5: five answers, one refusal at once, then the next ignores its Retry-After and is held; the
    // 200 more behind it in the same write are what a pipelining client sends without waiting.
    socket.write('GET /healthz HTTP/1.1\r\nHost: sigil\r\n\r\n'.repeat(207));
    await closed;
    const statuses = [...received.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((match) => match[1]);
    // Closed as soon as the request behind the held one came (what was written before may or may not have left):
    // without the check, every pipelined request held an answer, and the held one came out a second later with
    // `Connection: close`, a second 429.
    expect(statuses.filter((status) => status === '200').length).toBeLessThanOrEqual(5);
    expect(statuses.filter((status) => status === '429').length).toBeLessThanOrEqual(1);
    expect(received).not.toMatch(/connection: close/i);
    expect(statuses).toHaveLength(statuses.filter((status) => status === '200' || status === '429').length);
  });
});
