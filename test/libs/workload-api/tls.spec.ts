import { once } from 'node:events';
import { connect as http2Connect, createSecureServer } from 'node:http2';
import { type Server as HttpsServer, createServer as createHttpsServer, request } from 'node:https';
import { type AddressInfo } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type Authorizer,
  authorizeAny,
  authorizeId,
  authorizeMemberOf,
  authorizeOneOf,
} from '../../../libs/workload-api/src/authorizer.js';
import { FakeWorkloadApi, until } from '../../support/fake-workload-api.js';
import {
  type SpiffeClientTlsOptions,
  type SpiffeTlsClientOptions,
  createClientTlsOptions,
  createServerTlsOptions,
  createTlsClientOptions,
  peerSpiffeId,
} from '../../../libs/workload-api/src/tls.js';
import { X509Source } from '../../../libs/workload-api/src/x509-source.js';

const SERVER_ID = 'spiffe://example.org/server';
const CLIENT_ID = 'spiffe://example.org/client';

interface Response {
  status: number;
  body: { client: string; clientSerial: string };
  serverId: string | undefined;
  serverSerial: string;
}

/** One HTTPS request on a new connection. */
function get(port: number, tlsOptions: SpiffeClientTlsOptions): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request({ ...tlsOptions, host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      const socket = res.socket as TLSSocket;
      const serverSerial = socket.getPeerCertificate().serialNumber;
      const serverId = peerSpiffeId(socket)?.toString();
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), serverId, serverSerial }));
    });
    req.on('error', reject);
    req.end();
  });
}

const serialOf = (source: X509Source): string => source.getX509Svid().certificates[0]!.serialNumber.toUpperCase();
const issuerOf = (source: X509Source): string => source.getX509Svid().certificates[0]!.issuer;
const pick = (path: string) => (svids: readonly { spiffeId: { path: string } }[]) =>
  svids.find((svid) => svid.spiffeId.path === path) as never;

