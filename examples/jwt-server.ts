/**
 * An HTTP server that authenticates callers by the JWT-SVID in their `Authorization: Bearer` header, validated
 * offline against the JWT bundles the Workload API delivers (kept current by a JwtSource). With `--https svid` it
 * serves HTTPS with one-way TLS (`createTlsServer`): it presents its X.509-SVID and asks callers for no certificate.
 *
 *   node dist/examples/jwt-server.js --audience spiffe://example.org/jwt-server [--port 8080] [--https svid]
 *     [--spiffe-id spiffe://example.org/server] [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { type RequestListener, createServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { JwtSource, createTlsServer, validateBearerJwtSvid } from '@sigil/workload-api';
import { fail, flags, openX509Source } from './example-args.js';

const usage = 'jwt-server --audience AUDIENCE [--port 8080] [--https svid] [--spiffe-id SPIFFE_ID] [--address URI]';
const args = flags(usage, { audience: undefined, port: '8080', https: undefined, 'spiffe-id': undefined }, [
  'audience',
  'port',
]);
if (args.https !== undefined && args.https !== 'svid') fail(`--https takes svid, got ${args.https}\nusage: ${usage}`);

const source = await JwtSource.create({
  clientOptions: { address: args.address },
  timeoutMs: 30_000,
  onError: (error) => console.error(`workload api: ${error.message}`),
}).catch((error: Error) => fail(`cannot get the JWT bundles: ${error.message}`));

const handler: RequestListener = (req, res) => {
  validateBearerJwtSvid(req.headers.authorization, source, args.audience).then(
    (svid) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`hello ${svid.spiffeId.toString()}, your token expires at ${svid.expiry.toISOString()}\n`);
    },
    (error: Error) => {
      res.statusCode = 401;
      res.setHeader('www-authenticate', 'Bearer');
      res.end(`${error.message}\n`);
    },
  );
};
const x509 = args.https === undefined ? undefined : await openX509Source(args.address, args['spiffe-id']);
const server = x509 === undefined ? createServer(handler) : createTlsServer(x509, handler);
server.listen(Number(args.port), () => {
  const scheme = x509 === undefined ? 'http' : 'https';
  const { port } = server.address() as AddressInfo;
  console.log(`accepting JWT-SVIDs for ${args.audience} on ${scheme}://127.0.0.1:${port}/`);
});

process.once('SIGINT', () => {
  server.close();
  void source.close();
  void x509?.close();
});
