/**
 * An Express recipe. An Express application is a Node request listener, so `createMtlsServer` serves it over HTTPS
 * with mutual SPIFFE authentication, already armed (there is no attach step to forget), exactly as it serves any
 * `(req, res)` handler; `peerSpiffeId(req.socket)` names the caller in a route:
 *
 * ```ts
 * import express from 'express';
 * const app = express();
 * app.get('/', (req, res) => res.send(`hello ${peerSpiffeId(req.socket as TLSSocket)}`));
 * serveWithMtls(app, source, authorizeId('spiffe://example.org/client'), 8443);
 * ```
 *
 * Express is not a dependency of this repository, so this file holds the part that is the library's (typechecked
 * against Node's `RequestListener`, the type an Express app satisfies) rather than a runnable program.
 */
import { type RequestListener } from 'node:http';
import { type Server } from 'node:https';
import { type Authorizer, type X509Source, createMtlsServer } from '@sigil/workload-api';

/** Serves `app` (an Express application or any request listener) with mutual SPIFFE authentication on `port`. */
export function serveWithMtls(app: RequestListener, source: X509Source, authorizer: Authorizer, port: number): Server {
  const server = createMtlsServer(source, authorizer, app);
  server.on('tlsClientError', (error: Error) => console.error(`refused a connection: ${error.message}`));
  return server.listen(port);
}