describe('mutual TLS with X.509-SVIDs from the Workload API', () => {
  let api: FakeWorkloadApi;
  let other: FakeWorkloadApi;
  let serverSource: X509Source;
  let clientSource: X509Source;
  let otherSource: X509Source;
  const servers: HttpsServer[] = [];

  /** An HTTPS server that answers with the client's SPIFFE ID and certificate serial, as it saw them. */
  async function startServer(authorizer: Authorizer, source = serverSource, attach = true) {
    const requests: string[] = [];
    const rejections: Error[] = [];
    const tlsOptions = createServerTlsOptions(source, authorizer);
    const created = createHttpsServer(tlsOptions, (req, res) => {
      const socket = req.socket as TLSSocket;
      const client = peerSpiffeId(socket)?.toString() ?? 'none';
      requests.push(client);
      res.end(JSON.stringify({ client, clientSerial: socket.getPeerCertificate().serialNumber }));
    });
    const server = attach ? tlsOptions.attach(created) : created;
    server.on('tlsClientError', (error: Error) => rejections.push(error));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
    return { port: (server.address() as AddressInfo).port, requests, rejections };
  }

  beforeAll(async () => {
    api = await FakeWorkloadApi.start('example.org', ['/server', '/client']);
    other = await FakeWorkloadApi.start('other.org', ['/intruder']);
    serverSource = await X509Source.create({ clientOptions: { address: api.address }, picker: pick('/server') });
    clientSource = await X509Source.create({ clientOptions: { address: api.address }, picker: pick('/client') });
    otherSource = await X509Source.create({ clientOptions: { address: other.address } });
  });

  afterEach(() => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      server.close();
    }
  });

  afterAll(async () => {
    await Promise.all([serverSource.close(), clientSource.close(), otherSource.close()]);
    await Promise.all([api.dispose(), other.dispose()]);
  });

  it('connects with the right SPIFFE IDs on both sides, over TLS 1.3', async () => {
    const { port } = await startServer(authorizeId(CLIENT_ID));
    const response = await get(port, createClientTlsOptions(clientSource, authorizeId(SERVER_ID)));
    expect(response.status).toBe(200);
    expect(response.body.client).toBe(CLIENT_ID);
    expect(response.serverId).toBe(SERVER_ID);

    const socket = tlsConnect({ ...createClientTlsOptions(clientSource, authorizeAny()), host: '127.0.0.1', port });
    await once(socket, 'secureConnect');
    expect(socket.getProtocol()).toBe('TLSv1.3');
    socket.destroy();
  });

  it.each([
    ['authorizeOneOf', authorizeOneOf([SERVER_ID, CLIENT_ID])],
    ['authorizeMemberOf', authorizeMemberOf('example.org')],
    ['a custom authorizer', ((id, chain) => id.path === '/client' && chain.length === 3) as Authorizer],
  ])('accepts the client with %s', async (_name, authorizer) => {
    const { port } = await startServer(authorizer);
    expect((await get(port, createClientTlsOptions(clientSource, authorizeAny()))).body.client).toBe(CLIENT_ID);
  });

  it('refuses a client the server authorizer rejects: no request reaches the handler', async () => {
    const { port, requests, rejections } = await startServer(authorizeId('spiffe://example.org/someone-else'));
    await expect(get(port, createClientTlsOptions(clientSource, authorizeAny()))).rejects.toThrow();
    await until(() => rejections.length === 1);
    expect(rejections[0]).toMatchObject({
      code: 'ERR_PEER_REJECTED',
      message: `peer ${CLIENT_ID} is not authorized`,
    });
    expect(requests).toEqual([]);
  });

  it('refuses a client without a certificate', async () => {
    const { port, requests, rejections } = await startServer(authorizeAny());
    const { ca } = createClientTlsOptions(clientSource, authorizeAny());
    const req = request({ host: '127.0.0.1', port, ca, checkServerIdentity: () => undefined, agent: false });
    const failed = once(req, 'error');
    req.end();
    await failed;
    await until(() => rejections.length === 1);
    expect(rejections[0]).toMatchObject({ code: 'ERR_PEER_REJECTED', message: 'peer presented no certificate' });
    expect(requests).toEqual([]);
  });

  it('refuses a server the client authorizer rejects, before sending the request', async () => {
    const { port, requests } = await startServer(authorizeAny());
    await expect(get(port, createClientTlsOptions(clientSource, authorizeMemberOf('other.org')))).rejects.toMatchObject(
      { code: 'ERR_PEER_REJECTED', message: `peer ${SERVER_ID} is not authorized` },
    );
    await expect(
      get(
        port,
        createClientTlsOptions(clientSource, () => {
          throw new Error('authorizer bug');
        }),
      ),
    ).rejects.toMatchObject({ message: `peer ${SERVER_ID} is not authorized: the authorizer failed` });
    expect(requests).toEqual([]);
  });

  it("asks each options object's authorizer: a connection another authorizer accepted is not reused for it", async () => {
    const { port } = await startServer(authorizeAny());
    // Kept-alive requests, as `https.get(url, options)` sends them: the first authorizer accepts the server.
    const keptAlive = (tlsOptions: SpiffeTlsClientOptions) =>
      new Promise<number>((resolve, reject) => {
        const req = request({ ...tlsOptions, host: '127.0.0.1', port, path: '/' }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        req.on('error', reject);
        req.end();
      });
    const accepting = createClientTlsOptions(clientSource, authorizeId(SERVER_ID));
    expect(await keptAlive(accepting)).toBe(200);
    expect(await keptAlive(accepting)).toBe(200);
    // Another authorizer, the same host and port and TLS material: its own check runs, and refuses.
    await expect(keptAlive(createClientTlsOptions(clientSource, authorizeMemberOf('other.org')))).rejects.toMatchObject(
      {
        code: 'ERR_PEER_REJECTED',
      },
    );
    await expect(
      keptAlive(createTlsClientOptions(clientSource, authorizeId('spiffe://example.org/not-the-server'))),
    ).rejects.toMatchObject({ code: 'ERR_PEER_REJECTED' });
    accepting.agent.destroy();
  });

  it('refuses a client of a trust domain the server holds no bundle for', async () => {
    other.federateWith(api.ca.root()); // the intruder trusts example.org, but example.org does not trust it
    await until(() => otherSource.getBundles().size === 2);
    const { port, requests, rejections } = await startServer(authorizeAny());
    await expect(get(port, createClientTlsOptions(otherSource, authorizeAny()))).rejects.toThrow();
    await until(() => rejections.length === 1);
    expect(rejections[0]).toMatchObject({
      code: 'ERR_PEER_REJECTED',
      message: 'peer x509 svid rejected: no bundle for trust domain "other.org"',
    });
    expect(requests).toEqual([]);
  });

  it('refuses a server of a trust domain the client holds no bundle for', async () => {
    const { port, requests } = await startServer(authorizeAny(), otherSource);
    await expect(get(port, createClientTlsOptions(clientSource, authorizeAny()))).rejects.toMatchObject({
      code: expect.stringMatching(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/),
    });
    expect(requests).toEqual([]);
  });

  it('refuses certificates a federated CA issued in the name of our trust domain, on both sides', async () => {
    // example.org federates with other.org; other.org's CA then signs SVIDs for example.org's IDs.
    api.federateWith(other.ca.root());
    const forged = await Promise.all([
      api.identity('/server', { issuer: other.ca }),
      api.identity('/client', { issuer: other.ca }),
    ]);
    const genuine = api.cache.identities;
    try {
      // Genuine server, forged client.
      api.cache.update(
        (cache) => (cache.identities = [genuine[0]!, { ...forged[1]!, federatesWith: [other.trustDomain] }]),
      );
      await until(
        () => issuerOf(clientSource) === other.ca.certificate.subject && serverSource.getBundles().size === 2,
      );
      const server = await startServer(authorizeAny());
      await expect(get(server.port, createClientTlsOptions(clientSource, authorizeAny()))).rejects.toThrow();
      await until(() => server.rejections.length === 1);
      expect(server.rejections[0]!.message).toMatch(
        /^peer x509 svid rejected: certificate chain does not chain to a trusted authority of example\.org/,
      );
      expect(server.requests).toEqual([]);

      // Forged server, genuine client: the client's synchronous check refuses it, with the same rule and message.
      api.cache.update(
        (cache) => (cache.identities = [{ ...forged[0]!, federatesWith: [other.trustDomain] }, genuine[1]!]),
      );
      await until(
        () => issuerOf(serverSource) === other.ca.certificate.subject && clientSource.getBundles().size === 2,
      );
      const forgedServer = await startServer(authorizeAny());
      await expect(get(forgedServer.port, createClientTlsOptions(clientSource, authorizeAny()))).rejects.toMatchObject({
        code: 'ERR_PEER_REJECTED',
        message: expect.stringMatching(
          /^peer x509 svid rejected: certificate chain does not chain to a trusted authority of example\.org/,
        ),
      });
      expect(forgedServer.requests).toEqual([]);
    } finally {
      api.cache.update((cache) => {
        cache.identities = genuine;
        cache.agentBundles = { own: cache.agentBundles!.own, federated: [] };
      });
      await until(() => serverSource.getBundles().size === 1 && clientSource.getBundles().size === 1);
    }
  });

  it('presents a rotated SVID on new connections without restarting the server', async () => {
    const { port } = await startServer(authorizeId(CLIENT_ID));
    const tlsOptions = createClientTlsOptions(clientSource, authorizeId(SERVER_ID));
    const first = await get(port, tlsOptions);
    expect(first.serverSerial).toBe(serialOf(serverSource));
    expect(first.body.clientSerial).toBe(serialOf(clientSource));

    const before = { server: serialOf(serverSource), client: serialOf(clientSource) };
    await api.rotate();
    await until(() => serialOf(serverSource) !== before.server && serialOf(clientSource) !== before.client);

    const second = await get(port, tlsOptions);
    expect(second.serverSerial).toBe(serialOf(serverSource));
    expect(second.serverSerial).not.toBe(first.serverSerial);
    expect(second.body.clientSerial).toBe(serialOf(clientSource));
    expect(second.body.clientSerial).not.toBe(first.body.clientSerial);
  });

  it('fails closed when the server was never attached', async () => {
    const { port, requests } = await startServer(authorizeAny(), serverSource, false);
    await expect(get(port, createClientTlsOptions(clientSource, authorizeAny()))).rejects.toThrow();
    expect(requests).toEqual([]);
  });

  it('refuses to attach to a server that does not request client certificates', () => {
    const tlsOptions = createServerTlsOptions(serverSource, authorizeAny());
    const plain = createHttpsServer({});
    expect(() => tlsOptions.attach(plain)).toThrow(
      'attach: the server must be created with these options (it does not request client certificates)',
    );
  });

  it('refuses TLS 1.2 unless allowed', async () => {
    const { port } = await startServer(authorizeAny());
    const socket = tlsConnect({
      ...createClientTlsOptions(clientSource, authorizeAny(), { minVersion: 'TLSv1.2' }),
      maxVersion: 'TLSv1.2',
      host: '127.0.0.1',
      port,
    });
    const [error] = (await once(socket, 'error')) as [Error & { code?: string }];
    expect(error.code).toMatch(/ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION|ERR_SSL_UNSUPPORTED_PROTOCOL/);
  });

  it('works for HTTP/2', async () => {
    const tlsOptions = createServerTlsOptions(serverSource, authorizeId(CLIENT_ID));
    const server = tlsOptions.attach(
      createSecureServer(tlsOptions, (req, res) =>
        res.end(peerSpiffeId(req.socket as TLSSocket)?.toString() ?? 'none'),
      ),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const session = http2Connect(`https://127.0.0.1:${(server.address() as AddressInfo).port}`, {
        ...createClientTlsOptions(clientSource, authorizeId(SERVER_ID)),
      });
      const stream = session.request({ ':path': '/' });
      stream.setEncoding('utf8');
      let body = '';
      stream.on('data', (chunk: string) => (body += chunk));
      await once(stream, 'end');
      expect(body).toBe(CLIENT_ID);
      session.close();
    } finally {
      server.close();
    }
  });
});
