/**
 * An HTTPS server with mutual SPIFFE authentication: it presents its X.509-SVID from the Workload API and serves
 * only the client SPIFFE ID given by --authorize. Its certificate rotates without a restart.
 *
 *   node dist/examples/mtls-server.js --authorize spiffe://example.org/client [--spiffe-id spiffe://example.org/server]
 *     [--port 8443] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { createServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { type TLSSocket } from 'node:tls';
import { authorizeId, createServerTlsOptions, peerSpiffeId } from '@sigil/workload-api';
import { flags, openX509Source } from './example-args.js';

const usage = 'mtls-server --authorize SPIFFE_ID [--spiffe-id SPIFFE_ID] [--port 8443] [--address URI]';
const args = flags(usage, { authorize: undefined, 'spiffe-id': undefined, port: '8443' }, ['authorize', 'port']);

const source = await openX509Source(args.address, args['spiffe-id']);
source.onUpdate(() =>
  console.log(`SVID updated: now presenting serial ${source.getX509Svid().certificates[0]!.serialNumber}`),
);

const tlsOptions = createServerTlsOptions(source, authorizeId(args.authorize));
const server = tlsOptions.attach(
  createServer(tlsOptions, (req, res) => {
    const client = peerSpiffeId(req.socket as TLSSocket);
    res.setHeader('content-type', 'text/plain');
    res.end(`hello ${client?.toString()}, this is ${source.getX509Svid().spiffeId.toString()}\n`);
  }),
);
server.on('tlsClientError', (error) => console.error(`refused a connection: ${error.message}`));
server.listen(Number(args.port), () => {
  const { port } = server.address() as AddressInfo;
  console.log(`${source.getX509Svid().spiffeId.toString()} listening on https://127.0.0.1:${port}/`);
  console.log(`accepting only ${args.authorize}`);
});

process.once('SIGINT', () => {
  server.close();
  server.closeAllConnections();
  void source.close();
});
