import { once } from 'node:events';
import { request as httpsRequest } from 'node:https';
import { connect as connectTcp } from 'node:net';
import { performance } from 'node:perf_hooks';
import { connect as connectTls } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  credentialsOf,
  newAgentKey,
  startAgentApiTestServer,
  type AgentApiTestServer,
  type ClientCredentials,
} from '../../../../test/support/agent-api.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const PER_ADDRESS = 4;

/** An mTLS GET from `localAddress` on a fresh connection; resolves with the status. */
function getFrom(
  port: number,
  localAddress: string,
  path: string,
  credentials?: ClientCredentials,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        localAddress,
        path,
        agent: false,
        rejectUnauthorized: false,
        ...(credentials && { cert: credentials.certificatePem, key: credentials.privateKeyPem }),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: response.statusCode ?? 0,
            body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
          });
        });
      },
    );
    request.on('error', reject);
    request.end();
  });
}

// The server with every connection timeout at 1 s and a small per-address cap: the wiring of the TLS port's connection
// policy from the config (connection-limits.spec.ts covers each rule on a bare TLS server).
describe(`TLS port connection limits (${backend})`, () => {
  let api: AgentApiTestServer;
  let agent: ClientCredentials;
  /** A second agent: each agent holds at most 2 long-polls (agent_max_long_polls), the cap needs 4 held. */
  let otherAgent: ClientCredentials;

  beforeAll(async () => {
    api = await startAgentApiTestServer({
      clock: new FakeClock(Date.now()),
      flags: {
        maxConnectionsPerAddress: String(PER_ADDRESS),
        tlsHandshakeTimeout: '1',
        httpHeadersTimeout: '1',
        httpRequestTimeout: '1',
        httpIdleTimeout: '1',
      },
    });
    const attest = async (): Promise<ClientCredentials> => {
      const { token } = await api.server.app.get(JoinTokensService).create({});
      const key = await newAgentKey();
      const attested = await api.call('POST', '/agent/v1/attest/join-token', { token, csr: await key.csr() });
      expect(attested.status).toBe(200);
      return credentialsOf(attested.body['svid'], key.privateKeyPem);
    };
    agent = await attest();
    otherAgent = await attest();
  });

  afterAll(async () => {
    await api?.close();
  });

  it('closes a TCP connection that sends nothing, and one silent after its TLS handshake', async () => {
    const silent = connectTcp({ host: '127.0.0.1', port: api.port });
    silent.on('error', () => undefined);
    const handshaken = connectTls({ host: '127.0.0.1', port: api.port, rejectUnauthorized: false });
    handshaken.on('error', () => undefined);
    await once(handshaken, 'secureConnect');
    await Promise.all([once(silent, 'close'), once(handshaken, 'close')]);
    expect(api.server.connections.counts().handshakeTimeouts).toBeGreaterThanOrEqual(1);
  });

  it('answers a sync long-poll that waits longer than every connection timeout', async () => {
    const start = await getFrom(api.port, '127.0.0.1', '/agent/v1/sync?revision=0', agent);
    const bundle = start.body['bundle'] as { spiffe_sequence: number };
    const query = `revision=${start.body['revision'] as number}&bundle_sequence=${bundle.spiffe_sequence}`;
    // Nothing changes: the server holds the request 3 s, three times the headers, request and idle timeouts.
    const startedAt = performance.now();
    const waited = await getFrom(api.port, '127.0.0.1', `/agent/v1/sync?${query}&wait_ms=3000`, agent);
    // A lower bound only: the answer came at the end of the wait, not early because the connection was cut.
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(2_900);
    expect(waited.status).toBe(200);
    expect(waited.body).toMatchObject({ entries: [], deleted_ids: [] });
  });

  it('refuses a connection over the per-address cap while other addresses and the held requests are served', async () => {
    const refusedBefore = api.server.connections.counts().refused.connections_per_address;
    const start = await getFrom(api.port, '127.0.0.1', '/agent/v1/sync?revision=0', agent);
    const bundle = start.body['bundle'] as { spiffe_sequence: number };
    const poll = `/agent/v1/sync?revision=${start.body['revision'] as number}&bundle_sequence=${bundle.spiffe_sequence}&wait_ms=4000`;
    // The cap's worth of long-polls from 127.0.0.2, each holding its connection: two agents, two each (a third
    // long-poll of one agent would answer its oldest at once).
    const held = Array.from({ length: PER_ADDRESS }, (_, i) =>
      getFrom(api.port, '127.0.0.2', poll, i % 2 === 0 ? agent : otherAgent),
    );
    await expect.poll(() => api.server.connections.openConnections('127.0.0.2')).toBe(PER_ADDRESS);

    await expect(getFrom(api.port, '127.0.0.2', '/healthz')).rejects.toThrow();
    expect(api.server.connections.counts().refused.connections_per_address).toBe(refusedBefore + 1);
    expect((await getFrom(api.port, '127.0.0.3', '/healthz')).status).toBe(200);

    for (const answer of await Promise.all(held)) expect(answer.status).toBe(200);
    await expect.poll(() => api.server.connections.openConnections('127.0.0.2')).toBe(0);
    expect((await getFrom(api.port, '127.0.0.2', '/healthz')).status).toBe(200);
  });
});
