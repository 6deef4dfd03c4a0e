import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { PrivateSocketError, UnsafeSocketDirectoryError, listenOnPrivateSocket } from '@sigil/runtime';
import { AppError } from '../common/errors.js';
import { type AdminSocketConnections } from './admin-socket-connections.js';

/**
 * Serves `handler` (the same Fastify routing as the TCP port) on the local admin Unix socket (a private socket: its
 * directory 0700 and safe, see `listenOnPrivateSocket`), recording each accepted connection so the auth guard trusts
 * requests that arrive on it.
 */
export async function listenOnAdminSocket(
  path: string,
  handler: (request: IncomingMessage, response: ServerResponse) => void,
  connections: AdminSocketConnections,
): Promise<Server> {
  const server = createServer(handler);
  server.on('connection', (socket) => connections.add(socket));
  try {
    await listenOnPrivateSocket(server, path, 'admin socket', 'sigil-server');
  } catch (error) {
    if (error instanceof UnsafeSocketDirectoryError || error instanceof PrivateSocketError) {
      throw new AppError('failed_precondition', error.message);
    }
    throw error;
  }
  return server;
}

/** Stops accepting, lets in-flight requests finish, and removes the socket file. */
export async function closeAdminSocket(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  await closed;
}
