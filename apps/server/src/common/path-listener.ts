import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { type HostPort } from '@sigil/runtime';

/** The path of a request URL, without its query. */
export function requestPath(url: string | undefined): string {
  return (url ?? '').split('?')[0] ?? '';
}

/**
 * A plain-HTTP listener that hands GET (and HEAD) requests for the paths `serves` accepts to the app's own routing
 * (the same handlers, the same per-address budget) and answers 404 with `refusal` to everything else, so no `/v1`
 * route can be reached through it.
 */
export async function listenForPaths(
  address: HostPort,
  routing: (request: IncomingMessage, response: ServerResponse) => void,
  serves: (path: string) => boolean,
  refusal: string,
): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (request, response) => {
    if ((request.method === 'GET' || request.method === 'HEAD') && serves(requestPath(request.url))) {
      routing(request, response);
      return;
    }
    response.writeHead(404, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: 'not_found', message: refusal }));
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
