import { chmod, chown, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError } from '../common/errors.js';
import { AdminSocketConnections } from './admin-socket-connections.js';
import { closeAdminSocket, listenOnAdminSocket } from './admin-socket.js';

const isRoot = process.geteuid?.() === 0;

function get(socketPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path: '/' }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    })
      .once('error', reject)
      .end();
  });
}

describe('listenOnAdminSocket', () => {
  let scratch: string;
  const connections = new AdminSocketConnections();
  const handler = (_: unknown, response: { end(): void }): void => response.end();

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-admin-socket-'));
  });
  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('creates private/ 0700 and a 0600 socket that answers', async () => {
    const path = join(scratch, 'sigil-server/private/api.sock');
    const server = await listenOnAdminSocket(path, handler, connections);
    try {
      expect((await stat(join(scratch, 'sigil-server/private'))).mode & 0o777).toBe(0o700);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(await get(path)).toBe(200);
    } finally {
      await closeAdminSocket(server);
    }
  });

  it('refuses to start under a directory others can write to, naming it', async () => {
    await mkdir(join(scratch, 'sigil-server'), { mode: 0o755 });
    await chmod(join(scratch, 'sigil-server'), 0o777);
    const error = await listenOnAdminSocket(join(scratch, 'sigil-server/private/api.sock'), handler, connections).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AppError);
    expect(error).toMatchObject({
      kind: 'failed_precondition',
      message: expect.stringContaining(
        `unsafe socket directory: ${join(scratch, 'sigil-server')} is writable by group or others (owner uid ${process.geteuid!()}, mode 0777)`,
      ),
    });
  });

  it.skipIf(!isRoot)(
    'refuses a root-owned private/ in a directory another user owns, who could swap it (root only: gives a directory to another user)',
    async () => {
      await mkdir(join(scratch, 'sigil-server/private'), { recursive: true, mode: 0o700 });
      await chown(join(scratch, 'sigil-server'), 65534, 65534);
      await chmod(join(scratch, 'sigil-server'), 0o755);
      await expect(
        listenOnAdminSocket(join(scratch, 'sigil-server/private/api.sock'), handler, connections),
      ).rejects.toThrow(
        `unsafe socket directory: ${join(scratch, 'sigil-server')} is owned by another user (owner uid 65534, mode 0755)`,
      );
    },
  );
});
