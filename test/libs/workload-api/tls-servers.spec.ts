/**
 * The ready-made servers and the one-way helpers of @sigil/workload-api: `createMtlsServer`, `attachMtls`,
 * `createTlsServer` / `attachTls` with `createTlsClientOptions`, `loadX509Bundle`, the Connect transport and the
 * grpc-js channel credentials, over real sockets with SVIDs from the agent's real Workload API server (fed by a fake
 * identity cache).
 */
import { once } from 'node:events';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { type Http2SecureServer, createSecureServer } from 'node:http2';
import { type Server as HttpsServer, createServer as createHttpsServer, request } from 'node:https';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConnectionOptions, type TLSSocket, type Server as TlsServer } from 'node:tls';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { StringValueSchema } from '@bufbuild/protobuf/wkt';
import { createClient, createContextKey, createContextValues } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { Client, type ServiceError } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Greeter, HELLO_PATH } from '../../../examples/greeter.js';
import { type Authorizer, authorizeAny, authorizeId } from '../../../libs/workload-api/src/authorizer.js';
import { loadX509Bundle } from '../../../libs/workload-api/src/bundles.js';
import { createGrpcChannelCredentials } from '../../../libs/workload-api/src/grpc-js.js';
import { createMtlsGrpcTransport } from '../../../libs/workload-api/src/grpc-transport.js';
import {
  attachMtls,
  attachTls,
  createClientTlsOptions,
  createMtlsServer,
  createServerTlsOptions,
  createTlsClientOptions,
  createTlsServer,
  peerSpiffeId,
} from '../../../libs/workload-api/src/tls.js';
import { X509Source } from '../../../libs/workload-api/src/x509-source.js';
import { FakeWorkloadApi, until } from '../../support/fake-workload-api.js';

const SERVER_ID = 'spiffe://example.org/server';
const CLIENT_ID = 'spiffe://example.org/client';

const pick = (path: string) => (svids: readonly { spiffeId: { path: string } }[]) =>
  svids.find((svid) => svid.spiffeId.path === path) as never;

interface Answer {
  status: number;
  body: string;
  serverId: string | undefined;
}

/** One HTTPS GET on a new connection. */
function get(port: number, tlsOptions: ConnectionOptions): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ ...tlsOptions, host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      const serverId = peerSpiffeId(res.socket as TLSSocket)?.toString();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body, serverId }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Answers with the client's SPIFFE ID as the server saw it, or `none`. */
const whoAmI = (req: { socket: unknown }, res: { end(body: string): void }): void =>
  res.end(peerSpiffeId(req.socket as TLSSocket)?.toString() ?? 'none');

