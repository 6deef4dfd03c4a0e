import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, open, rm } from 'node:fs/promises';
import { connect as http2Connect, createServer as createHttp2Server } from 'node:http2';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, startSleepWithPid } from '../../../../test/support/relay-caller.js';
import { readStartTime } from '../attestor/workload/unix/proc.js';
import {
  type PeerCredentials,
  readPeerCredentials,
  readPeerCredentialsFromFd,
  trackPeerCredentials,
} from './peer-credentials.js';

describe('peer credentials (SO_PEERCRED)', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-peercred-'));
    await chmod(dir, 0o755);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Listens on a fresh socket and resolves with the credentials read on the first accepted connection. */
  async function credentialsOfNextPeer(path: string, connectPeer: () => void): Promise<PeerCredentials> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    await chmod(path, 0o777);
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    connectPeer();
    const [socket] = await accepted;
    try {
      return readPeerCredentials(socket);
    } finally {
      socket.destroy();
      server.close();
    }
  }

  it('reads pid, uid, gid and start time of this process, and pins it', async () => {
    const path = join(dir, 'self.sock');
    const credentials = await credentialsOfNextPeer(path, () => connect(path).on('error', () => undefined));
    expect(credentials).toMatchObject({
      pid: process.pid,
      uid: process.geteuid!(),
      gid: process.getegid!(),
      startTime: await readStartTime(process.pid),
    });
    expect(credentials.process.isAlive()).toBe(true);
    credentials.process.close();
    expect(credentials.process.isAlive()).toBe(false);
  });

  const connectScript = (path: string) =>
    `require('net').connect(${JSON.stringify(path)}).on('close', () => process.exit(0))`;

  it('reads the credentials of a child process connecting with our ids', async () => {
    const path = join(dir, 'child.sock');
    let childPid = 0;
    const credentials = await credentialsOfNextPeer(path, () => {
      childPid = spawn(process.execPath, ['-e', connectScript(path)], { stdio: 'ignore' }).pid!;
    });
    credentials.process.close();
    expect(credentials).toMatchObject({ pid: childPid, uid: process.geteuid!(), gid: process.getegid!() });
    expect(credentials.startTime).toBe(await readStartTime(childPid).catch(() => credentials.startTime));
  });

  it.skipIf(!isRoot)(
    'reads the credentials of a child connecting as another user (root only: runs it as nobody)',
    async () => {
      const path = join(dir, 'nobody.sock');
      let childPid = 0;
      const credentials = await credentialsOfNextPeer(path, () => {
        const args = ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', connectScript(path)];
        childPid = spawn('setpriv', args, { stdio: 'ignore' }).pid!;
      });
      credentials.process.close();
      // setpriv execs node in place, so the connecting process keeps the spawned pid
      expect(credentials).toMatchObject({ pid: childPid, uid: 65534, gid: 65534 });
    },
  );

  /**
   * A connection whose process connected and exited at once: its pid may be anyone's by the time the connection is
   * looked at. The server is paused, so the socket is not read and stays open after the peer's exit, as an HTTP/2
   * one not yet served does.
   */
  async function connectionOfExitedCaller(name: string): Promise<{ socket: Socket; pid: number; close(): void }> {
    const path = join(dir, name);
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    const child = spawn(
      process.execPath,
      ['-e', `require('net').connect(${JSON.stringify(path)}, () => process.exit(0))`],
      { stdio: 'ignore' },
    );
    const [[socket]] = await Promise.all([accepted, once(child, 'exit')]);
    return {
      socket,
      pid: child.pid!,
      close: () => {
        socket.destroy();
        server.close();
      },
    };
  }

  it('refuses a caller whose process exited before its connection was handled (nothing to pin)', async () => {
    const { socket, pid, close } = await connectionOfExitedCaller('gone.sock');
    try {
      expect(() => readPeerCredentials(socket)).toThrow(
        new RegExp(
          `^(pidfd: process ${pid} does not exist \\(it exited\\)|peer credentials: cannot read the start time of process ${pid}|peer credentials: process ${pid} has exited since it connected)`,
        ),
      );
    } finally {
      close();
    }
  });

  it.skipIf(!isRoot)(
    'refuses a caller whose pid another process took before the connection was handled (root only: sets ns_last_pid)',
    async () => {
      const { socket, pid, close } = await connectionOfExitedCaller('reused.sock');
      // A new process of the same ids takes the pid of the one that connected, before the agent looks at it.
      const reused = await startSleepWithPid(pid);
      try {
        expect(() => readPeerCredentials(socket)).toThrow(
          `peer credentials: process ${pid} has exited since it connected`,
        );
      } finally {
        reused.kill('SIGKILL');
        close();
      }
    },
  );

  it('hands the credentials of each HTTP/2 connection to its requests', async () => {
    const path = join(dir, 'h2.sock');
    const server = createHttp2Server();
    const credentialsOf = trackPeerCredentials(server);
    const seen: (PeerCredentials | undefined)[] = [];
    server.on('stream', (stream) => {
      seen.push(credentialsOf(stream));
      stream.respond({ ':status': 200 }, { endStream: true });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const session = http2Connect('http://localhost', { createConnection: () => connect(path) });
    for (let i = 0; i < 2; i++) {
      const request = session.request({ ':path': '/' });
      request.resume();
      await once(request, 'end');
    }
    session.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(seen).toEqual([
      expect.objectContaining({ pid: process.pid, uid: process.geteuid!() }),
      expect.objectContaining({ pid: process.pid, uid: process.geteuid!() }),
    ]);
  });

  it('refuses a descriptor that is not a socket', async () => {
    expect(() => readPeerCredentialsFromFd(-1)).toThrow('peer credentials: fd must be a descriptor, got -1');
    const file = await open(join(dir, 'plain'), 'w');
    try {
      // ENOTSOCK is 88 on Linux
      expect(() => readPeerCredentialsFromFd(file.fd)).toThrow(
        'peer credentials: getsockopt(SO_PEERCRED) failed with errno 88',
      );
    } finally {
      await file.close();
    }
  });
});
