/**
 * The agent's classes (server client, agent manager, SVID cache, rotator, long-poll sync) against a real sigil-server
 * started in this process on this run's database (test/support/agent-api.ts): the protocol as both sides implement
 * it, without the cost of child processes. The server runs on a FakeClock that stays at the real time.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCsr, generateKeyPair } from '@sigil/pki';
import { SpiffeId, type TrustBundle, parseAndValidateJwtSvid, verifyX509Svid } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerClient } from '../../apps/agent/src/client/server-client.js';
import { parseServerAddress, type ServerAddress } from '../../apps/agent/src/client/server-address.js';
import { AgentIdentity } from '../../apps/agent/src/manager/agent-identity.js';
import { AgentManager } from '../../apps/agent/src/manager/agent-manager.js';
import { AgentStorage } from '../../apps/agent/src/storage/agent-storage.js';
import { EntrySync } from '../../apps/agent/src/manager/entry-sync.js';
import { JwtSvidCache } from '../../apps/agent/src/manager/jwt-svid-cache.js';
import { SvidCache } from '../../apps/agent/src/manager/svid-cache.js';
import { SvidRotator } from '../../apps/agent/src/manager/svid-rotator.js';
import { type AgentApiError } from '../../apps/agent/src/client/server-client.js';
import { AgentsService } from '../../apps/server/src/agents/agents.service.js';
import { FakeClock } from '../support/fake-clock.js';
import { EntriesService } from '../../apps/server/src/entries/entries.service.js';
import { JoinTokensService } from '../../apps/server/src/join-tokens/join-tokens.service.js';
import { type AgentApiTestServer, startAgentApiTestServer } from '../support/agent-api.js';

const quiet = { log: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };
const uid = (n: number) => [{ type: 'unix', value: `uid:${n}` }];

async function until(condition: () => boolean, what: string): Promise<void> {
  // At least 20 s: signing and the sync loop share two loaded cores with the rest of the suite.
  for (let i = 0; i < 2000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  if (!condition()) throw new Error(`${what}: not reached`);
}

/** One agent made of the real classes, wired as apps/agent/src/agent.ts wires them. */
async function startAgent(
  api: AgentApiTestServer,
  bundle: TrustBundle,
  dataDir: string,
  token: string,
  signing: { batchSize?: number; onSignRequest?: (phase: 'start' | 'end') => void } = {},
) {
  const identity = new AgentIdentity({ kind: 'bundle', file: 'bundle.pem', bundle }, bundle.trustDomain);
  const client = new ServerClient({
    addresses: [parseServerAddress(`127.0.0.1:${api.port}`) as ServerAddress],
    trust: () => identity.trust(),
    credentials: () => identity.credentials(),
  });
  const cache = new SvidCache(
    new JwtSvidCache((entryId, audience) => client.signJwtSvid(entryId, audience)),
    undefined,
    quiet,
  );
  const manager = new AgentManager(identity, client, new AgentStorage(dataDir), {
    attestation: { type: 'join_token', options: { token } },
    trustDomain: bundle.trustDomain,
    logger: quiet,
  });
  await manager.start();
  cache.setOwnBundle(identity.ownBundle()!);
  const refusals: AgentApiError[] = [];
  const signer: Pick<ServerClient, 'signX509Svids'> = {
    signX509Svids: async (requests) => {
      signing.onSignRequest?.('start');
      try {
        return await client.signX509Svids(requests);
      } finally {
        signing.onSignRequest?.('end');
      }
    },
  };
  const rotator = new SvidRotator(cache, signer, {
    bundle: () => identity.ownBundle(),
    logger: quiet,
    batchSize: signing.batchSize,
  });
  let polls = 0;
  const sync = new EntrySync(client, cache, rotator, {
    waitMs: 10_000,
    onAgentRefused: (error) => refusals.push(error),
    onSynced: () => polls++,
    logger: quiet,
  });
  sync.start();
  return {
    identity,
    client,
    cache,
    refusals,
    polls: () => polls,
    agentId: identity.current()!.spiffeId.toString(),
    stop: async () => {
      await sync.stop();
      await rotator.stop();
      await manager.stop();
      client.close();
    },
  };
}

