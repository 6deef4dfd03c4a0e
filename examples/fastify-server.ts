/**
 * A Fastify recipe: Fastify on an HTTPS server with mutual SPIFFE authentication. `serverFactory` hands Fastify's
 * request handler to `createMtlsServer`, which returns the server already armed (there is no attach step to forget);
 * a route reads the caller's SPIFFE ID with `peerSpiffeId`.
 *
 *   node dist/examples/fastify-server.js --authorize spiffe://example.org/client [--spiffe-id spiffe://example.org/server]
 *     [--port 8445] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { type Server } from 'node:https';
import { type AddressInfo } from 'node:net';
import { type TLSSocket } from 'node:tls';
import Fastify from 'fastify';
import { authorizeId, createMtlsServer, peerSpiffeId } from '@sigil/workload-api';
import { flags, openX509Source } from './example-args.js';

const usage = 'fastify-server --authorize SPIFFE_ID [--spiffe-id SPIFFE_ID] [--port 8445] [--address URI]';
const args = flags(usage, { authorize: undefined, 'spiffe-id': undefined, port: '8445' }, ['authorize', 'port']);

const source = await openX509Source(args.address, args['spiffe-id']);

const app = Fastify<Server>({
  serverFactory: (handler) => createMtlsServer(source, authorizeId(args.authorize), handler),
});
app.get('/', async (request) => `hello ${peerSpiffeId(request.raw.socket as TLSSocket)?.toString()} from fastify\n`);
app.server.on('tlsClientError', (error: Error) => console.error(`refused a connection: ${error.message}`));

await app.listen({ port: Number(args.port), host: '127.0.0.1' });
// Fastify prints http:// for a server it did not create itself; the server is HTTPS.
const { port } = app.server.address() as AddressInfo;
console.log(`${source.getX509Svid().spiffeId.toString()} (fastify) listening on https://127.0.0.1:${port}/`);

process.once('SIGINT', () => {
  void app.close().then(() => source.close());
});
