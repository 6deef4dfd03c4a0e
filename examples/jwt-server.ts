/**
 * An HTTP server that authenticates callers by the JWT-SVID in their `Authorization: Bearer` header, validated
 * offline against the JWT bundles the Workload API delivers (kept current by a JwtSource).
 *
 *   node dist/examples/jwt-server.js --audience spiffe://example.org/jwt-server [--port 8080]
 *     [--address unix:///tmp/sigil-agent/public/api.sock]
 */
import { createServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { JwtSource, validateBearerJwtSvid } from '@sigil/workload-api';
import { fail, flags } from './example-args.js';

const usage = 'jwt-server --audience AUDIENCE [--port 8080] [--address URI]';
const args = flags(usage, { audience: undefined, port: '8080' }, ['audience', 'port']);

const source = await JwtSource.create({
  clientOptions: { address: args.address },
  timeoutMs: 30_000,
  onError: (error) => console.error(`workload api: ${error.message}`),
}).catch((error: Error) => fail(`cannot get the JWT bundles: ${error.message}`));

const server = createServer((req, res) => {
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
});
server.listen(Number(args.port), () =>
  console.log(
    `accepting JWT-SVIDs for ${args.audience} on http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
  ),
);

process.once('SIGINT', () => {
  server.close();
  void source.close();
});
