import { isIP } from 'node:net';
import { WorkloadApiError } from './errors.js';

/** The environment variable a client falls back to for the Workload API address (SPIFFE_Workload_Endpoint.md §4). */
export const SPIFFE_ENDPOINT_SOCKET = 'SPIFFE_ENDPOINT_SOCKET';

/** A parsed Workload API address: a Unix domain socket path, or a TCP IP address and port. */
export type WorkloadApiAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

function invalid(value: string, rule: string): WorkloadApiError {
  const shown = value.length > 120 ? `${value.slice(0, 120)}…` : value;
  return new WorkloadApiError('ERR_ADDRESS_INVALID', `workload api address ${JSON.stringify(shown)}: ${rule}`);
}

/**
 * Parses a Workload API address by the rules of SPIFFE_Workload_Endpoint.md §4: an RFC 3986 URI whose scheme is
 * `unix` or `tcp`.
 *
 * - `unix`: no authority, an absolute path, nothing else (`unix:///run/spire/agent.sock`, or `unix:/run/…`).
 *   Percent-encoded octets in the path are decoded.
 * - `tcp`: the host is an IP address (IPv6 in brackets) and the port is set; no user info, path, query or fragment
 *   (`tcp://127.0.0.1:8000`). A DNS name is refused: the endpoint must not depend on name resolution.
 *
 * @throws WorkloadApiError `ERR_ADDRESS_INVALID` naming the broken rule.
 */
export function parseWorkloadApiAddress(value: string): WorkloadApiAddress {
  if (typeof value !== 'string' || value === '') throw invalid(String(value), 'must be a non-empty uri');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(value, 'is not a valid uri');
  }
  if (url.username !== '' || url.password !== '') throw invalid(value, 'must not include user info');
  if (url.search !== '' || value.includes('?')) throw invalid(value, 'must not include a query');
  if (url.hash !== '' || value.includes('#')) throw invalid(value, 'must not include a fragment');

  switch (url.protocol) {
    case 'unix:': {
      if (url.host !== '') throw invalid(value, 'unix uri must not have an authority (use unix:///absolute/path)');
      if (url.pathname === '' || url.pathname === '/')
        throw invalid(value, 'unix uri must include the path of the socket');
      if (!url.pathname.startsWith('/')) throw invalid(value, 'unix uri path must be absolute');
      let path: string;
      try {
        path = decodeURIComponent(url.pathname);
      } catch {
        throw invalid(value, 'unix uri path has invalid percent-encoding');
      }
      if (path.includes('\0')) throw invalid(value, 'unix uri path must not contain nul');
      return { kind: 'unix', path };
    }
    case 'tcp:': {
      if (url.hostname === '') throw invalid(value, 'tcp uri must include a host');
      if (url.pathname !== '') throw invalid(value, 'tcp uri must not include a path');
      const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
      if (isIP(host) === 0) throw invalid(value, 'tcp uri host must be an ip address, not a dns name');
      if (url.port === '') throw invalid(value, 'tcp uri must include a port');
      const port = Number(url.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw invalid(value, 'tcp uri port must be between 1 and 65535');
      }
      return { kind: 'tcp', host, port };
    }
    default:
      throw invalid(value, 'scheme must be unix or tcp');
  }
}

/**
 * The Workload API address to use: `address` when given, else the `SPIFFE_ENDPOINT_SOCKET` environment variable, as
 * SPIFFE_Workload_Endpoint.md §4 requires of conforming clients.
 *
 * @throws WorkloadApiError `ERR_ADDRESS_INVALID` when neither is set or the value breaks a rule.
 */
export function resolveWorkloadApiAddress(
  address: string | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env,
): WorkloadApiAddress {
  const value = address ?? env[SPIFFE_ENDPOINT_SOCKET];
  if (value === undefined || value === '') {
    throw new WorkloadApiError(
      'ERR_ADDRESS_INVALID',
      `workload api address is not configured: pass address or set ${SPIFFE_ENDPOINT_SOCKET}`,
    );
  }
  return parseWorkloadApiAddress(value);
}