describe('agent classes against a real sigil-server', () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let bundle: TrustBundle;
  let dir: string;
  let agentA: Awaited<ReturnType<typeof startAgent>>;
  let agentB: Awaited<ReturnType<typeof startAgent>>;
  const entries = () => api.server.app.get(EntriesService);

  beforeAll(async () => {
    api = await startAgentApiTestServer({ clock });
    bundle = await api.trustBundle();
    dir = await mkdtemp(join(tmpdir(), 'sigil-agent-int-'));
    const tokens = api.server.app.get(JoinTokensService);
    await entries().createEntry({
      spiffeId: 'spiffe://example.org/web',
      parentId: 'spiffe://example.org/host/a',
      selectors: uid(1000),
    });
    await entries().createEntry({
      spiffeId: 'spiffe://example.org/db',
      parentId: 'spiffe://example.org/host/b',
      selectors: uid(1000),
    });
    agentA = await startAgent(
      api,
      bundle,
      join(dir, 'a'),
      (await tokens.create({ spiffeId: 'spiffe://example.org/host/a' })).token,
    );
    agentB = await startAgent(
      api,
      bundle,
      join(dir, 'b'),
      (await tokens.create({ spiffeId: 'spiffe://example.org/host/b' })).token,
    );
  }, 120_000);

  afterAll(async () => {
    await agentA?.stop();
    await agentB?.stop();
    await api?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('attests, syncs its authorised entries and gets their SVIDs signed, which verify against the bundle', async () => {
    expect(agentA.agentId).toMatch(/^spiffe:\/\/example\.org\/sigil\/agent\/join_token\//);
    await until(() => agentA.cache.identitiesFor(uid(1000))[0]?.x509Svid !== undefined, 'first SVID');
    const identities = agentA.cache.identitiesFor(uid(1000));
    expect(identities.map((identity) => identity.spiffeId.toString())).toEqual(['spiffe://example.org/web']);
    const verified = await verifyX509Svid([...identities[0]!.x509Svid!.chain], bundle, { now: clock.now() });
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/web');
  });

  it("keeps each agent to its own entries, and the server refuses a CSR for another agent's entry", async () => {
    await until(() => agentB.cache.identitiesFor(uid(1000))[0]?.x509Svid !== undefined, 'agent B SVID');
    expect(agentB.cache.identitiesFor(uid(1000)).map((identity) => identity.spiffeId.toString())).toEqual([
      'spiffe://example.org/db',
    ]);
    const dbEntry = (await entries().listEntries({ spiffeId: 'spiffe://example.org/db' })).entries[0]!;
    const csr = await createCsr({ keys: await generateKeyPair(), spiffeId: SpiffeId.parse('spiffe://example.org/db') });
    const [result] = await agentA.client.signX509Svids([{ entryId: dbEntry.id, csrPem: csr.pem }]);
    expect(result).toMatchObject({ entryId: dbEntry.id, ok: false, code: 'permission_denied' });
  });

  it('keeps two CSR batches at the server at once, and signs every entry', async () => {
    const tokens = api.server.app.get(JoinTokensService);
    const count = 9;
    for (let i = 0; i < count; i++) {
      await entries().createEntry({
        spiffeId: `spiffe://example.org/batch/${i}`,
        parentId: 'spiffe://example.org/host/c',
        selectors: uid(1001),
      });
    }
    let inFlight = 0;
    let most = 0;
    let requests = 0;
    const agentC = await startAgent(
      api,
      bundle,
      join(dir, 'c'),
      (await tokens.create({ spiffeId: 'spiffe://example.org/host/c' })).token,
      {
        batchSize: 2,
        onSignRequest: (phase) => {
          if (phase === 'start') {
            requests++;
            most = Math.max(most, ++inFlight);
          } else {
            inFlight--;
          }
        },
      },
    );
    try {
      await until(
        () => agentC.cache.identitiesFor(uid(1001)).filter((identity) => identity.x509Svid).length === count,
        'all SVIDs of agent C',
      );
      expect(requests).toBe(Math.ceil(count / 2));
      expect(most).toBe(2);
    } finally {
      await agentC.stop();
    }
  });

  it('receives a new entry through the long poll it has open', async () => {
    await until(() => agentA.polls() > 0, 'first poll');
    const polls = agentA.polls();
    await entries().createEntry({
      spiffeId: 'spiffe://example.org/web2',
      parentId: 'spiffe://example.org/host/a',
      selectors: uid(1000),
    });
    await until(
      () => agentA.cache.identitiesFor(uid(1000)).filter((identity) => identity.x509Svid).length === 2,
      'second SVID',
    );
    expect(agentA.polls()).toBe(polls + 1);
  });

  it('gets JWT-SVIDs through the cache, reused for the same audience set', async () => {
    const identity = agentA.cache.identitiesFor(uid(1000))[0]!;
    const token = await agentA.cache.fetchJwtSvid(identity, ['db', 'cache'], { uid: 1000 });
    expect(await agentA.cache.fetchJwtSvid(identity, ['cache', 'db'], { uid: 1000 })).toBe(token);
    const svid = await parseAndValidateJwtSvid(token, await api.trustBundle(), 'db', { now: clock.now() });
    expect(svid.spiffeId.equals(identity.spiffeId)).toBe(true);
  });

  it('is told when the server evicts it', async () => {
    await api.server.app.get(AgentsService).evict(agentB.agentId);
    await entries().createEntry({
      spiffeId: 'spiffe://example.org/wake',
      parentId: 'spiffe://example.org/host/b',
      selectors: uid(1),
    });
    await until(() => agentB.refusals.length > 0, 'refusal');
    expect(agentB.refusals[0]!.isAgentRefused()).toBe(true);
  });
});

describe('a stopping server and kept-alive connections', () => {
  it('answers a request it was reading when it began to stop with Connection: close', async () => {
    const api = await startAgentApiTestServer({ clock: new FakeClock(new Date()) });
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
    try {
      const body = JSON.stringify({ csr: 'x' });
      let sent = false;
      let startClose!: () => void;
      const closing = new Promise<void>((resolve) => (startClose = resolve));

      const answered = new Promise<string | undefined>((resolve, reject) => {
        const request = httpsRequest(
          {
            host: '127.0.0.1',
            port: api.port,
            method: 'POST',
            path: '/agent/v1/renew',
            agent,
            headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
          },
          (response) => {
            response.resume();
            response.once('end', () => resolve(response.headers.connection));
          },
        );
        request.once('error', reject);
        // Half the body: the server is busy reading this request (the connection is not idle) when it stops.
        request.write(body.slice(0, 5), () => (sent = true));
        void closing.then(() => request.end(body.slice(5)));
      });
      await until(() => sent, 'the first half of the request sent');
      // Without a way to see the server's side, give it a moment to read the headers.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const closed = api.close();
      startClose();
      // A kept-alive answer would let the client go on using the connection, holding the server open.
      expect(await answered).toBe('close');
      await closed;
    } finally {
      agent.destroy();
    }
  }, 120_000);
});
