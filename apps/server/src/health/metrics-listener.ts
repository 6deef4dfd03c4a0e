import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { type HostPort } from '@sigil/runtime';

/** The paths the metrics listener serves (`--metrics-address`), and the TLS port then does not. */
export function isMetricsListenerPath(url: string | undefined): boolean {
  const path = (url ?? '').split('?')[0] ?? '';
  return path === '/metrics' || path === '/docs' || path.startsWith('/docs/');
}

/**
 * A plain-HTTP listener for `/metrics` and `/docs` (`--metrics-address`), meant for localhost: a scraper and the API
 * documentation stay off the port agents and admins reach from the network. It hands those paths to the app's own
 * routing (the same handlers, the same per-address budget) and answers 404 to everything else, so no `/v1` route can
 * be reached through it.
 */
export async function listenForMetrics(
  address: HostPort,
  routing: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (request, response) => {
    if ((request.method === 'GET' || request.method === 'HEAD') && isMetricsListenerPath(request.url)) {
      routing(request, response);
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: 'not_found', message: 'this listener serves GET /metrics and /docs only' }));
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address.host, port: address.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, address: server.address() as AddressInfo };
}
