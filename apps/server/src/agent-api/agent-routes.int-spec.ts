import { X509Certificate } from 'node:crypto';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { toPem } from '@sigil/pki';
import { parseAndValidateJwtSvid, SpiffeId, verifyX509Svid, type TrustBundle } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  credentialsOf,
  derChainOf,
  newAgentKey,
  startAgentApiTestServer,
  type AgentApiResponse,
  type AgentApiTestServer,
  type ClientCredentials,
} from '../../../../test/support/agent-api.js';
import { opensslVerify } from '../../../../test/support/openssl.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { AgentsController } from '../agents/agents.controller.js';
import { AgentsService } from '../agents/agents.service.js';
import { CaService } from '../ca/ca.service.js';
import { DataSource } from 'typeorm';
import { KeyManager } from '../ca/key-manager.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { EntriesService } from '../entries/entries.service.js';
import type { Entry, EntryInput } from '../entries/entry.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { AuthorisedEntriesService } from './authorised-entries.service.js';
import { AgentSigningBudget } from './signing-budget.js';
import { DEFAULT_AGENT_RENEW_BURST, MAX_CSR_BATCH, signingConcurrency } from './signing-limits.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
/** The smallest X.509 burst the config takes (one full batch), refilled at 1 CSR/s: one batch spends it. */
const CSR_BURST = MAX_CSR_BATCH;
const JWT_BURST = 8;
const MAX_IN_FLIGHT = 2;

interface TestAgent {
  readonly spiffeId: string;
  readonly credentials: ClientCredentials;
  call(method: string, path: string, body?: unknown): Promise<AgentApiResponse>;
}

const ids = (entries: unknown): string[] => (entries as { id: string }[]).map((entry) => entry.id).sort();

