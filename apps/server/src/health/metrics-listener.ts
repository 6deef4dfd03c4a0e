import { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { type HostPort } from '@sigil/runtime';
import { listenForPaths, requestPath } from '../common/path-listener.js';

/** The paths the metrics listener serves (`--metrics-address`), and the TLS port then does not. */
export function isMetricsListenerPath(url: string | undefined): boolean {
  const path = requestPath(url);
  return path === '/metrics' || path === '/docs' || path.startsWith('/docs/');
}

/**
 * A plain-HTTP listener for `/metrics` and `/docs` (`--metrics-address`), meant for localhost: a scraper and the API
 * documentation stay off the port agents and admins reach from the network. It hands those paths to the app's own
 * routing (the same handlers, the same per-address budget) and answers 404 to everything else, so no `/v1` route can
 * be reached through it.
 */
export function listenForMetrics(
  address: HostPort,
  routing: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<{ server: Server; address: AddressInfo }> {
  return listenForPaths(address, routing, isMetricsListenerPath, 'this listener serves GET /metrics and /docs only');
}
