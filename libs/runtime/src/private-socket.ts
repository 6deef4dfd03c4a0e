import { chmod, lstat, unlink } from 'node:fs/promises';
import { type Server } from 'node:http';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { prepareSocketDirectory } from './socket-directory.js';

/** A path where a private socket cannot be bound: it holds something else, or a live process serves it. */
export class PrivateSocketError extends Error {
  override readonly name = 'PrivateSocketError';
  readonly code = 'ERR_PRIVATE_SOCKET';
}

/** Removes a socket file left by a process that died; refuses when a live process answers on it, or it is no socket. */
async function removeStaleSocket(path: string, label: string, service: string): Promise<void> {
  const info = await lstat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!info) return;
  if (!info.isSocket()) throw new PrivateSocketError(`${label} path ${path} exists and is not a socket`);
  const live = await new Promise<boolean>((done) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      done(true);
    });
    probe.once('error', () => done(false));
  });
  if (live) throw new PrivateSocketError(`${label} ${path} is in use: is another ${service} running?`);
  await unlink(path);
}

/**
 * Makes `server` listen on an administrator's Unix socket (the server's and the agent's admin sockets): the socket's
 * directory is created 0700 (whoever reaches the socket is an administrator; SPIRE keeps its admin sockets in a
 * `private/` directory too), the start is refused when anyone but root or this process's uid could change it or a
 * directory above it ({@link prepareSocketDirectory}), a stale socket is replaced, a live one refused, and the
 * socket itself is 0600. Returns the resolved path it listens on.
 *
 * @param label what the socket is called in errors (`admin socket`)
 * @param service who else might be serving it (`sigil-server`)
 * @throws UnsafeSocketDirectoryError, PrivateSocketError
 */
export async function listenOnPrivateSocket(
  server: Server,
  path: string,
  label: string,
  service: string,
): Promise<string> {
  // The checked path and the bound one must be the same: `a/link/../b` resolves lexically, not through the link.
  const resolved = resolve(path);
  await prepareSocketDirectory(resolved, { directoryMode: 0o700 });
  await removeStaleSocket(resolved, label, service);
  await new Promise<void>((done, reject) => {
    server.once('error', reject);
    server.listen(resolved, () => {
      server.off('error', reject);
      done();
    });
  });
  // Belt and braces: the directory is already 0700.
  await chmod(resolved, 0o600);
  return resolved;
}
