import { resolve } from 'node:path';
import { SPIFFE_ENDPOINT_SOCKET, WorkloadApiClient, WorkloadApiError } from '@sigil/workload-api/client';
import { DEFAULT_WORKLOAD_API_SOCKET } from '../endpoints/workload-api/default-socket.js';
import { CliError } from '@sigil/runtime/cli';

/** The `unix://` URI of a socket path, percent-encoding what a URI path cannot hold as is. */
export function socketUri(path: string): string {
  return `unix://${resolve(path).split('/').map(encodeURIComponent).join('/')}`;
}

/**
 * The Workload API address to call: `--socket-path` (a path or a `unix://` URI), else `SPIFFE_ENDPOINT_SOCKET`
 * (SPIFFE_Workload_Endpoint.md §4), else the agent's default socket.
 */
export function resolveWorkloadAddress(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
): string {
  if (flag !== undefined) return flag.includes('://') ? flag : socketUri(flag);
  const fromEnv = env[SPIFFE_ENDPOINT_SOCKET];
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : socketUri(DEFAULT_WORKLOAD_API_SOCKET);
}

/** A client of the Workload API at `address`; an invalid address is a one-line CLI error. */
export function openWorkloadClient(address: string): WorkloadApiClient {
  try {
    return new WorkloadApiClient({ address });
  } catch (error) {
    if (error instanceof WorkloadApiError) throw new CliError(error.message);
    throw error;
  }
}

// Errors of the local socket itself, as opposed to the agent answering that it cannot reach its server.
const LOCAL_SOCKET_ERRORS = new Set(['ENOENT', 'ECONNREFUSED', 'EACCES', 'ENOTSOCK']);

function systemErrorCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 6; current = current.cause, depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  }
  return undefined;
}

/** The one-line reason of a failed Workload API call. */
export function describeWorkloadError(error: unknown, address: string, timeoutSeconds: number): string {
  if (error instanceof Error && error.name === 'TimeoutError') {
    return `no answer from the Workload API at ${address} within ${timeoutSeconds} s`;
  }
  const code = systemErrorCode(error);
  if (code !== undefined && LOCAL_SOCKET_ERRORS.has(code)) {
    return `cannot connect to the Workload API at ${address}: ${error instanceof Error ? error.message : code}`;
  }
  return error instanceof Error ? error.message : String(error);
}