describe('ready-made SPIFFE TLS servers, one-way TLS, gRPC', () => {
  let api: FakeWorkloadApi;
  let other: FakeWorkloadApi;
  let serverSource: X509Source;
  let clientSource: X509Source;
  let otherSource: X509Source;
  let scratch: string;
  const servers: (HttpsServer | Http2SecureServer | TlsServer)[] = [];

  async function listen<S extends HttpsServer | Http2SecureServer>(server: S) {
    const rejections: Error[] = [];
    server.on('tlsClientError', (error: Error) => rejections.push(error));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
    return { port: (server.address() as AddressInfo).port, rejections };
  }

  beforeAll(async () => {
    api = await FakeWorkloadApi.start('example.org', ['/server', '/client']);
    other = await FakeWorkloadApi.start('other.org', ['/intruder']);
    serverSource = await X509Source.create({ clientOptions: { address: api.address }, picker: pick('/server') });
    clientSource = await X509Source.create({ clientOptions: { address: api.address }, picker: pick('/client') });
    otherSource = await X509Source.create({ clientOptions: { address: other.address } });
    scratch = await mkdtemp(join(tmpdir(), 'sigil-tls-servers-'));
  });

  afterEach(() => {
    for (const server of servers.splice(0)) {
      if ('closeAllConnections' in server) server.closeAllConnections();
      server.close();
    }
  });

  afterAll(async () => {
    await Promise.all([serverSource.close(), clientSource.close(), otherSource.close()]);
    await Promise.all([api.dispose(), other.dispose()]);
    await rm(scratch, { recursive: true, force: true });
  });

  it('createMtlsServer serves an authorized client and refuses another before the handler', async () => {
    const requests: string[] = [];
    const { port, rejections } = await listen(
      createMtlsServer(serverSource, authorizeId(CLIENT_ID), (req, res) => {
        requests.push('seen');
        whoAmI(req, res);
      }),
    );
    const answer = await get(port, createClientTlsOptions(clientSource, authorizeId(SERVER_ID)));
    expect(answer).toEqual({ status: 200, body: CLIENT_ID, serverId: SERVER_ID });

    await expect(get(port, createClientTlsOptions(serverSource, authorizeId(SERVER_ID)))).rejects.toThrow();
    await until(() => rejections.length === 1);
    expect(rejections[0]).toMatchObject({ code: 'ERR_PEER_REJECTED', message: `peer ${SERVER_ID} is not authorized` });
    expect(requests).toEqual(['seen']);
  });

  it('attachMtls arms an HTTP/2 server created without any TLS option, and refuses a client without a certificate', async () => {
    const server = attachMtls(createSecureServer({}, whoAmI), serverSource, authorizeAny());
    const { port, rejections } = await listen(server);
    const { connect } = await import('node:http2');
    const session = connect(`https://127.0.0.1:${port}`, createClientTlsOptions(clientSource, authorizeId(SERVER_ID)));
    const stream = session.request({ ':path': '/' });
    stream.setEncoding('utf8');
    let body = '';
    stream.on('data', (chunk: string) => (body += chunk));
    await once(stream, 'end');
    session.close();
    expect(body).toBe(CLIENT_ID);

    // One-way client options present no certificate: the mTLS server refuses the connection.
    const noCert = connect(`https://127.0.0.1:${port}`, createTlsClientOptions(clientSource, authorizeId(SERVER_ID)));
    noCert.on('error', () => undefined);
    await until(() => rejections.length === 1);
    noCert.destroy();
    expect(rejections[0]).toMatchObject({ code: 'ERR_PEER_REJECTED', message: 'peer presented no certificate' });
  });

  it('attachMtls and attachTls refuse what cannot be armed safely', async () => {
    const notTls = createHttpServer();
    expect(() => attachMtls(notTls as never, serverSource, authorizeAny())).toThrow(
      expect.objectContaining({ code: 'ERR_ARGUMENT_INVALID', message: expect.stringMatching(/must be a TLS server/) }),
    );
    expect(() => attachMtls(createHttpsServer({}), serverSource, undefined as unknown as Authorizer)).toThrow(
      'an authorizer is required (authorizeId, authorizeMemberOf, …)',
    );
    expect(() => createMtlsServer(serverSource, undefined as unknown as Authorizer)).toThrow(
      'an authorizer is required',
    );
    expect(() => createTlsClientOptions(serverSource, undefined as unknown as Authorizer)).toThrow(
      'an authorizer is required',
    );

    const armed = attachMtls(createHttpsServer({}), serverSource, authorizeAny());
    expect(() => attachTls(armed, serverSource)).toThrow('attachTls: the server is already armed');
    expect(() => attachMtls(armed, serverSource, authorizeAny())).toThrow('attachMtls: the server is already armed');
    const options = createServerTlsOptions(serverSource, authorizeAny());
    const attached = options.attach(createHttpsServer(options));
    expect(() => attachMtls(attached, serverSource, authorizeAny())).toThrow('already armed');
    const byAttachMtls = attachMtls(createHttpsServer({}), serverSource, authorizeAny());
    expect(() => options.attach(byAttachMtls)).toThrow(
      'attach: the server is already armed by attachMtls or attachTls',
    );

    const listening = createHttpsServer({});
    await listen(listening);
    expect(() => attachMtls(listening, serverSource, authorizeAny())).toThrow('attachMtls: call it before listen()');
  });

  it('one-way TLS: the server presents its SVID, the client verifies it with a bundle file and presents nothing', async () => {
    const bundleFile = join(scratch, 'bundle.pem');
    await writeFile(bundleFile, serverSource.getBundles().getBundleForTrustDomain(api.trustDomain).x509Pem());
    const bundle = await loadX509Bundle('example.org', bundleFile);
    const { port } = await listen(createTlsServer(serverSource, whoAmI));

    const answer = await get(port, createTlsClientOptions(bundle, authorizeId(SERVER_ID)));
    expect(answer).toEqual({ status: 200, body: 'none', serverId: SERVER_ID });
    // The source itself works as well (a client with an SVID that does not present it).
    expect((await get(port, createTlsClientOptions(clientSource, authorizeId(SERVER_ID)))).body).toBe('none');

    await expect(get(port, createTlsClientOptions(bundle, authorizeId(CLIENT_ID)))).rejects.toMatchObject({
      code: 'ERR_PEER_REJECTED',
      message: `peer ${SERVER_ID} is not authorized`,
    });
    // A server of another trust domain does not chain to the bundle.
    const intruder = await listen(attachTls(createHttpsServer({}, whoAmI), otherSource));
    await expect(get(intruder.port, createTlsClientOptions(bundle, authorizeAny()))).rejects.toMatchObject({
      code: expect.stringMatching(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT/),
    });
  });

  it('loadX509Bundle refuses a file that is not PEM certificates', async () => {
    const file = join(scratch, 'not-a-bundle.pem');
    await writeFile(file, 'hello\n');
    await expect(loadX509Bundle('example.org', file)).rejects.toMatchObject({ code: 'ERR_BUNDLE_INVALID' });
    await expect(loadX509Bundle('Example.org!', file)).rejects.toMatchObject({ code: 'ERR_TRUST_DOMAIN_INVALID' });
  });

  describe('gRPC', () => {
    async function greeterServer(authorizer: Authorizer) {
      const caller = createContextKey<string>('none');
      const handler = connectNodeAdapter({
        routes: (router) =>
          router.service(Greeter, {
            hello: (req, context) => ({ value: `${req.value} ${context.values.get(caller)}` }),
          }),
        contextValues: (req) =>
          createContextValues().set(caller, peerSpiffeId(req.socket as TLSSocket)?.toString() ?? 'none'),
      });
      return listen(attachMtls(createSecureServer({}, handler), serverSource, authorizer));
    }

    function grpcHello(port: number, authorizer: Authorizer): Promise<string> {
      const client = new Client(`127.0.0.1:${port}`, createGrpcChannelCredentials(clientSource, authorizer));
      return new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(
          HELLO_PATH,
          (value: string) => Buffer.from(toBinary(StringValueSchema, create(StringValueSchema, { value }))),
          (bytes: Buffer) => fromBinary(StringValueSchema, bytes).value,
          'hello',
          { deadline: Date.now() + 10_000 },
          (error: ServiceError | null, value?: string) => (error ? reject(error) : resolve(value!)),
        ),
      ).finally(() => client.close());
    }

    it('grpc-js channel credentials: mutual authentication both ways', async () => {
      const { port } = await greeterServer(authorizeId(CLIENT_ID));
      expect(await grpcHello(port, authorizeId(SERVER_ID))).toBe(`hello ${CLIENT_ID}`);
    });

    it('grpc-js channel credentials need a source that reports rotations, and an authorizer', () => {
      const { onUpdate: _onUpdate, ...frozen } = {
        getX509Svid: () => clientSource.getX509Svid(),
        getBundles: () => clientSource.getBundles(),
        getBundleForTrustDomain: clientSource.getBundleForTrustDomain.bind(clientSource),
        onUpdate: clientSource.onUpdate.bind(clientSource),
      };
      expect(() => createGrpcChannelCredentials(frozen as never, authorizeAny())).toThrow(
        'the source must report updates (onUpdate), as X509Source does',
      );
      expect(() => createGrpcChannelCredentials(clientSource, undefined as unknown as Authorizer)).toThrow(
        'an authorizer is required',
      );
    });

    it('grpc-js channel credentials refuse a server the authorizer rejects', async () => {
      const { port } = await greeterServer(authorizeAny());
      await expect(grpcHello(port, authorizeId(CLIENT_ID))).rejects.toMatchObject({
        code: 14, // UNAVAILABLE: no connection could be made
        details: expect.stringContaining(`peer ${SERVER_ID} is not authorized`),
      });
    });

    it('the Connect transport: mutual authentication, and only https: base URLs', async () => {
      const { port, rejections } = await greeterServer(authorizeId(CLIENT_ID));
      const client = createClient(
        Greeter,
        createMtlsGrpcTransport(clientSource, authorizeId(SERVER_ID), { baseUrl: `https://127.0.0.1:${port}` }),
      );
      expect((await client.hello({ value: 'hi' })).value).toBe(`hi ${CLIENT_ID}`);

      const refused = createClient(
        Greeter,
        createMtlsGrpcTransport(serverSource, authorizeId(SERVER_ID), { baseUrl: `https://127.0.0.1:${port}` }),
      );
      await expect(refused.hello({ value: 'hi' })).rejects.toThrow();
      await until(() => rejections.length === 1);
      expect(rejections[0]!.message).toBe(`peer ${SERVER_ID} is not authorized`);

      expect(() =>
        createMtlsGrpcTransport(clientSource, authorizeAny(), { baseUrl: `http://127.0.0.1:${port}` }),
      ).toThrow('baseUrl must be an https: url, got http:');
    });
  });
});
