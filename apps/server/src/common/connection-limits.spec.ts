import { once } from 'node:events';
import { createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer } from 'node:https';
import { type AddressInfo, connect as connectTcp, createServer as createTcpServer, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import { toPem } from '@sigil/pki';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../../../../test/support/test-ca.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import {
  type ConnectionLimits,
  connectionServerOptions,
  HANDSHAKE_SLOT_MS,
  MAX_CONCURRENT_HANDSHAKES,
  TlsConnectionGuard,
} from './connection-limits.js';

/** Generous limits; each test narrows the one it exercises. */
const LIMITS: ConnectionLimits = {
  maxConnections: 1000,
  maxConnectionsPerAddress: 1000,
  handshakeRatePerSecond: 1000,
  handshakeBurst: 1000,
  handshakeTimeoutMs: 30_000,
  headersTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  responseIdleTimeoutMs: 60_000,
};

/** A logger that keeps what it is given. */
class RecordingLogger {
  readonly lines: unknown[] = [];
  warn(line: unknown): void {
    this.lines.push(line);
  }
  error(line: unknown): void {
    this.lines.push(line);
  }
  log(line: unknown): void {
    this.lines.push(line);
  }
}

describe('TlsConnectionGuard on a real TLS port', () => {
  let credentials: { cert: string; key: string };
  /** A real ClientHello, caught by a plain TCP listener. */
  let clientHello: Buffer;
  let server: HttpsServer | undefined;
  const clients: Socket[] = [];

  beforeAll(async () => {
    const ca = await TestCa.create('example.org', { now: new Date() });
    const svid = await ca.createX509Svid('spiffe://example.org/sigil/server');
    credentials = { cert: svid.certificate.toString('pem'), key: toPem('PRIVATE KEY', await svid.privateKeyPkcs8()) };
    const catcher = createTcpServer();
    catcher.listen(0, '127.0.0.1');
    await once(catcher, 'listening');
    const hello = new Promise<Buffer>((resolve) => catcher.once('connection', (s: Socket) => s.once('data', resolve)));
    const probe = connectTls({ port: (catcher.address() as AddressInfo).port, host: '127.0.0.1' });
    probe.on('error', () => undefined);
    clientHello = await hello;
    probe.destroy();
    catcher.close();
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) client.destroy();
    if (server) {
      server.closeAllConnections();
      await new Promise((resolve) => server!.close(resolve));
      server = undefined;
    }
  });

  /** Starts an HTTPS server under the guard; its handler answers 200 after `answerDelayMs` once the body is read. */
  async function start(
    overrides: Partial<ConnectionLimits>,
    options: { clock?: FakeClock; answerDelayMs?: number } = {},
  ): Promise<{ port: number; guard: TlsConnectionGuard; logger: RecordingLogger }> {
    const limits = { ...LIMITS, ...overrides };
    const logger = new RecordingLogger();
    const guard = new TlsConnectionGuard(limits, options.clock ?? new FakeClock(), logger);
    server = createHttpsServer({ ...credentials, minVersion: 'TLSv1.3', ...connectionServerOptions(limits) });
    guard.attach(server);
    server.on('request', (request, response) => {
      request.resume();
      request.on('end', () => setTimeout(() => response.end('ok'), options.answerDelayMs ?? 0));
    });
    // What Fastify does for the app: answer a request timeout with 408 (Node's own answer without a listener).
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      if (socket.writable && error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
        socket.write('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n');
      }
      socket.destroy();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { port: (server.address() as AddressInfo).port, guard, logger };
  }

  /** A TLS connection from `localAddress`: resolves once the handshake is done, rejects if the server closes it. */
  function openTls(port: number, localAddress = '127.0.0.1'): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      // tls.connect's types lack localAddress, so the TCP socket is made first. Only the TLS socket is ever
      // destroyed (it closes the TCP one): destroying the TCP socket under it crashes Node 20 (SIGSEGV).
      const tcp = connectTcp({ host: '127.0.0.1', port, localAddress });
      tcp.on('error', () => undefined);
      const socket = connectTls({ socket: tcp, rejectUnauthorized: false });
      clients.push(socket);
      socket.once('secureConnect', () => resolve(socket));
      socket.once('error', reject);
    });
  }

  /** Resolves with everything the server sent once it closed the connection. */
  function closedBy(socket: Socket): Promise<string> {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(chunks).toString('latin1'))));
  }

  /** Plain TCP connections from `localAddress` that send nothing, or only a ClientHello (a stalled handshake). */
  function openSilent(port: number, count: number, localAddress: string, sendHello = false): Socket[] {
    return Array.from({ length: count }, () => {
      const socket = connectTcp({ host: '127.0.0.1', port, localAddress });
      socket.on('error', () => undefined);
      if (sendHello) socket.write(clientHello);
      clients.push(socket);
      return socket;
    });
  }

  it('runs at most MAX_CONCURRENT_HANDSHAKES handshakes at once; the rest wait unread, round robin over addresses', async () => {
    const { port, guard } = await start({});
    let mostInProgress = 0;
    const watch = setInterval(() => (mostInProgress = Math.max(mostInProgress, guard.handshakesInProgress())), 1);
    try {
      // Stalled handshakes take every slot (for HANDSHAKE_SLOT_MS), so what comes next waits.
      openSilent(port, MAX_CONCURRENT_HANDSHAKES, '127.0.0.2', true);
      while (guard.handshakesInProgress() < MAX_CONCURRENT_HANDSHAKES) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      const floodSize = 100;
      let floodDone = 0;
      const flood = Array.from({ length: floodSize }, () => openTls(port, '127.0.0.2').then(() => (floodDone += 1)));
      while (guard.waitingForHandshake() < floodSize) await new Promise((resolve) => setImmediate(resolve));
      // Another address is served next to the flood's queue, not after it.
      await openTls(port, '127.0.0.3');
      expect(floodDone).toBeLessThan(floodSize / 2);
      await Promise.all(flood);
      expect(floodDone).toBe(floodSize);
    } finally {
      clearInterval(watch);
    }
    expect(mostInProgress).toBe(MAX_CONCURRENT_HANDSHAKES);
    expect(guard.waitingForHandshake()).toBe(0);
  });

  it('closes a connection that waited for a handshake slot longer than the handshake timeout', async () => {
    // Shorter than a slot: the ones past the cap are still waiting when it runs out.
    const { port, guard, logger } = await start({ handshakeTimeoutMs: HANDSHAKE_SLOT_MS - 100 });
    const sockets = openSilent(port, 100, '127.0.0.2', true);
    await Promise.all(sockets.map((socket) => closedBy(socket)));
    expect(guard.counts().handshakeTimeouts).toBe(100);
    expect(JSON.stringify(logger.lines)).toContain(`TLS handshake not started within ${HANDSHAKE_SLOT_MS - 100} ms`);
    expect(guard.waitingForHandshake()).toBe(0);
  });

  it('gives no handshake slot to a connection before its ClientHello: idle connections hold up nobody', async () => {
    const { port, guard, logger } = await start({ handshakeTimeoutMs: 2000 });
    const idle = openSilent(port, 300, '127.0.0.2');
    while (guard.openConnections('127.0.0.2') < 300) await new Promise((resolve) => setImmediate(resolve));
    expect(guard.handshakesInProgress()).toBe(0);
    expect(guard.waitingForHandshake()).toBe(0);
    await openTls(port, '127.0.0.3');
    expect(idle.every((socket) => !socket.destroyed)).toBe(true);
    await Promise.all(idle.map((socket) => closedBy(socket)));
    expect(JSON.stringify(logger.lines)).toContain('TLS ClientHello not received within 2000 ms');
  });

  it('serves waiting connections of addresses that finished a handshake before those of the others', async () => {
    const { port, guard } = await start({});
    // 127.0.0.3 has finished a handshake (the server's side of it too): it is known.
    const secured = once(server!, 'secureConnection');
    const first = await openTls(port, '127.0.0.3');
    await secured;
    first.destroy();
    // Stalled ClientHellos take every slot, and more from 40 other addresses wait.
    openSilent(port, MAX_CONCURRENT_HANDSHAKES, '127.0.0.2', true);
    while (guard.handshakesInProgress() < MAX_CONCURRENT_HANDSHAKES) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const strangers = 100;
    for (let i = 0; i < strangers; i += 1) openSilent(port, 1, `127.0.1.${i + 1}`, true);
    while (guard.waitingForHandshake() < strangers - MAX_CONCURRENT_HANDSHAKES) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    const waitingBefore = guard.waitingForHandshake();
    await openTls(port, '127.0.0.3');
    // Started in the next round of free slots, ahead of the strangers (round robin alone would put it last).
    expect(guard.waitingForHandshake()).toBeGreaterThan(waitingBefore - 3 * MAX_CONCURRENT_HANDSHAKES);
  });

  it('frees the slot of a stalled handshake after HANDSHAKE_SLOT_MS: stalled clients do not hold up the queue', async () => {
    const { port, guard } = await start({});
    const stalled = openSilent(port, MAX_CONCURRENT_HANDSHAKES, '127.0.0.2', true);
    while (guard.handshakesInProgress() < MAX_CONCURRENT_HANDSHAKES) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    await openTls(port, '127.0.0.3');
    // The stalled ones are still open: only their slots were given back.
    expect(stalled.every((socket) => !socket.destroyed)).toBe(true);
  });

  it('closes a TCP connection that never starts its TLS handshake', async () => {
    const { port, guard } = await start({ handshakeTimeoutMs: 200 });
    const socket = connectTcp({ host: '127.0.0.1', port });
    clients.push(socket);
    await closedBy(socket);
    expect(guard.counts().handshakeTimeouts).toBe(1);
  });

  it('closes a connection that trickles its ClientHello, at the handshake timeout however often bytes arrive', async () => {
    const { port, guard } = await start({ handshakeTimeoutMs: 300 });
    const socket = connectTcp({ host: '127.0.0.1', port });
    clients.push(socket);
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < clientHello.length - 1 && socket.writable) socket.write(clientHello.subarray(sent, ++sent));
    }, 20);
    await closedBy(socket);
    clearInterval(trickle);
    expect(sent).toBeLessThan(clientHello.length - 1);
    expect(guard.counts().handshakeTimeouts).toBe(1);
  });

  it('closes a connection that finishes its handshake and then sends nothing, after the idle timeout', async () => {
    const { port } = await start({ idleTimeoutMs: 200 });
    const socket = await openTls(port);
    expect(await closedBy(socket)).toBe('');
  });

  it('answers 408 and closes a connection whose headers trickle in', async () => {
    const { port, guard } = await start({ headersTimeoutMs: 300, requestTimeoutMs: 300 });
    const socket = await openTls(port);
    const request = 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ';
    let sent = 0;
    const trickle = setInterval(() => socket.writable && socket.write(request[sent++] ?? 'a'), 20);
    const answer = await closedBy(socket);
    clearInterval(trickle);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(guard.counts().requestTimeouts).toBe(1);
  });

  it('answers 408 and closes a connection whose body trickles in', async () => {
    const { port, guard } = await start({ headersTimeoutMs: 300, requestTimeoutMs: 400 });
    const socket = await openTls(port);
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
    const trickle = setInterval(() => socket.writable && socket.write('a'), 20);
    const answer = await closedBy(socket);
    clearInterval(trickle);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    expect(guard.counts().requestTimeouts).toBe(1);
  });

  it('does not cut a request fully received whose answer takes longer than every request timeout (a long-poll)', async () => {
    const { port, guard } = await start(
      { headersTimeoutMs: 200, requestTimeoutMs: 200, idleTimeoutMs: 200, responseIdleTimeoutMs: 5_000 },
      { answerDelayMs: 1_000 },
    );
    const status = await new Promise<number>((resolve, reject) => {
      const request = httpsRequest(
        { host: '127.0.0.1', port, path: '/', agent: false, rejectUnauthorized: false },
        (response) => {
          response.resume();
          response.on('end', () => resolve(response.statusCode ?? 0));
        },
      );
      request.on('error', reject);
      request.end();
    });
    expect(status).toBe(200);
    expect(guard.counts().requestTimeouts).toBe(0);
  });

  it('refuses the connection over the per-address cap before its handshake; another address is unaffected', async () => {
    const { port, guard } = await start({ maxConnectionsPerAddress: 3 });
    const held = await Promise.all([openTls(port), openTls(port), openTls(port)]);
    await expect(openTls(port)).rejects.toThrow(/before secure TLS connection was established|ECONNRESET/);
    expect(guard.counts().refused.connections_per_address).toBe(1);
    expect(guard.openConnections('127.0.0.1')).toBe(3);

    const other = await openTls(port, '127.0.0.2');
    expect(other.authorized === false && other.encrypted).toBe(true);
    expect(guard.openConnections('127.0.0.2')).toBe(1);

    // A slot frees when a connection closes.
    const closed = once(held[0]!, 'close');
    held[0]!.destroy();
    await closed;
    await expect.poll(() => guard.openConnections('127.0.0.1')).toBe(2);
    await openTls(port);
    expect(guard.counts().refused.connections_per_address).toBe(1);
  });

  it('refuses connections over maxConnections whatever their address', async () => {
    const { port, guard } = await start({ maxConnections: 4 });
    await Promise.all([openTls(port), openTls(port), openTls(port, '127.0.0.2'), openTls(port, '127.0.0.2')]);
    await expect(openTls(port, '127.0.0.3')).rejects.toThrow();
    expect(guard.counts().refused.max_connections).toBe(1);
  });

  it('refuses new connections from an address over its handshake rate until its bucket refills', async () => {
    const clock = new FakeClock();
    const { port, guard } = await start({ handshakeRatePerSecond: 1, handshakeBurst: 3 }, { clock });
    for (let i = 0; i < 3; i += 1) (await openTls(port)).destroy();
    await expect(openTls(port)).rejects.toThrow();
    expect(guard.counts().refused.handshake_rate).toBe(1);
    // Another address has its own bucket.
    (await openTls(port, '127.0.0.2')).destroy();
    clock.advance(1_000);
    (await openTls(port)).destroy();
    await expect(openTls(port)).rejects.toThrow();
    expect(guard.counts().refused.handshake_rate).toBe(2);
  });

  it('logs refusals through a rate-limited log, not one line per refused connection, and builds no TLS for them', async () => {
    const { port, guard, logger } = await start({ maxConnectionsPerAddress: 1 });
    // A refused socket never reaches the TLS layer, so it cannot fail there either.
    let tlsErrors = 0;
    server!.on('tlsClientError', () => (tlsErrors += 1));
    await openTls(port);
    const refusals = 40;
    const results = await Promise.allSettled(Array.from({ length: refusals }, () => openTls(port)));
    expect(results.every((result) => result.status === 'rejected')).toBe(true);
    expect(guard.counts().refused.connections_per_address).toBe(refusals);
    expect(logger.lines.length).toBeLessThanOrEqual(10);
    expect(tlsErrors).toBe(0);
    expect(logger.lines[0]).toMatchObject({
      reason: 'connections_per_address',
      address: '127.0.0.1',
      msg: expect.stringContaining('max_connections_per_address') as unknown,
    });
  });

  it('answers a request that arrives while the answer before it is still being sent (Node would destroy it: HPE_PAUSED)', async () => {
    // The first answer (4 MB) cannot all be sent while this client reads nothing, so the server still holds part of
    // it when the second request (headers and a 200 KB body, many TLS records) arrives on the same connection.
    const { port } = await start({});
    server!.removeAllListeners('request');
    server!.on('request', (request, response) => {
      request.resume();
      request.on('end', () => response.end(Buffer.alloc(4_000_000, 'a')));
    });
    const parseErrors: string[] = [];
    server!.prependListener('clientError', (error: NodeJS.ErrnoException) => parseErrors.push(String(error.code)));
    const body = Buffer.alloc(200_000, 'b');
    const post = (path: string) =>
      Buffer.concat([
        Buffer.from(`POST ${path} HTTP/1.1\r\nHost: sigil\r\nContent-Length: ${body.length}\r\n\r\n`),
        body,
      ]);
    const socket = await openTls(port);
    const closed = closedBy(socket);
    let received = 0;
    const bothAnswered = new Promise<void>((resolve) => {
      let secondSent = false;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (!secondSent) {
          // The first answer has started: stop reading, send the second request, read again a little later.
          secondSent = true;
          socket.pause();
          setTimeout(() => {
            socket.write(post('/second'));
            setTimeout(() => socket.resume(), 200);
          }, 200);
        }
        if (received >= 8_000_000) resolve();
      });
    });
    socket.write(post('/first'));
    await Promise.race([bothAnswered, closed]);
    expect(parseErrors).toEqual([]);
    expect(received).toBeGreaterThanOrEqual(8_000_000);
    socket.destroy();
    await closed;
  });
});
