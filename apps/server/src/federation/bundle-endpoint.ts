import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { Logger } from '@nestjs/common';
import { type Clock } from '../common/clock.js';
import { type ConnectionLimits, connectionServerOptions, TlsConnectionGuard } from '../common/connection-limits.js';
import { type ServerCredentialSource, type ServerCredentials, ServerTlsRefresher } from '../common/server-tls.js';
import { type BundleEndpointConfig } from '../config.js';

/** The app route that answers the bundle endpoint's `GET /` (the same handler, budget and document as `/bundle`). */
export const BUNDLE_ENDPOINT_ROUTE = '/bundle';

/** Open connections the bundle endpoint holds in total: a few per federated trust domain's servers is plenty. */
export const BUNDLE_ENDPOINT_MAX_CONNECTIONS = 1024;

/**
 * The `https_web` profile's credentials: the certificate chain and key from files, read again on every refresh (the
 * refresher's minute at most), so a renewed certificate written over the files is served without a restart.
 */
export class FileServerCredentialSource implements ServerCredentialSource {
  constructor(
    private readonly certFile: string,
    private readonly keyFile: string,
  ) {}

  async issue(): Promise<ServerCredentials> {
    const [certificateChainPem, privateKeyPem] = await Promise.all([
      readFile(this.certFile, 'utf8'),
      readFile(this.keyFile, 'utf8'),
    ]);
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(certificateChainPem);
    } catch {
      throw new Error(`bundle endpoint certificate ${this.certFile}: not a PEM certificate`);
    }
    return { certificateChainPem, privateKeyPem, notAfter: new Date(leaf.validTo) };
  }
}

/** A running bundle endpoint listener. */
export interface BundleEndpointListener {
  readonly server: HttpsServer;
  readonly address: AddressInfo;
  readonly connections: TlsConnectionGuard;
  close(): Promise<void>;
}

/**
 * The SPIFFE federation bundle endpoint (SPIFFE_Federation.md §4-5) on its own HTTPS listener
 * (`--bundle-endpoint-address`): `GET /` answers our bundle as SPIFFE JWKS through the app's `/bundle` route, so the
 * document, `spiffe_sequence`/`spiffe_refresh_hint` and the per-address `read` budget are those of that route.
 * Anything else is 404 (another path) or 405 (another method); no `/v1` route is reachable through it. Connections
 * are bounded like the TLS port's (per address, handshake rate, timeouts), with at most
 * {@link BUNDLE_ENDPOINT_MAX_CONNECTIONS} in total. The certificate is the server's own X509-SVID for
 * `https_spiffe` (issued by our CA and renewed like the TLS port's), or the configured files' for `https_web`.
 */
export async function listenForBundleEndpoint(
  config: BundleEndpointConfig,
  routing: (request: IncomingMessage, response: ServerResponse) => void,
  svidSource: ServerCredentialSource,
  portLimits: ConnectionLimits,
  clock: Clock,
): Promise<BundleEndpointListener> {
  const limits: ConnectionLimits = {
    ...portLimits,
    maxConnections: Math.min(portLimits.maxConnections, BUNDLE_ENDPOINT_MAX_CONNECTIONS),
    // No long-poll here: an answer is one small document.
    responseIdleTimeoutMs: portLimits.requestTimeoutMs,
  };
  const server = createHttpsServer({ minVersion: 'TLSv1.2', ...connectionServerOptions(limits) });
  const connections = new TlsConnectionGuard(limits, clock, new Logger('BundleEndpointConnections'));
  connections.attach(server);
  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/') return answer(response, 404, 'not_found', 'the bundle endpoint serves GET / only');
    if (request.method !== 'GET') {
      response.setHeader('allow', 'GET');
      return answer(response, 405, 'method_not_allowed', 'the bundle endpoint serves GET / only');
    }
    request.url = BUNDLE_ENDPOINT_ROUTE;
    routing(request, response);
  });
  const source =
    config.profile === 'https_web' ? new FileServerCredentialSource(config.certFile, config.keyFile) : svidSource;
  const refresher = new ServerTlsRefresher(server, source, clock, 'TLSv1.2');
  await refresher.start();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: config.address.host, port: config.address.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    refresher.stop();
    throw error;
  }
  let closing: Promise<void> | undefined;
  return {
    server,
    address: server.address() as AddressInfo,
    connections,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        refresher.stop();
        server.closeAllConnections();
        server.close(() => resolve());
      })),
  };
}

function answer(response: ServerResponse, status: number, error: string, message: string): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify({ error, message }));
}