describe(`agent API: mTLS routes (${backend})`, () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let bundle: TrustBundle;

  const entries = () => api.server.app.get(EntriesService);
  /** Lets the server's entry index catch up with the writes just made (notifications arrive asynchronously). */
  const settle = () => api.server.app.get(AuthorisedEntriesService).refresh();
  const createEntry = (input: Partial<EntryInput> & Pick<EntryInput, 'spiffeId' | 'parentId'>): Promise<Entry> =>
    entries().createEntry({ selectors: [{ type: 'unix', value: `uid:${Math.floor(Math.random() * 1e9)}` }], ...input });

  /** Attests a new agent with a join token, as the agent process does. */
  const joinAgent = async (alias?: string): Promise<TestAgent> => {
    const { token } = await api.server.app
      .get(JoinTokensService)
      .create(alias === undefined ? {} : { spiffeId: alias });
    const key = await newAgentKey();
    const response = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    expect(response.status).toBe(200);
    const credentials = credentialsOf(response.body['svid'], key.privateKeyPem);
    return {
      spiffeId: response.body['spiffe_id'] as string,
      credentials,
      call: (method, path, body) => api.call(method, path, body, credentials),
    };
  };
  const csrFor = async (spiffeId?: string) =>
    (await newAgentKey()).csr(spiffeId === undefined ? undefined : SpiffeId.parse(spiffeId));
  const mtlsRoutes = async (): Promise<[string, string, unknown][]> => [
    ['POST', '/agent/v1/renew', { csr: await csrFor() }],
    ['GET', '/agent/v1/sync?revision=0', undefined],
    [
      'POST',
      '/agent/v1/svids/x509',
      { csrs: [{ entry_id: '00000000-0000-4000-8000-000000000000', csr: await csrFor() }] },
    ],
    ['POST', '/agent/v1/svids/jwt', { entry_id: '00000000-0000-4000-8000-000000000000', audience: ['db'] }],
  ];

  beforeAll(async () => {
    api = await startAgentApiTestServer({
      clock,
      flags: {
        agentSignRate: '1',
        agentSignBurst: String(CSR_BURST),
        agentJwtSignRate: '1',
        agentJwtSignBurst: String(JWT_BURST),
        agentSignMaxInFlight: String(MAX_IN_FLIGHT),
      },
    });
    bundle = await api.trustBundle();
  });

  afterAll(async () => {
    await api?.close();
  });

  it('refuses every mTLS route without a client certificate, or with one from another CA', async () => {
    const foreign = await (await TestCa.create('example.org')).createX509Svid('spiffe://example.org/sigil/agent/x/1');
    const foreignCredentials: ClientCredentials = {
      certificatePem: foreign.certificate.toString('pem'),
      privateKeyPem: toPem('PRIVATE KEY', await foreign.privateKeyPkcs8()),
    };
    for (const [method, path, body] of await mtlsRoutes()) {
      expect(await api.call(method, path, body)).toEqual({
        status: 401,
        body: {
          error: 'unauthenticated',
          message: 'client certificate: required: agent API routes authenticate the agent by its X509-SVID (mTLS)',
        },
      });
      const refused = await api.call(method, path, body, foreignCredentials);
      expect(refused.status).toBe(401);
      expect(refused.body['message']).toMatch(/^client certificate: certificate chain does not chain to a trusted/);
    }
  });

  it('renews the agent SVID; the previous one stays valid until the new one is used, then is refused', async () => {
    const agent = await joinAgent();
    const key = await newAgentKey();
    const renewed = await agent.call('POST', '/agent/v1/renew', { csr: await key.csr() });
    expect(renewed.status).toBe(200);
    expect(renewed.body['spiffe_id']).toBe(agent.spiffeId);
    const verified = await verifyX509Svid(derChainOf(renewed.body['svid']), bundle, { now: clock.now() });
    expect(verified.spiffeId.toString()).toBe(agent.spiffeId);

    // agent show/list (admin API) name the pending serial beside the current one until it is used.
    const admin = api.server.app.get(AgentsController);
    const leaf = new X509Certificate(derChainOf(renewed.body['svid'])[0]!);
    const pending = await admin.get(agent.spiffeId);
    expect(pending.new_serial_number).toBe(leaf.serialNumber.toLowerCase());
    expect(pending.new_serial_number).not.toBe(pending.serial_number);
    // The certificate holds whole seconds.
    expect(Math.floor(Date.parse(pending.new_svid_expires_at!) / 1000) * 1000).toBe(Date.parse(leaf.validTo));
    const listed = (await admin.list({})).agents.find((one) => one.spiffe_id === agent.spiffeId);
    expect(listed).toMatchObject({ new_serial_number: pending.new_serial_number });

    expect((await agent.call('GET', '/agent/v1/sync')).status).toBe(200);
    const fresh = await api.call(
      'GET',
      '/agent/v1/sync',
      undefined,
      credentialsOf(renewed.body['svid'], key.privateKeyPem),
    );
    expect(fresh.status).toBe(200);
    const stale = await agent.call('GET', '/agent/v1/sync');
    expect(stale.status).toBe(403);
    expect(stale.body['message']).toMatch(/^agent spiffe:\/\/\S+: SVID serial [0-9a-f]+ is not the current one$/);
  });

  it('refuses to renew an agent that can attest again: it must reattest instead (SPIRE), before signing', async () => {
    const agent = await joinAgent();
    // As recorded for an x509pop or k8s_psat agent (the record is read afresh: the agent's status was dropped from
    // the cache when it attested, and nothing read it since).
    await api.server.app
      .get(DataSource)
      .query(`UPDATE agents SET can_reattest = true, attestation_type = 'x509pop' WHERE spiffe_id = $1`, [
        agent.spiffeId,
      ]);
    const sign = vi.spyOn(api.server.app.get(CaService), 'signX509Svid');
    try {
      const refused = await agent.call('POST', '/agent/v1/renew', { csr: await (await newAgentKey()).csr() });
      expect(refused.status).toBe(403);
      expect(refused.body).toEqual({
        error: 'permission_denied',
        message:
          `agent ${agent.spiffeId} must reattest instead of renew: its x509pop node attestation can attest it ` +
          'again, which is how it renews its SVID',
      });
      expect(sign).not.toHaveBeenCalled();
    } finally {
      sign.mockRestore();
    }
    expect((await api.server.app.get(AgentsController).get(agent.spiffeId)).new_serial_number).toBeNull();
    // Its SVID is still good for everything else.
    expect((await agent.call('GET', '/agent/v1/sync')).status).toBe(200);
  });

  it('syncs everything at revision 0, then only the changes', async () => {
    const agent = await joinAgent();
    const e1 = await createEntry({ spiffeId: 'spiffe://example.org/sync/e1', parentId: agent.spiffeId });
    const e2 = await createEntry({ spiffeId: 'spiffe://example.org/sync/e2', parentId: e1.spiffeId });
    await settle();
    const first = await agent.call('GET', '/agent/v1/sync?revision=0');
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ full: true, deleted_ids: [], federated_bundles: {} });
    expect(ids(first.body['entries'])).toEqual([e1.id, e2.id].sort());
    expect((first.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence).toBe(bundle.sequenceNumber);
    const revision = first.body['revision'] as number;

    const e3 = await createEntry({ spiffeId: 'spiffe://example.org/sync/e3', parentId: agent.spiffeId });
    await entries().updateEntry(e1.id, { hint: 'changed' });
    await entries().deleteEntry(e2.id);
    await settle();
    const delta = await agent.call('GET', `/agent/v1/sync?revision=${revision}`);
    expect(delta.body).toMatchObject({ full: false, deleted_ids: [e2.id] });
    expect(ids(delta.body['entries'])).toEqual([e1.id, e3.id].sort());
    expect((delta.body['entries'] as { id: string; hint: string }[]).find((entry) => entry.id === e1.id)?.hint).toBe(
      'changed',
    );

    const quiet = await agent.call('GET', `/agent/v1/sync?revision=${delta.body['revision'] as number}`);
    expect(quiet.body).toMatchObject({ full: false, entries: [], deleted_ids: [], revision: delta.body['revision'] });
  });

  it('answers many agent requests arriving at once on separate connections (each one authenticated)', async () => {
    // On the embedded database, concurrent queries over several pooled connections once corrupted each other
    // (the guard saw "not attested", or "portal does not exist"); every answer here must be the right one.
    const agents = await Promise.all([joinAgent(), joinAgent(), joinAgent()]);
    const own = await Promise.all(
      agents.map((agent, i) => createEntry({ spiffeId: `spiffe://example.org/burst/${i}`, parentId: agent.spiffeId })),
    );
    await settle();
    const csrs = await Promise.all(own.map((entry) => csrFor(entry.spiffeId)));
    const calls = agents.flatMap((agent, i) => [
      ...Array.from({ length: MAX_IN_FLIGHT }, () =>
        agent.call('POST', '/agent/v1/svids/x509', { csrs: [{ entry_id: own[i]!.id, csr: csrs[i] }] }),
      ),
      ...Array.from({ length: JWT_BURST - 2 }, () =>
        agent.call('POST', '/agent/v1/svids/jwt', { entry_id: own[i]!.id, audience: ['db'] }),
      ),
      agent.call('GET', '/agent/v1/sync?revision=0'),
      agent.call('GET', '/agent/v1/sync?revision=0'),
    ]);
    const answers = await Promise.all(calls);
    for (const answer of answers) expect(answer.status).toBe(200);
    const signed = answers.filter((answer) => 'results' in answer.body);
    expect(signed).toHaveLength(agents.length * MAX_IN_FLIGHT);
    expect(answers.filter((answer) => 'token' in answer.body)).toHaveLength(agents.length * (JWT_BURST - 2));
    for (const answer of signed) {
      expect((answer.body['results'] as { status: { code: string } }[])[0]!.status.code).toBe('ok');
    }
  });

  it('long-poll: a waiting sync answers as soon as an entry for the agent is created', async () => {
    const agent = await joinAgent();
    const start = await agent.call('GET', '/agent/v1/sync?revision=0');
    const query = `revision=${start.body['revision'] as number}&bundle_sequence=${bundle.sequenceNumber}&wait_ms=20000`;
    const waiting = agent.call('GET', `/agent/v1/sync?${query}`);
    // Another agent's change must not end the wait.
    const other = await joinAgent();
    await createEntry({ spiffeId: 'spiffe://example.org/poll/other', parentId: other.spiffeId });
    const created = await createEntry({ spiffeId: 'spiffe://example.org/poll/mine', parentId: agent.spiffeId });
    const answer = await waiting;
    expect(answer.status).toBe(200);
    expect(answer.body['deleted_ids']).toEqual([]);
    expect(ids(answer.body['entries'])).toEqual([created.id]);
  });

  it('long-poll: a waiting sync answers when the trust bundle changes', async () => {
    const agent = await joinAgent();
    const start = await agent.call('GET', '/agent/v1/sync?revision=0');
    const sequence = (start.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence;
    const waiting = agent.call(
      'GET',
      `/agent/v1/sync?revision=${start.body['revision'] as number}&bundle_sequence=${sequence}&wait_ms=20000`,
    );
    await api.server.app.get(KeyManager).prepare('jwt');
    const answer = await waiting;
    expect(answer.body).toMatchObject({ full: false, entries: [], deleted_ids: [] });
    expect((answer.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence).toBe(sequence + 1);
    bundle = await api.trustBundle();
  });

  it('authorises the agent its own entries, its alias entries and their descendants, never another agent’s', async () => {
    const agentA = await joinAgent('spiffe://example.org/group/a');
    const agentB = await joinAgent();
    const aliasEntry = (await entries().listEntries({ spiffeId: 'spiffe://example.org/group/a' })).entries[0]!;
    const own = await createEntry({ spiffeId: 'spiffe://example.org/authz/own', parentId: agentA.spiffeId });
    const child = await createEntry({ spiffeId: 'spiffe://example.org/authz/child', parentId: own.spiffeId });
    const viaAlias = await createEntry({ spiffeId: 'spiffe://example.org/authz/alias', parentId: aliasEntry.spiffeId });
    const nodeAlias = await createEntry({
      spiffeId: 'spiffe://example.org/cluster/a',
      parentId: 'spiffe://example.org/sigil/server',
      selectors: [{ type: 'sigil', value: `agent_id:${agentA.spiffeId}` }],
    });
    const viaNodeAlias = await createEntry({
      spiffeId: 'spiffe://example.org/authz/node',
      parentId: nodeAlias.spiffeId,
    });
    const ofB = await createEntry({ spiffeId: 'spiffe://example.org/authz/b', parentId: agentB.spiffeId });
    await settle();

    const syncA = await agentA.call('GET', '/agent/v1/sync?revision=0');
    expect(ids(syncA.body['entries'])).toEqual(
      [aliasEntry.id, own.id, child.id, viaAlias.id, nodeAlias.id, viaNodeAlias.id].sort(),
    );
    const syncB = await agentB.call('GET', '/agent/v1/sync?revision=0');
    expect(ids(syncB.body['entries'])).toEqual([ofB.id]);

    const stolen = await agentB.call('POST', '/agent/v1/svids/x509', {
      csrs: [{ entry_id: own.id, csr: await csrFor(own.spiffeId) }],
    });
    expect(stolen.body['results']).toEqual([
      {
        entry_id: own.id,
        status: {
          code: 'permission_denied',
          message: `entry_id: entry "${own.id}" is not authorised for agent ${agentB.spiffeId}`,
        },
      },
    ]);
  });

  it('signs a batch of X.509-SVID CSRs, each checked on its own', async () => {
    const agent = await joinAgent();
    const other = await joinAgent();
    const web = await createEntry({
      spiffeId: 'spiffe://example.org/batch/web',
      parentId: agent.spiffeId,
      dnsNames: ['web.example.org'],
      x509SvidTtl: 600,
    });
    const [web2, web3, web4] = await Promise.all(
      [2, 3, 4].map((n) =>
        createEntry({
          spiffeId: 'spiffe://example.org/batch/web',
          parentId: agent.spiffeId,
          dnsNames: ['web.example.org'],
          x509SvidTtl: 600,
          hint: `copy ${n}`,
        }),
      ),
    );
    const notMine = await createEntry({ spiffeId: 'spiffe://example.org/batch/theirs', parentId: other.spiffeId });
    await settle();
    const response = await agent.call('POST', '/agent/v1/svids/x509', {
      csrs: [
        { entry_id: web.id, csr: await csrFor(web.spiffeId) },
        { entry_id: web2!.id, csr: await csrFor() },
        { entry_id: notMine.id, csr: await csrFor(notMine.spiffeId) },
        { entry_id: web3!.id, csr: await csrFor('spiffe://example.org/batch/other') },
        { entry_id: web4!.id, csr: 'not a csr' },
        { entry_id: web.id, csr: await csrFor(web.spiffeId) },
      ],
    });
    expect(response.status).toBe(200);
    const results = response.body['results'] as { status: { code: string; message: string }; svid?: string[] }[];
    expect(results.map((result) => result.status.code)).toEqual([
      'ok',
      'ok',
      'permission_denied',
      'invalid_argument',
      'invalid_argument',
      'invalid_argument',
    ]);
    expect(results[3]!.status.message).toBe(
      `csrs.3.csr: uri san "spiffe://example.org/batch/other" does not match the spiffe id ${web.spiffeId}`,
    );
    expect(results[4]!.status.message).toMatch(/^csrs\.4\.csr: /);
    expect(results[5]!.status.message).toBe(
      `csrs.5.entry_id: entry "${web.id}" is already requested by csrs.0 of this batch`,
    );

    for (const result of results.slice(0, 2)) {
      const chain = derChainOf(result.svid);
      const verified = await verifyX509Svid(chain, bundle, { now: clock.now() });
      const leaf = verified.verifiedChain[0]!;
      expect(verified.spiffeId.toString()).toBe(web.spiffeId);
      expect((leaf.notAfter.getTime() - Math.floor(clock.now().getTime() / 1000) * 1000) / 1000).toBe(600);
      expect(leaf.toString('text')).toContain('web.example.org');
    }
    const openssl = await opensslVerify({
      root: bundle.x509Authorities[0]!,
      leaf: derChainOf(results[0]!.svid)[0]!,
      at: clock.now(),
    });
    expect(openssl.ok, openssl.output).toBe(true);
  });

  it('signs JWT-SVIDs for authorised entries only', async () => {
    const agent = await joinAgent();
    const db = await createEntry({
      spiffeId: 'spiffe://example.org/jwt/db',
      parentId: agent.spiffeId,
      jwtSvidTtl: 120,
    });
    const signed = await agent.call('POST', '/agent/v1/svids/jwt', { entry_id: db.id, audience: ['postgres'] });
    expect(signed.status).toBe(200);
    const svid = await parseAndValidateJwtSvid(signed.body['token'] as string, bundle, 'postgres', {
      now: clock.now(),
    });
    expect(svid.spiffeId.toString()).toBe(db.spiffeId);
    expect(signed.body['spiffe_id']).toBe(db.spiffeId);
    expect(Date.parse(signed.body['expires_at'] as string) - Math.floor(clock.now().getTime() / 1000) * 1000).toBe(
      120_000,
    );

    const stranger = await joinAgent();
    const refused = await stranger.call('POST', '/agent/v1/svids/jwt', { entry_id: db.id, audience: ['postgres'] });
    expect(refused).toEqual({
      status: 403,
      body: {
        error: 'permission_denied',
        message: `entry_id: entry "${db.id}" is not authorised for agent ${stranger.spiffeId}`,
      },
    });
  });

  it('charges every CSR of a batch, duplicates included, and signs each entry once', async () => {
    const agent = await joinAgent();
    const entry = await createEntry({ spiffeId: 'spiffe://example.org/limit/copies', parentId: agent.spiffeId });
    await settle();
    const csr = await csrFor(entry.spiffeId);
    const copies = await agent.call('POST', '/agent/v1/svids/x509', {
      csrs: Array.from({ length: MAX_CSR_BATCH }, () => ({ entry_id: entry.id, csr })),
    });
    expect(copies.status).toBe(200);
    const results = copies.body['results'] as { status: { code: string; message: string } }[];
    expect(results).toHaveLength(MAX_CSR_BATCH);
    expect(results.filter((result) => result.status.code === 'ok')).toHaveLength(1);
    expect(results[MAX_CSR_BATCH - 1]!.status).toEqual({
      code: 'invalid_argument',
      message: `csrs.${MAX_CSR_BATCH - 1}.entry_id: entry "${entry.id}" is already requested by csrs.0 of this batch`,
    });
    // The 500 copies spent the whole burst of 500 CSRs: one more CSR waits a second.
    const one = { csrs: [{ entry_id: entry.id, csr }] };
    expect(await agent.call('POST', '/agent/v1/svids/x509', one)).toEqual({
      status: 429,
      retryAfter: '1',
      body: {
        error: 'resource_exhausted',
        message:
          `agent ${agent.spiffeId}: over its X.509-SVID signing budget (1 CSRs/s, burst ${CSR_BURST}; ` +
          `agent_sign_rate, agent_sign_burst), this request costs 1: retry in 1 s`,
      },
    });
    clock.advance(1_000);
    expect((await agent.call('POST', '/agent/v1/svids/x509', one)).status).toBe(200);
    // Another agent has its own budget.
    const neighbour = await joinAgent();
    const theirs = await createEntry({ spiffeId: 'spiffe://example.org/limit/theirs', parentId: neighbour.spiffeId });
    await settle();
    const signed = await neighbour.call('POST', '/agent/v1/svids/x509', {
      csrs: [{ entry_id: theirs.id, csr: await csrFor(theirs.spiffeId) }],
    });
    expect(signed.status).toBe(200);
  });

  it('refuses a spent agent on a verified connection before reading the body', async () => {
    const agent = await joinAgent();
    const entry = await createEntry({ spiffeId: 'spiffe://example.org/limit/early', parentId: agent.spiffeId });
    await settle();
    const csr = await csrFor(entry.spiffeId);
    const connection = new HttpsAgent({
      keepAlive: true,
      maxSockets: 1,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      cert: agent.credentials.certificatePem,
      key: agent.credentials.privateKeyPem,
    });
    const post = (body: string) =>
      new Promise<{ status: number; retryAfter: unknown; body: Record<string, unknown> }>((resolve, reject) => {
        const request = httpsRequest(
          {
            host: '127.0.0.1',
            port: api.port,
            method: 'POST',
            path: '/agent/v1/svids/x509',
            agent: connection,
            headers: { 'content-type': 'application/json' },
          },
          (response) => {
            const chunks: Buffer[] = [];
            response.on('data', (chunk: Buffer) => chunks.push(chunk));
            response.on('end', () =>
              resolve({
                status: response.statusCode ?? 0,
                retryAfter: response.headers['retry-after'],
                body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
              }),
            );
          },
        );
        request.on('error', reject);
        request.end(body);
      });
    try {
      const spend = JSON.stringify({
        csrs: Array.from({ length: MAX_CSR_BATCH }, () => ({ entry_id: entry.id, csr })),
      });
      expect((await post(spend)).status).toBe(200);
      // A body that is not even a batch: refused for the budget, so it was never parsed.
      expect(await post('{"csrs": "not a batch"}')).toMatchObject({
        status: 429,
        retryAfter: '1',
        body: { error: 'resource_exhausted', message: expect.stringContaining('over its X.509-SVID signing budget') },
      });
    } finally {
      connection.destroy();
    }
    // On a new connection the guard and the body checks come first, as for any request.
    expect((await agent.call('POST', '/agent/v1/svids/x509', { csrs: 'not a batch' })).status).toBe(400);
  });

  it('renews the agent SVID and signs X.509 with the JWT budget spent, and renews with both spent', async () => {
    const agent = await joinAgent();
    const entry = await createEntry({ spiffeId: 'spiffe://example.org/limit/kinds', parentId: agent.spiffeId });
    await settle();
    const jwt = () => agent.call('POST', '/agent/v1/svids/jwt', { entry_id: entry.id, audience: ['x'] });
    for (let i = 0; i < JWT_BURST; i += 1) expect((await jwt()).status).toBe(200);
    expect(await jwt()).toEqual({
      status: 429,
      retryAfter: '1',
      body: {
        error: 'resource_exhausted',
        message:
          `agent ${agent.spiffeId}: over its JWT-SVID signing budget (1 JWT-SVIDs/s, burst ${JWT_BURST}; ` +
          `agent_jwt_sign_rate, agent_jwt_sign_burst), this request costs 1: retry in 1 s`,
      },
    });
    const csr = await csrFor(entry.spiffeId);
    const batch = await agent.call('POST', '/agent/v1/svids/x509', {
      csrs: Array.from({ length: MAX_CSR_BATCH }, () => ({ entry_id: entry.id, csr })),
    });
    expect(batch.status).toBe(200);
    expect((await agent.call('POST', '/agent/v1/svids/x509', { csrs: [{ entry_id: entry.id, csr }] })).status).toBe(
      429,
    );

    const key = await newAgentKey();
    const renewed = await agent.call('POST', '/agent/v1/renew', { csr: await key.csr() });
    expect(renewed.status).toBe(200);
    const renewedAgent = credentialsOf(renewed.body['svid'], key.privateKeyPem);
    // Renewal has a budget of its own, small: a renewal loop is refused, with when to retry.
    let refused: AgentApiResponse | undefined;
    let credentials = renewedAgent;
    for (let i = 1; i <= DEFAULT_AGENT_RENEW_BURST && refused === undefined; i += 1) {
      const next = await newAgentKey();
      const answer = await api.call('POST', '/agent/v1/renew', { csr: await next.csr() }, credentials);
      if (answer.status === 200) credentials = credentialsOf(answer.body['svid'], next.privateKeyPem);
      else refused = answer;
    }
    expect(refused).toMatchObject({ status: 429, retryAfter: '5', body: { error: 'resource_exhausted' } });
  });

  it('refuses an X.509 batch past the in-flight cap with 429, while the others go on', async () => {
    const agent = await joinAgent();
    const entry = await createEntry({ spiffeId: 'spiffe://example.org/limit/in-flight', parentId: agent.spiffeId });
    await settle();
    const budget = api.server.app.get(AgentSigningBudget);
    // Every slot of the signing queue held by work that finishes when the test says so: batches then wait in it.
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const { signingWorkers } = api.server.app.get<ServerConfig>(SERVER_CONFIG);
    const holders = Array.from({ length: signingConcurrency(signingWorkers) }, (_, i) =>
      budget.inTurn(`spiffe://example.org/test/holder/${i}`, 'x509', [i], async (chunk) => {
        await released;
        return chunk;
      }),
    );
    const csr = await csrFor(entry.spiffeId);
    const batch = { csrs: [{ entry_id: entry.id, csr }] };
    const waiting = Array.from({ length: MAX_IN_FLIGHT }, () => agent.call('POST', '/agent/v1/svids/x509', batch));
    while (budget.queued < MAX_IN_FLIGHT) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await agent.call('POST', '/agent/v1/svids/x509', batch)).toEqual({
      status: 429,
      retryAfter: '1',
      body: {
        error: 'resource_exhausted',
        message:
          `agent ${agent.spiffeId}: ${MAX_IN_FLIGHT} X.509-SVID batches already in progress, at most ` +
          `${MAX_IN_FLIGHT} (agent_sign_max_in_flight): wait for one to finish, then retry`,
      },
    });
    // Its JWT requests are no batches, and another agent has its own cap: both wait their turn, then get answers.
    const neighbour = await joinAgent();
    const theirs = await createEntry({ spiffeId: 'spiffe://example.org/limit/free', parentId: neighbour.spiffeId });
    await settle();
    const others = [
      agent.call('POST', '/agent/v1/svids/jwt', { entry_id: entry.id, audience: ['x'] }),
      neighbour.call('POST', '/agent/v1/svids/x509', { csrs: [{ entry_id: theirs.id, csr: await csrFor() }] }),
    ];
    release();
    await Promise.all(holders);
    for (const answer of await Promise.all([...waiting, ...others])) expect(answer.status).toBe(200);
    expect(budget.queued).toBe(0);
    expect((await agent.call('POST', '/agent/v1/svids/x509', batch)).status).toBe(200);
  });

  it('refuses a banned agent and an evicted agent on every mTLS route', async () => {
    const banned = await joinAgent();
    const evicted = await joinAgent();
    await api.server.app.get(AgentsService).ban(banned.spiffeId);
    await api.server.app.get(AgentsService).evict(evicted.spiffeId);
    for (const [method, path, body] of await mtlsRoutes()) {
      expect(await banned.call(method, path, body)).toEqual({
        status: 403,
        body: { error: 'permission_denied', message: `agent ${banned.spiffeId} is banned` },
      });
      expect(await evicted.call(method, path, body)).toEqual({
        status: 403,
        body: { error: 'permission_denied', message: `agent ${evicted.spiffeId} is not attested (evicted or unknown)` },
      });
    }
  });

  it('signs nothing for a request that was waiting when its agent was evicted or banned', async () => {
    const index = api.server.app.get(AuthorisedEntriesService);
    for (const [kind, cutOff] of [
      ['evicted', (id: string) => api.server.app.get(AgentsService).evict(id)],
      ['banned', (id: string) => api.server.app.get(AgentsService).ban(id)],
    ] as const) {
      const agent = await joinAgent();
      const entry = await createEntry({ spiffeId: `spiffe://example.org/waiting-${kind}`, parentId: agent.spiffeId });
      await settle();
      // Both requests find their entry missing from the index and wait in its catch-up, as behind a busy database:
      // the guard has let them in, then the agent is cut off.
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const authorisedFor = vi.spyOn(index, 'authorisedFor').mockImplementation(() => new Map());
      const refresh = vi.spyOn(index, 'refresh').mockImplementation(async () => {
        await gate;
        authorisedFor.mockRestore();
      });
      try {
        const jwt = agent.call('POST', '/agent/v1/svids/jwt', { entry_id: entry.id, audience: ['db'] });
        const x509 = agent.call('POST', '/agent/v1/svids/x509', {
          csrs: [{ entry_id: entry.id, csr: await csrFor(entry.spiffeId) }],
        });
        await vi.waitFor(() => expect(refresh).toHaveBeenCalledTimes(2));
        await cutOff(agent.spiffeId);
        release();
        for (const answer of [await jwt, await x509]) {
          expect(answer).toMatchObject({ status: 403, body: { error: 'permission_denied' } });
        }
      } finally {
        release();
        authorisedFor.mockRestore();
        refresh.mockRestore();
      }
    }
  });

  // Last: it moves the server's clock past every SVID issued so far.
  it('refuses an expired agent SVID', async () => {
    const agent = await joinAgent();
    const fresh = await joinAgent();
    // Verified once while valid: the server remembers the chain, but not past its validity.
    expect((await agent.call('GET', '/agent/v1/sync')).status).toBe(200);
    clock.advance(3601_000);
    for (const caller of [agent, fresh]) {
      const refused = await caller.call('GET', '/agent/v1/sync');
      expect(refused.status).toBe(401);
      expect(refused.body['message']).toMatch(/^client certificate: leaf certificate expired at /);
    }
  });

  it('answers a waiting sync at shutdown instead of holding the server open', async () => {
    const agent = await joinAgent();
    const start = await agent.call('GET', '/agent/v1/sync?revision=0');
    const sequence = (start.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence;
    const waiting = agent.call(
      'GET',
      `/agent/v1/sync?revision=${start.body['revision'] as number}&bundle_sequence=${sequence}&wait_ms=30000`,
    );
    // Gives the waiting request, sent first, time to reach the server before it closes.
    await agent.call('GET', '/agent/v1/sync?revision=0');
    await api.server.close();
    expect(await waiting).toMatchObject({ status: 200, body: { full: false, entries: [], deleted_ids: [] } });
  });
});
