import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { UnsafeSocketDirectoryError, prepareSocketDirectory } from '@sigil/runtime';
import { AppError } from '../common/errors.js';
import { type AdminSocketConnections } from './admin-socket-connections.js';

/**
 * Creates the admin socket's directory 0700 (whoever can reach the socket is an administrator; SPIRE keeps its
 * admin socket in a `private/` directory too), refusing to start when anyone but root or this process's uid could
 * change it or a directory above it.
 */
async function prepareDirectory(socketPath: string): Promise<void> {
  try {
    await prepareSocketDirectory(socketPath, { directoryMode: 0o700 });
  } catch (error) {
    if (error instanceof UnsafeSocketDirectoryError) throw new AppError('failed_precondition', error.message);
    throw error;
  }
}

/** Removes a socket file left by a server that died; refuses when a live server answers on it, or it is no socket. */
async function removeStaleSocket(path: string): Promise<void> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!info) return;
  if (!info.isSocket())
    throw new AppError('failed_precondition', `admin socket path ${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live)
    throw new AppError('failed_precondition', `admin socket ${path} is in use: is another sigil-server running?`);
  await unlink(path);
}

/**
 * Serves `handler` (the same Fastify routing as the TCP port) on the local admin Unix socket, recording each
 * accepted connection so the auth guard trusts requests that arrive on it.
 */
export async function listenOnAdminSocket(
  path: string,
  handler: (request: IncomingMessage, response: ServerResponse) => void,
  connections: AdminSocketConnections,
): Promise<Server> {
  // The checked path and the bound one must be the same: `a/link/../b` resolves lexically, not through the link.
  path = resolve(path);
  await prepareDirectory(path);
  await removeStaleSocket(path);
  const server = createServer(handler);
  server.on('connection', (socket) => connections.add(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Belt and braces: the directory is already 0700.
  await chmod(path, 0o600);
  return server;
}

/** Stops accepting, lets in-flight requests finish, and removes the socket file. */
export async function closeAdminSocket(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  await closed;
}
