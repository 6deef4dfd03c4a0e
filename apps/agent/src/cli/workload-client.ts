import { connect } from 'node:net';
import { Code, ConnectError, type Client, createClient } from '@connectrpc/connect';
import { Http2SessionManager, createGrpcTransport } from '@connectrpc/connect-node';
import { SpiffeWorkloadAPI } from '@sigil/workload-api';
import { DEFAULT_WORKLOAD_API_SOCKET } from '../workload-api/workload-api.server.js';
import { CliError } from './cli-error.js';

/** A connection to a Workload API on a Unix socket, as the `api` and `healthcheck` commands use it. */
export interface WorkloadConnection {
  readonly client: Client<typeof SpiffeWorkloadAPI>;
  /** `unix://<path>`. */
  readonly address: string;
  /** Closes the HTTP/2 connection (open streams end). */
  close(): void;
}

/**
 * The socket to call: `--socket-path` (a path, or a `unix://` URI), else `SPIFFE_ENDPOINT_SOCKET` (`unix:///path`,
 * SPIFFE_Workload_Endpoint.md §4), else the agent's default socket.
 */
export function resolveSocketPath(flag: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  const value = flag ?? env['SPIFFE_ENDPOINT_SOCKET'];
  if (value === undefined || value === '') return DEFAULT_WORKLOAD_API_SOCKET;
  const label = flag !== undefined ? '--socket-path' : 'SPIFFE_ENDPOINT_SOCKET';
  if (!value.includes(':')) return value;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`${label}: must be a socket path or a unix:///path URI, got '${value}'`);
  }
  if (url.protocol !== 'unix:' || url.host !== '' || url.pathname === '' || url.pathname === '/') {
    throw new CliError(`${label}: must be a socket path or a unix:///path URI, got '${value}'`);
  }
  return decodeURIComponent(url.pathname);
}

/**
 * A minimal Workload API client: connect-node's gRPC transport on our own HTTP/2 connection to the Unix socket,
 * over the generated `SpiffeWorkloadAPI` descriptor, adding the `workload.spiffe.io: true` header every call needs.
 * (The `@sigil/workload-api` client library was not published when these commands were written.)
 */
export function openWorkloadConnection(socketPath: string): WorkloadConnection {
  const sessionManager = new Http2SessionManager(
    'http://localhost',
    {},
    { createConnection: () => connect(socketPath) },
  );
  const transport = createGrpcTransport({
    baseUrl: 'http://localhost',
    sessionManager,
    interceptors: [
      (next) => (request) => {
        request.header.set('workload.spiffe.io', 'true');
        return next(request);
      },
    ],
  });
  return {
    client: createClient(SpiffeWorkloadAPI, transport),
    address: `unix://${socketPath}`,
    close: () => sessionManager.abort(),
  };
}

/** A one-line reason for a failed call. */
export function describeRpcError(error: unknown, address: string): string {
  const connectError = ConnectError.from(error);
  if (connectError.code === Code.Unavailable && /ENOENT|ECONNREFUSED|EACCES/.test(connectError.rawMessage)) {
    return `cannot connect to the Workload API at ${address}: ${connectError.rawMessage}`;
  }
  return `${Code[connectError.code]}: ${connectError.rawMessage}`;
}
