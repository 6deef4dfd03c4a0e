/**
 * A gRPC server with mutual SPIFFE authentication: an HTTP/2 server armed by `attachMtls` (presents its X.509-SVID,
 * serves only the client SPIFFE ID given by --authorize) and Connect's Node adapter serving `Greeter/Hello`, which
 * answers with the caller's SPIFFE ID. Any gRPC client works: grpc-client.ts calls it with @grpc/grpc-js and with a
 * Connect transport.
 *
 *   node dist/examples/grpc-server.js --authorize spiffe://example.org/client [--spiffe-id spiffe://example.org/server]
 *     [--port 8444] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { createSecureServer } from 'node:http2';
import { type AddressInfo } from 'node:net';
import { type TLSSocket } from 'node:tls';
import { createContextKey, createContextValues } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { attachMtls, authorizeId, peerSpiffeId } from '@sigil/workload-api';
import { flags, openX509Source } from './example-args.js';
import { Greeter } from './greeter.js';

const usage = 'grpc-server --authorize SPIFFE_ID [--spiffe-id SPIFFE_ID] [--port 8444] [--address URI]';
const args = flags(usage, { authorize: undefined, 'spiffe-id': undefined, port: '8444' }, ['authorize', 'port']);

const source = await openX509Source(args.address, args['spiffe-id']);

const caller = createContextKey<string>('none', { description: 'the caller SPIFFE ID' });
const handler = connectNodeAdapter({
  routes: (router) =>
    router.service(Greeter, { hello: (_request, context) => ({ value: `hello ${context.values.get(caller)}` }) }),
  contextValues: (req) =>
    createContextValues().set(caller, peerSpiffeId(req.socket as TLSSocket)?.toString() ?? 'none'),
});
const server = attachMtls(createSecureServer({}, handler), source, authorizeId(args.authorize));
server.on('tlsClientError', (error) => console.error(`refused a connection: ${error.message}`));
server.listen(Number(args.port), () => {
  const { port } = server.address() as AddressInfo;
  console.log(`${source.getX509Svid().spiffeId.toString()} serving gRPC on 127.0.0.1:${port}`);
});

process.once('SIGINT', () => {
  server.close();
  void source.close();
});
