import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import { type AddressInfo } from 'node:net';
import { type TLSSocket } from 'node:tls';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import { AgentApiError, retryDelayMs, ServerClient } from './server-client.js';
import { parseServerAddress, type ServerAddress } from './server-address.js';
import {
  type ClientCredentials,
  MAX_RETRY_AFTER_MS,
  parseRetryAfter,
  type ServerTrust,
  ServerUnavailableError,
} from './tls-transport.js';

type Handler = (request: { method: string; url: string; body: unknown; peerId: string | undefined }) => {
  status: number;
  body?: unknown;
  hang?: boolean;
  retryAfter?: string;
};

interface TestServer {
  server: Server;
  address: ServerAddress;
  handler: Handler;
  requests: { url: string; peerId: string | undefined }[];
  /** TLS connections accepted, and how many of them have closed. */
  connections: { opened: number; closed: number };
}

let ca: TestCa;
let agentCredentials: ClientCredentials;
const servers: TestServer[] = [];

async function pemOf(svid: TestSvid): Promise<{ cert: string; key: string }> {
  return {
    cert: svid.chain.map((certificate) => certificate.toString('pem')).join('\n'),
    key: toPem(PEM_LABEL.privateKey, await svid.privateKeyPkcs8()),
  };
}

/** A TLS 1.3 server presenting `svid`, recording each request and the URI SAN of the client certificate. */
async function startServer(svid: TestSvid, handler: Handler): Promise<TestServer> {
  const { cert, key } = await pemOf(svid);
  const server = createServer({ cert, key, minVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: false });
  const state: TestServer = {
    server,
    address: undefined as unknown as ServerAddress,
    handler,
    requests: [],
    connections: { opened: 0, closed: 0 },
  };
  server.on('secureConnection', (socket: TLSSocket) => {
    state.connections.opened++;
    socket.once('close', () => state.connections.closed++);
  });
  server.on('request', (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const peer = (request.socket as TLSSocket).getPeerCertificate();
      const peerId = peer?.subjectaltname?.replace(/^URI:/, '');
      const text = Buffer.concat(chunks).toString('utf8');
      state.requests.push({ url: request.url ?? '', peerId });
      const answer = state.handler({
        method: request.method ?? '',
        url: request.url ?? '',
        body: text ? JSON.parse(text) : undefined,
        peerId,
      });
      if (answer.hang) return;
      response.writeHead(answer.status, {
        'content-type': 'application/json',
        ...(answer.retryAfter !== undefined && { 'retry-after': answer.retryAfter }),
      });
      response.end(answer.body === undefined ? '' : JSON.stringify(answer.body));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.address = parseServerAddress(`127.0.0.1:${(server.address() as AddressInfo).port}`) as ServerAddress;
  servers.push(state);
  return state;
}

const ok: Handler = ({ body }) => ({ status: 200, body: { echo: body ?? null } });

function client(
  addresses: readonly ServerAddress[],
  trust: ServerTrust,
  credentials?: ClientCredentials,
): ServerClient {
  return new ServerClient({ addresses, trust: () => trust, credentials: () => credentials, timeoutMs: 2_000 });
}

/** The raw call of the client, through a public method whose answer parser we do not need. */
async function call(target: ServerClient): Promise<unknown> {
  return target.attestationChallenge('x509pop', { certificates: ['AQID'] }).then(() => 'answered');
}

let good: TestServer;

/** Waits (without a timing assertion) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(condition()).toBe(true);
}

beforeAll(async () => {
  ca = await TestCa.create('example.org');
  const agent = await ca.createX509Svid('spiffe://example.org/sigil/agent/join_token/1');
  const pem = await pemOf(agent);
  agentCredentials = { certificateChainPem: pem.cert, privateKeyPem: pem.key };
  good = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), ok);
});

afterAll(async () => {
  for (const { server } of servers) {
    server.closeAllConnections();
    server.close();
  }
});

describe('parseRetryAfter', () => {
  it.each<[string | string[] | undefined, number | undefined]>([
    ['1', 1_000],
    [' 30 ', 30_000],
    ['0', 0],
    ['86400', MAX_RETRY_AFTER_MS],
    ['Wed, 21 Oct 2015 07:28:00 GMT', undefined],
    ['-1', undefined],
    ['1.5', undefined],
    [['1', '2'], undefined],
    [undefined, undefined],
  ])('%j -> %j ms', (header, expected) => {
    expect(parseRetryAfter(header)).toBe(expected);
  });
});

describe('ServerClient over TLS', () => {
  it('authenticates the server by bundle and SPIFFE ID, and presents the agent SVID', async () => {
    const target = client([good.address], { kind: 'bundle', bundle: ca.bundle() }, agentCredentials);
    await target.renew('CSR').catch((error: unknown) => expect((error as Error).message).toMatch(/^server answer:/));
    expect(good.requests.at(-1)).toEqual({
      url: '/agent/v1/renew',
      peerId: 'spiffe://example.org/sigil/agent/join_token/1',
    });
  });

  it('does not present a client certificate before attestation', async () => {
    const target = client([good.address], { kind: 'bundle', bundle: ca.bundle() });
    expect(await call(target)).toBe('answered');
    expect(good.requests.at(-1)?.peerId).toBeUndefined();
    await expect(target.renew('CSR')).rejects.toThrow('/agent/v1/renew: the agent has no SVID yet');
  });

  it('presents the agent SVID when attesting again while it holds a valid one, and none otherwise', async () => {
    let attestation: ClientCredentials | undefined = agentCredentials;
    const target = new ServerClient({
      addresses: [good.address],
      trust: () => ({ kind: 'bundle', bundle: ca.bundle() }),
      credentials: () => agentCredentials,
      attestationCredentials: () => attestation,
      timeoutMs: 2_000,
    });
    const agentId = 'spiffe://example.org/sigil/agent/join_token/1';
    expect(await call(target)).toBe('answered');
    expect(good.requests.at(-1)).toEqual({ url: '/agent/v1/attest/x509pop/challenge', peerId: agentId });
    good.handler = () => ({ status: 403, body: { error: 'permission_denied', message: 'x509pop: wrong signature' } });
    const refused = await target.attest('x509pop', { csr: 'CSR' }).catch((failure: unknown) => failure);
    expect(good.requests.at(-1)).toEqual({ url: '/agent/v1/attest/x509pop', peerId: agentId });
    // The refusal judges the evidence: it carries no SVID, so the agent never takes it for a verdict on its own.
    expect(refused).toMatchObject({ status: 403, sentWith: undefined });
    good.handler = ok;
    // Expired (or none yet): attested without a client certificate.
    attestation = undefined;
    expect(await call(target)).toBe('answered');
    expect(good.requests.at(-1)?.peerId).toBeUndefined();
  });

  it('refuses a server whose certificate names another SPIFFE ID', async () => {
    const web = await startServer(await ca.createX509Svid('spiffe://example.org/web'), ok);
    const target = client([web.address], { kind: 'bundle', bundle: ca.bundle() });
    await expect(call(target)).rejects.toThrow(
      `${web.address.text}: server certificate has SPIFFE ID spiffe://example.org/web, expected spiffe://example.org/sigil/server`,
    );
    expect(web.requests).toEqual([]);
  });

  it('refuses a server whose certificate does not chain to the bundle, before sending anything', async () => {
    const rogueCa = await TestCa.create('example.org');
    const rogue = await startServer(await rogueCa.createX509Svid('spiffe://example.org/sigil/server'), ok);
    const target = client([rogue.address], { kind: 'bundle', bundle: ca.bundle() }, agentCredentials);
    const error = await call(target).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(ServerUnavailableError);
    expect((error as Error).message).toMatch(
      /server certificate is not trusted: certificate chain does not chain to a trusted authority/,
    );
    expect(rogue.requests).toEqual([]);
  });

  it('with insecure bootstrap checks only the server ID, and its trust domain when known', async () => {
    const rogueCa = await TestCa.create('example.org');
    const anyCa = await startServer(await rogueCa.createX509Svid('spiffe://example.org/sigil/server'), ok);
    expect(await call(client([anyCa.address], { kind: 'insecure', trustDomain: undefined }))).toBe('answered');
    await expect(
      call(client([anyCa.address], { kind: 'insecure', trustDomain: TrustDomain.parse('other.org') })),
    ).rejects.toThrow(
      'server certificate has SPIFFE ID spiffe://example.org/sigil/server, expected spiffe://other.org/sigil/server',
    );
  });

  it('fails over to the next address when one is down or answers 503, and stays there', async () => {
    const dead = parseServerAddress('127.0.0.1:1') as ServerAddress;
    const busy = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), () => ({
      status: 503,
      body: { error: 'unavailable', message: 'database down' },
    }));
    const target = client([dead, busy.address, good.address], { kind: 'bundle', bundle: ca.bundle() });
    const before = good.requests.length;
    expect(await call(target)).toBe('answered');
    expect(target.currentAddress).toBe(good.address);
    expect(busy.requests).toHaveLength(1);
    expect(await call(target)).toBe('answered');
    expect(busy.requests).toHaveLength(1);
    expect(good.requests.length).toBe(before + 2);
    const allDown = client([dead], { kind: 'bundle', bundle: ca.bundle() });
    await expect(call(allDown)).rejects.toBeInstanceOf(ServerUnavailableError);
  });

  it('turns an error answer into AgentApiError, telling refusals of the agent apart', async () => {
    good.handler = () => ({ status: 403, body: { error: 'permission_denied', message: 'agent is banned' } });
    const target = client([good.address], { kind: 'bundle', bundle: ca.bundle() }, agentCredentials);
    const error = await target.renew('CSR').catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(AgentApiError);
    expect(error).toMatchObject({ status: 403, kind: 'permission_denied', message: 'agent is banned' });
    expect((error as AgentApiError).isAgentRefused()).toBe(true);
    good.handler = () => ({ status: 429, body: { error: 'resource_exhausted', message: 'slow down' } });
    const limited = (await target.renew('CSR').catch((failure: unknown) => failure)) as AgentApiError;
    expect([limited.kind, limited.isAgentRefused(), limited.retryAfterMs]).toEqual([
      'resource_exhausted',
      false,
      undefined,
    ]);
    expect(retryDelayMs(limited, 700)).toBe(700);
    good.handler = () => ({ status: 429, retryAfter: '3', body: { error: 'resource_exhausted', message: 'wait' } });
    const told = (await target.renew('CSR').catch((failure: unknown) => failure)) as AgentApiError;
    expect(told.retryAfterMs).toBe(3_000);
    expect([retryDelayMs(told, 700), retryDelayMs(told, 5_000)]).toEqual([3_000, 5_000]);
    good.handler = ok;
  });

  it('gives up on a server that does not answer, and lets a long poll be aborted', async () => {
    const silent = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), () => ({
      status: 200,
      hang: true,
    }));
    const target = new ServerClient({
      addresses: [silent.address],
      trust: () => ({ kind: 'bundle', bundle: ca.bundle() }),
      credentials: () => agentCredentials,
      timeoutMs: 200,
    });
    await expect(call(target)).rejects.toThrow(/no answer within 200 ms/);
    const abort = new AbortController();
    const poll = target.sync({ revision: 0, bundleSequence: undefined, waitMs: 60_000 }, abort.signal);
    abort.abort(new Error('stopping'));
    await expect(poll).rejects.toThrow('stopping');
  });

  describe('kept-alive connections', () => {
    const jwtBody = { spiffe_id: 'spiffe://example.org/web', token: 'a.b.c', expires_at: '2030-01-01T00:00:00Z' };

    it('sends many requests over a few connections, at most the lane size at once', async () => {
      const server = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), () => ({
        status: 200,
        body: jwtBody,
      }));
      const target = new ServerClient({
        addresses: [server.address],
        trust: () => ({ kind: 'bundle', bundle }),
        credentials: () => agentCredentials,
        connections: { jwt: 3 },
      });
      const bundle = ca.bundle();
      for (let i = 0; i < 20; i++) await target.signJwtSvid('e1', [`aud-${i}`]);
      expect(server.connections.opened).toBe(1);
      await Promise.all(Array.from({ length: 40 }, (_, i) => target.signJwtSvid('e1', [`par-${i}`])));
      expect(server.requests).toHaveLength(60);
      expect(server.connections.opened).toBeLessThanOrEqual(3);
      target.close();
      await until(() => server.connections.closed === server.connections.opened);
    });

    it('makes new connections with the new SVID after a renewal, and closes the idle old ones', async () => {
      const server = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), () => ({
        status: 200,
        body: jwtBody,
      }));
      const renewed = await pemOf(await ca.createX509Svid('spiffe://example.org/sigil/agent/join_token/2'));
      let credentials = agentCredentials;
      const bundle = ca.bundle();
      const target = new ServerClient({
        addresses: [server.address],
        trust: () => ({ kind: 'bundle', bundle }),
        credentials: () => credentials,
      });
      await target.signJwtSvid('e1', ['a']);
      await target.signJwtSvid('e1', ['b']);
      expect(server.connections).toEqual({ opened: 1, closed: 0 });
      credentials = { certificateChainPem: renewed.cert, privateKeyPem: renewed.key };
      await target.signJwtSvid('e1', ['c']);
      expect(server.requests.map((request) => request.peerId)).toEqual([
        'spiffe://example.org/sigil/agent/join_token/1',
        'spiffe://example.org/sigil/agent/join_token/1',
        'spiffe://example.org/sigil/agent/join_token/2',
      ]);
      expect(server.connections.opened).toBe(2);
      await until(() => server.connections.closed === 1);
      target.close();
    });

    it('keeps the control lane free while every JWT-SVID connection is busy', async () => {
      const server = await startServer(await ca.createX509Svid('spiffe://example.org/sigil/server'), ({ url }) =>
        url === '/agent/v1/svids/jwt' ? { status: 200, hang: true } : { status: 200, body: { results: [] } },
      );
      const bundle = ca.bundle();
      const target = new ServerClient({
        addresses: [server.address],
        trust: () => ({ kind: 'bundle', bundle }),
        credentials: () => agentCredentials,
        connections: { jwt: 2 },
        timeoutMs: 5_000,
      });
      const stuck = Array.from({ length: 6 }, (_, i) => target.signJwtSvid('e1', [`a-${i}`]).catch(() => 'failed'));
      await until(() => server.requests.length === 2);
      expect(await target.signX509Svids([{ entryId: 'e1', csrPem: 'CSR' }])).toEqual([]);
      expect(server.requests.filter((request) => request.url === '/agent/v1/svids/jwt')).toHaveLength(2);
      target.close();
      expect(await Promise.all(stuck)).toEqual(Array(6).fill('failed'));
    });
  });
});
