import { Agent } from 'node:https';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  credentialsOf,
  newAgentKey,
  requestTls,
  startAgentApiTestServer,
  type AgentApiResponse,
  type AgentApiTestServer,
} from '../../../../test/support/agent-api.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { IGNORED_RETRY_AFTER_HOLD_MS } from '../auth/ignored-retry-after.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { DEFAULT_AGENT_MAX_LONG_POLLS } from '../config.js';
import { SyncService } from './sync.service.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const SYNC_BURST = 6;
const FLOOD = 120;

describe(`agent API: sync limits (${backend})`, () => {
  // The clock stands still: buckets refill only when a test moves it.
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;

  const joinAgent = async () => {
    const { token } = await api.server.app.get(JoinTokensService).create({});
    const key = await newAgentKey();
    const response = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    expect(response.status).toBe(200);
    const credentials = credentialsOf(response.body['svid'], key.privateKeyPem);
    return {
      spiffeId: response.body['spiffe_id'] as string,
      call: (method: string, path: string, body?: unknown): Promise<AgentApiResponse> =>
        api.call(method, path, body, credentials),
    };
  };

  beforeAll(async () => {
    api = await startAgentApiTestServer({
      clock,
      // 120 syncs at once on fresh connections: past the default connections per agent, some would be refused for that.
      flags: { agentSyncRate: '1', agentSyncBurst: String(SYNC_BURST), agentMaxConnections: '1000' },
    });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('paces an agent past its burst: one sync waits for its token and is served, the others get 429 naming the limit; another agent syncs as usual', async () => {
    const flooder = await joinAgent();
    const neighbour = await joinAgent();
    const answers = await Promise.all(
      Array.from({ length: FLOOD }, () => flooder.call('GET', '/agent/v1/sync?revision=0')),
    );
    // The burst, then one more that waited for the next token (1 s at 1/s, real time: this clock stands still).
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(SYNC_BURST + 1);
    const refused = answers.filter((answer) => answer.status === 429);
    expect(refused).toHaveLength(FLOOD - SYNC_BURST - 1);
    // The token the waiting sync took is owed too: 2 tokens away at 1/s.
    expect(refused[0]!.body).toEqual({
      error: 'resource_exhausted',
      message:
        `agent ${flooder.spiffeId}: over its sync rate limit (agent_sync_rate 1/s, agent_sync_burst ${SYNC_BURST}), ` +
        'retry in 2 s',
    });
    expect((await neighbour.call('GET', '/agent/v1/sync?revision=0')).status).toBe(200);
    clock.advance(2000);
    expect((await flooder.call('GET', '/agent/v1/sync?revision=0')).status).toBe(200);
  });

  it('a sync past the burst waits for its token rather than being refused; one sent meanwhile is refused', async () => {
    const agent = await joinAgent();
    for (let i = 0; i < SYNC_BURST; i++)
      expect((await agent.call('GET', '/agent/v1/sync?revision=0')).status).toBe(200);
    let paced: AgentApiResponse | undefined;
    const waiting = agent.call('GET', '/agent/v1/sync?revision=0').then((answer) => (paced = answer));
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Still waiting for its token (1 s at 1/s) while a second sync is refused at once.
    expect(paced).toBeUndefined();
    expect(await agent.call('GET', '/agent/v1/sync?revision=0')).toMatchObject({
      status: 429,
      body: { error: 'resource_exhausted' },
    });
    expect(await waiting).toMatchObject({ status: 200 });
  });

  it('an agent that syncs again at once after its 429 on a kept-alive connection gets the next 429 held, then closed; after its Retry-After it is served', async () => {
    const { token } = await api.server.app.get(JoinTokensService).create({});
    const key = await newAgentKey();
    const attested = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    const credentials = credentialsOf(attested.body['svid'], key.privateKeyPem);
    const connection = new Agent({ keepAlive: true, maxSockets: 1 });
    const sync = () =>
      requestTls(api.port, { method: 'GET', path: '/agent/v1/sync?revision=0', credentials, agent: connection });
    try {
      // The burst, and one more paced to the rate (it waits for its token).
      for (let i = 0; i <= SYNC_BURST; i++) expect((await sync()).status).toBe(200);
      const refused = await sync();
      expect(refused).toMatchObject({ status: 429, headers: { 'retry-after': '2' }, reusedConnection: true });
      expect(refused.headers.connection).not.toBe('close');
      // Again at once (the clock stands still): held, then sent with Connection: close.
      let answered = false;
      const impatient = sync().then((answer) => ((answered = true), answer));
      await new Promise((resolve) => setTimeout(resolve, IGNORED_RETRY_AFTER_HOLD_MS / 2));
      expect(answered).toBe(false);
      expect(await impatient).toMatchObject({
        status: 429,
        headers: { 'retry-after': '2', connection: 'close' },
        body: { error: 'resource_exhausted' },
        reusedConnection: true,
      });
      // An agent waits its Retry-After: on a new connection, served.
      clock.advance(2000);
      expect(await sync()).toMatchObject({ status: 200, reusedConnection: false });
    } finally {
      connection.destroy();
    }
  });

  it(`holds at most ${DEFAULT_AGENT_MAX_LONG_POLLS} long-polls per agent: a newer one answers the oldest at once`, async () => {
    const agent = await joinAgent();
    const syncs = api.server.app.get(SyncService);
    const start = await agent.call('GET', '/agent/v1/sync?revision=0');
    const sequence = (start.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence;
    const poll = () =>
      agent.call(
        'GET',
        `/agent/v1/sync?revision=${start.body['revision'] as number}&bundle_sequence=${sequence}&wait_ms=30000`,
      );
    let firstAnswered = false;
    const first = poll().then((answer) => ((firstAnswered = true), answer));
    await vi.waitFor(() => expect(syncs.openPolls(agent.spiffeId)).toBe(1), { timeout: 15_000 });
    const second = poll();
    await vi.waitFor(() => expect(syncs.openPolls(agent.spiffeId)).toBe(2), { timeout: 15_000 });
    expect(firstAnswered).toBe(false);
    // The agent restarted (its earlier polls are dead to it): its new poll is served, the oldest one answered.
    const third = poll();
    expect(await first).toMatchObject({ status: 200, body: { entries: [], deleted_ids: [] } });
    await vi.waitFor(() => expect(syncs.openPolls(agent.spiffeId)).toBe(DEFAULT_AGENT_MAX_LONG_POLLS), {
      timeout: 15_000,
    });
    // Many more at once (within the rate limit): never more than the cap waiting.
    clock.advance(10_000);
    const more = Array.from({ length: SYNC_BURST - 1 }, () => poll());
    await vi.waitFor(() => expect(syncs.openPolls(agent.spiffeId)).toBe(DEFAULT_AGENT_MAX_LONG_POLLS), {
      timeout: 15_000,
    });
    const superseded = await Promise.all([second, third, ...more.slice(0, -2)]);
    expect(superseded.every((answer) => answer.status === 200)).toBe(true);
    expect(syncs.openPolls(agent.spiffeId)).toBeLessThanOrEqual(DEFAULT_AGENT_MAX_LONG_POLLS);
  });
});

describe(`agent API: agent_max_long_polls set to 1 (${backend})`, () => {
  let api: AgentApiTestServer;

  beforeAll(async () => {
    api = await startAgentApiTestServer({ clock: new FakeClock(Date.now()), flags: { agentMaxLongPolls: '1' } });
  });

  afterAll(async () => {
    await api?.close();
  });

  it('answers the first long-poll at once when the same agent opens a second', async () => {
    const { token } = await api.server.app.get(JoinTokensService).create({});
    const key = await newAgentKey();
    const attested = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    const credentials = credentialsOf(attested.body['svid'], key.privateKeyPem);
    const agentId = attested.body['spiffe_id'] as string;
    const syncs = api.server.app.get(SyncService);
    const start = await api.call('GET', '/agent/v1/sync?revision=0', undefined, credentials);
    const sequence = (start.body['bundle'] as { spiffe_sequence: number }).spiffe_sequence;
    const poll = () =>
      api.call(
        'GET',
        `/agent/v1/sync?revision=${start.body['revision'] as number}&bundle_sequence=${sequence}&wait_ms=30000`,
        undefined,
        credentials,
      );
    let firstAnswered = false;
    const first = poll().then((answer) => ((firstAnswered = true), answer));
    await vi.waitFor(() => expect(syncs.openPolls(agentId)).toBe(1), { timeout: 15_000 });
    expect(firstAnswered).toBe(false);
    const second = poll();
    expect(await first).toMatchObject({ status: 200, body: { entries: [], deleted_ids: [] } });
    await vi.waitFor(() => expect(syncs.openPolls(agentId)).toBe(1), { timeout: 15_000 });
    // Close the server with the second one still waiting: shutdown answers it.
    void second;
  });
});

describe(`agent API: connections per agent (${backend})`, () => {
  let api: AgentApiTestServer;

  beforeAll(async () => {
    api = await startAgentApiTestServer({ clock: new FakeClock(Date.now()), flags: { agentMaxConnections: '3' } });
  });

  afterAll(async () => {
    await api?.close();
  });

  const attest = async () => {
    const { token } = await api.server.app.get(JoinTokensService).create({});
    const key = await newAgentKey();
    const attested = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    return {
      spiffeId: attested.body['spiffe_id'] as string,
      credentials: credentialsOf(attested.body['svid'], key.privateKeyPem),
    };
  };

  it('answers 429 on an agent’s connection past agent_max_connections; another agent is served; a freed slot is taken by a later request', async () => {
    const flooder = await attest();
    const neighbour = await attest();
    const connections = Array.from({ length: 4 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
    const sync = (connection: Agent, credentials = flooder.credentials) =>
      requestTls(api.port, { method: 'GET', path: '/agent/v1/sync?revision=0', credentials, agent: connection });
    const other = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (const connection of connections.slice(0, 3)) expect((await sync(connection)).status).toBe(200);
      expect(await sync(connections[3]!)).toMatchObject({
        status: 429,
        headers: { 'retry-after': '1' },
        body: {
          error: 'resource_exhausted',
          message:
            `agent ${flooder.spiffeId}: 3 connections open, at most 3 (agent_max_connections); ` +
            'reuse them, or retry in 1 s',
        },
      });
      expect((await sync(other, neighbour.credentials)).status).toBe(200);
      // The first connection closes: the fourth, asked again on the same connection, is counted and served.
      connections[0]!.destroy();
      await vi.waitFor(async () => expect((await sync(connections[3]!)).status).toBe(200), { timeout: 10_000 });
    } finally {
      for (const connection of [...connections, other]) connection.destroy();
    }
  });

  it('counts connections per agent SVID: an outdated SVID of the agent holding connections open takes none of the current one’s', async () => {
    const { token } = await api.server.app.get(JoinTokensService).create({});
    const key = await newAgentKey();
    const attested = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
    const old = credentialsOf(attested.body['svid'], key.privateKeyPem);
    const renewKey = await newAgentKey();
    const renewed = await api.call('POST', '/agent/v1/renew', { csr: await renewKey.csr() }, old);
    expect(renewed.status).toBe(200);
    const current = credentialsOf(renewed.body['svid'], renewKey.privateKeyPem);
    const connections = Array.from({ length: 4 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
    const sync = (connection: Agent, credentials: typeof old) =>
      requestTls(api.port, { method: 'GET', path: '/agent/v1/sync?revision=0', credentials, agent: connection });
    try {
      // The current SVID used once: the old one is refused from now on, on as many connections as it opens.
      expect((await sync(connections[0]!, current)).status).toBe(200);
      connections[0]!.destroy();
      for (const connection of connections.slice(1)) expect((await sync(connection, old)).status).toBe(403);
      // Those three stay open (kept alive) and count for the old SVID only: the current one gets its three.
      const fresh = Array.from({ length: 3 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
      connections.push(...fresh);
      for (const connection of fresh) expect((await sync(connection, current)).status).toBe(200);
    } finally {
      for (const connection of connections) connection.destroy();
    }
  });
});
