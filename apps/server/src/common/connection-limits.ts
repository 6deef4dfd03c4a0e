import { type Server as HttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https';
import { type IncomingMessage } from 'node:http';
import { type Socket } from 'node:net';
import { type LoggerService } from '@nestjs/common';
import { RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { addressKey } from './address-key.js';
import { type Clock } from './clock.js';

/**
 * The TLS port's connection policy (issue 16, finding 7): how many connections the server holds, per remote address
 * and in total, how fast one address may open new ones (each costs a TLS handshake), and how long a connection may
 * take for each step before it is closed. Counting happens at TCP accept, before the TLS handshake, so a refused
 * connection costs no handshake; a refused caller just sees its connection closed (nothing can be said to it without
 * the handshake it is being refused). Refusals and timeouts are logged through {@link RateLimitedLog}.
 */
export interface ConnectionLimits {
  /** Open connections on the port in total (Node's `server.maxConnections`); further ones are closed at accept. */
  readonly maxConnections: number;
  /** Open connections from one remote address (an IPv6 address counts by its /64). */
  readonly maxConnectionsPerAddress: number;
  /** New connections (TLS handshakes) one address may open per second, after its burst. */
  readonly handshakeRatePerSecond: number;
  /** New connections one address may open at once after a quiet spell. */
  readonly handshakeBurst: number;
  /** From TCP accept to the end of the TLS handshake, however the client trickles its bytes. */
  readonly handshakeTimeoutMs: number;
  /** From a request's first byte to the end of its headers. */
  readonly headersTimeoutMs: number;
  /** From a request's first byte to the end of its body; the answer (a long-poll's wait) is not counted. */
  readonly requestTimeoutMs: number;
  /** A connection with no request in flight: after the handshake before the first request, between keep-alive ones. */
  readonly idleTimeoutMs: number;
  /**
   * A connection silent in both directions while a request is being answered (a long-poll waiting, a client that
   * stops reading the answer). Must exceed the longest long-poll.
   */
  readonly responseIdleTimeoutMs: number;
}

/**
 * TLS handshakes in progress at once; a connection takes a slot once its ClientHello record has arrived (one that
 * sends nothing costs nothing and holds nothing), and those past the cap wait, paused, in a queue served round robin
 * over remote addresses. Node accepts one connection per turn of its event loop, but a handshake's steps (the
 * ClientHello: key exchange and signature; the client's certificate and Finished: chain verification) are processed
 * whenever the client's bytes arrive, all of them in one turn: a flood's 1,000 connections completed up to 159
 * handshakes in a single turn of 311 ms (`bench/dos/agent-db`), and every request already on the port waited for it.
 * With at most this many in progress, a turn does at most about twice as many steps (~1 ms of CPU each).
 */
export const MAX_CONCURRENT_HANDSHAKES = 16;

/**
 * A handshake in progress stops counting toward {@link MAX_CONCURRENT_HANDSHAKES} after this long (it goes on until
 * the handshake timeout): a client that sends its ClientHello and then stalls holds a slot at most this long, and a
 * handshake of a client far away goes on uncounted. When every client is slow the cap still starts
 * {@link MAX_CONCURRENT_HANDSHAKES} handshakes per this time (64 a second), more as they finish.
 */
export const HANDSHAKE_SLOT_MS = 250;

/**
 * Addresses that finished a TLS handshake within the last hour are served first when connections wait for a slot
 * (round robin among them, then among the others): a flood of ClientHellos that stall, from however many addresses
 * that never finished one, does not delay the agents and operators already talking to the server (review R7: 700
 * such addresses held legitimate handshakes for 9 s). At most this many addresses are remembered (the oldest go).
 */
export const KNOWN_ADDRESSES_MAX = 10_000;
const KNOWN_ADDRESS_MS = 3_600_000;

/** Where an admitted connection is before its handshake starts. */
type HandshakePhase = 'client_hello' | 'waiting';

/**
 * An admitted connection until its handshake starts: the timer that closes it at accept + handshake timeout. Once
 * started, the TLS layer's own handshake timeout applies (a connection that waited for a slot may thus take up to
 * twice the timeout in all; it is never closed from under the TLS layer, which Node does not survive).
 */
interface Deadline {
  readonly timer: NodeJS.Timeout;
  phase: HandshakePhase;
}

/** A TLS record header: content type (22, handshake), version, 16-bit length. */
const TLS_RECORD_HEADER_BYTES = 5;
const TLS_HANDSHAKE_RECORD = 22;
/** The largest TLS record (RFC 8446 §5.2: 2^14 plus expansion); a longer claim is handed to TLS to refuse. */
const TLS_MAX_RECORD_BYTES = TLS_RECORD_HEADER_BYTES + 16_384 + 256;

/** Why a connection was closed at accept. */
export type ConnectionRefusal = 'max_connections' | 'connections_per_address' | 'handshake_rate';

/** What the guard has refused or timed out since it started (for tests, benches and metrics). */
export interface ConnectionCounts {
  readonly refused: Readonly<Record<ConnectionRefusal, number>>;
  /** TLS handshakes cut by {@link ConnectionLimits.handshakeTimeoutMs}. */
  readonly handshakeTimeouts: number;
  /** Requests cut by the headers or request timeout (answered 408). */
  readonly requestTimeouts: number;
}

/**
 * Options of `https.createServer` that the policy sets (Node's defaults are a 120 s handshake, 60 s headers and
 * 300 s request timeouts, checked every 30 s). Node measures the headers and request timeouts from a request's first
 * byte to its end; a request fully received is never cut by them, so a long-poll's wait is not either.
 */
export function connectionServerOptions(
  limits: ConnectionLimits,
): Pick<HttpsServerOptions, 'handshakeTimeout' | 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'> {
  return {
    handshakeTimeout: limits.handshakeTimeoutMs,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // How often Node looks for expired headers/requests: a timeout is late by up to this much.
    connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(limits.headersTimeoutMs / 4))),
  };
}

/**
 * Enforces {@link ConnectionLimits} on an HTTPS server created with {@link connectionServerOptions}: the total and
 * per-address caps and the per-address handshake rate at TCP accept, and the idle timeouts on each connection.
 */
export class TlsConnectionGuard {
  private readonly open = new Map<string, number>();
  private readonly handshakes: TokenBucketRateLimiter;
  private readonly log: RateLimitedLog;
  private readonly refused: Record<ConnectionRefusal, number> = {
    max_connections: 0,
    connections_per_address: 0,
    handshake_rate: 0,
  };
  private handshakeTimeouts = 0;
  private requestTimeouts = 0;
  /** Connections whose handshake is in progress and counted (raw sockets), with the timer that stops counting it. */
  private readonly handshaking = new Map<Socket, NodeJS.Timeout>();
  /**
   * Admitted connections waiting for a handshake slot, per address key, served round robin: those of known addresses
   * ({@link KNOWN_ADDRESSES_MAX}) first.
   */
  private readonly waitingKnown = new Map<string, Socket[]>();
  private readonly waiting = new Map<string, Socket[]>();
  /** Address keys that finished a handshake, with when (`performance.now()`), oldest first. */
  private readonly knownAddresses = new Map<string, number>();
  /** Every admitted connection until its handshake starts (Node's own timeout starts only with the TLS layer). */
  private readonly deadlines = new Map<Socket, Deadline>();
  private drainScheduled: NodeJS.Immediate | undefined;
  private server: HttpsServer | undefined;
  private tlsListeners: ((socket: Socket) => void)[] = [];

  constructor(
    private readonly limits: ConnectionLimits,
    clock: Clock,
    logger: Pick<LoggerService, 'warn' | 'error' | 'log'>,
  ) {
    if (limits.responseIdleTimeoutMs <= 0 || limits.idleTimeoutMs <= 0) {
      throw new RangeError('connection limits: idle timeouts must be positive');
    }
    this.handshakes = new TokenBucketRateLimiter(
      { ratePerSecond: limits.handshakeRatePerSecond, burst: limits.handshakeBurst },
      clock,
    );
    this.log = new RateLimitedLog(logger);
  }

  /**
   * Installs the policy on `server`: call right after creating it, before it listens and before anything else
   * listens for its connections.
   */
  attach(server: HttpsServer): void {
    server.maxConnections = this.limits.maxConnections;
    // Node closes a connection over maxConnections itself, before 'connection', and reports it as 'drop'.
    server.on('drop', (data?: { remoteAddress?: string }) => this.refuse('max_connections', data?.remoteAddress));
    // The TLS server wraps each accepted socket in TLS from its own 'connection' listener. It is taken out and called
    // only for admitted sockets, so a refused connection gets no TLS state at all: destroying it ahead of that
    // listener instead still built a TLS socket on it, about 2.5 times the CPU per refusal.
    this.server = server;
    this.tlsListeners = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      const key = this.admit(socket);
      if (key !== undefined) this.awaitClientHello(socket, key);
    });
    // A handshake's end, however it ends, frees its slot (the TLS socket's `_parent` is the accepted TCP socket).
    const parentOf = (tlsSocket: Socket): Socket | undefined => (tlsSocket as Socket & { _parent?: Socket })._parent;
    server.on('secureConnection', (tlsSocket: Socket) => {
      this.handshakeEnded(parentOf(tlsSocket));
      if (tlsSocket.remoteAddress !== undefined) this.remember(addressKey(tlsSocket.remoteAddress));
    });
    server.on('tlsClientError', (_error: Error, tlsSocket: Socket) => this.handshakeEnded(parentOf(tlsSocket)));
    // Node's http layer sets `server.timeout` on each connection once its handshake is done (and again for each
    // keep-alive request); until the first request arrives, the shorter idle timeout applies instead.
    server.timeout = this.limits.responseIdleTimeoutMs;
    server.keepAliveTimeout = this.limits.idleTimeoutMs;
    server.on('secureConnection', (socket: Socket) => {
      socket.setTimeout(this.limits.idleTimeoutMs);
      readThroughStream(socket);
    });
    server.on('request', (request: IncomingMessage) => request.socket.setTimeout(this.limits.responseIdleTimeoutMs));
    server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      if (error.code !== 'ERR_TLS_HANDSHAKE_TIMEOUT') return;
      this.handshakeTimeouts += 1;
      this.log.warn('tls-handshake-timeout', {
        msg: `TLS handshake not finished within ${this.limits.handshakeTimeoutMs} ms: connection closed`,
        address: socket.remoteAddress === undefined ? undefined : addressKey(socket.remoteAddress),
      });
    });
    // Fastify answers these (408) and closes the connection; this only counts them.
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      if (error.code !== 'ERR_HTTP_REQUEST_TIMEOUT') return;
      this.requestTimeouts += 1;
      this.log.warn('http-request-timeout', {
        msg:
          `request headers not received within ${this.limits.headersTimeoutMs} ms or request within ` +
          `${this.limits.requestTimeoutMs} ms: answered 408 and closed`,
        address: socket.remoteAddress === undefined ? undefined : addressKey(socket.remoteAddress),
      });
    });
    server.once('close', () => {
      this.log.close();
      if (this.drainScheduled !== undefined) clearImmediate(this.drainScheduled);
      for (const timer of this.handshaking.values()) clearTimeout(timer);
      this.handshaking.clear();
      for (const tier of [this.waitingKnown, this.waiting]) {
        for (const queue of tier.values()) for (const socket of queue) socket.destroy();
        tier.clear();
      }
      for (const socket of [...this.deadlines.keys()]) this.clearDeadline(socket);
    });
  }

  /** Connections admitted and still waiting for a handshake slot ({@link MAX_CONCURRENT_HANDSHAKES}). */
  waitingForHandshake(): number {
    let count = 0;
    for (const tier of [this.waitingKnown, this.waiting]) for (const queue of tier.values()) count += queue.length;
    return count;
  }

  /** Handshakes in progress and counted toward {@link MAX_CONCURRENT_HANDSHAKES}. */
  handshakesInProgress(): number {
    return this.handshaking.size;
  }

  /** Open connections counted under an address key (see {@link addressKey}). */
  openConnections(key: string): number {
    return this.open.get(key) ?? 0;
  }

  counts(): ConnectionCounts {
    return {
      refused: { ...this.refused },
      handshakeTimeouts: this.handshakeTimeouts,
      requestTimeouts: this.requestTimeouts,
    };
  }

  /**
   * Reads the connection's first TLS record (the ClientHello) before it may take a handshake slot: a connection that
   * sends nothing, or trickles its hello, costs no TLS work and holds no slot; it is closed at the handshake timeout.
   * The record is put back, and the TLS layer reads it when the socket is handed over.
   */
  private awaitClientHello(socket: Socket, key: string): void {
    const deadline: Deadline = {
      timer: setTimeout(() => this.handshakeTooLate(socket, key), this.limits.handshakeTimeoutMs),
      phase: 'client_hello',
    };
    deadline.timer.unref();
    this.deadlines.set(socket, deadline);
    // Until the TLS layer takes it over, errors of the raw socket (a reset) are ours to take: it is closed.
    socket.on('error', () => socket.destroy());
    socket.once('close', () => this.clearDeadline(socket));
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size < TLS_RECORD_HEADER_BYTES) return;
      const head = chunks.length === 1 ? chunk : Buffer.concat(chunks);
      const complete =
        head[0] !== TLS_HANDSHAKE_RECORD ||
        size >= TLS_RECORD_HEADER_BYTES + head.readUInt16BE(3) ||
        size >= TLS_MAX_RECORD_BYTES;
      if (!complete) return;
      socket.removeListener('data', onData);
      socket.pause();
      socket.unshift(chunks.length === 1 ? chunk : Buffer.concat(chunks));
      deadline.phase = 'waiting';
      this.handshakeOrWait(socket, key);
    };
    socket.on('data', onData);
  }

  /** Starts the TLS handshake of `socket` if a slot is free and nobody waits, else queues it, paused. */
  private handshakeOrWait(socket: Socket, key: string): void {
    if (this.handshaking.size < MAX_CONCURRENT_HANDSHAKES && !this.anyWaiting()) {
      this.startHandshake(socket);
      return;
    }
    const seen = this.knownAddresses.get(key);
    const tier = seen !== undefined && performance.now() - seen < KNOWN_ADDRESS_MS ? this.waitingKnown : this.waiting;
    const queue = tier.get(key);
    if (queue === undefined) tier.set(key, [socket]);
    else queue.push(socket);
  }

  private anyWaiting(): boolean {
    return this.waitingKnown.size > 0 || this.waiting.size > 0;
  }

  /** Notes that `key` finished a handshake (see {@link KNOWN_ADDRESSES_MAX}). */
  private remember(key: string): void {
    this.knownAddresses.delete(key);
    this.knownAddresses.set(key, performance.now());
    if (this.knownAddresses.size > KNOWN_ADDRESSES_MAX) {
      this.knownAddresses.delete(this.knownAddresses.keys().next().value as string);
    }
  }

  /** The handshake timeout, counted from accept, ran out: the connection is closed, saying where it was. */
  private handshakeTooLate(socket: Socket, key: string): void {
    const phase = this.deadlines.get(socket)?.phase;
    this.handshakeTimeouts += 1;
    const within = `within ${this.limits.handshakeTimeoutMs} ms`;
    this.log.warn(phase === 'client_hello' ? 'tls-client-hello-timeout' : 'tls-handshake-queue-timeout', {
      msg:
        phase === 'client_hello'
          ? `TLS ClientHello not received ${within}: connection closed`
          : `TLS handshake not started ${within} (the server was busy with ${MAX_CONCURRENT_HANDSHAKES} others): ` +
            'connection closed',
      address: key,
    });
    socket.destroy();
  }

  private clearDeadline(socket: Socket): void {
    const deadline = this.deadlines.get(socket);
    if (deadline === undefined) return;
    clearTimeout(deadline.timer);
    this.deadlines.delete(socket);
  }

  private startHandshake(socket: Socket): void {
    this.clearDeadline(socket);
    const slot = setTimeout(() => this.handshakeEnded(socket), HANDSHAKE_SLOT_MS);
    slot.unref();
    this.handshaking.set(socket, slot);
    socket.once('close', () => this.handshakeEnded(socket));
    for (const listener of this.tlsListeners) listener.call(this.server, socket);
  }

  /** Frees the slot of `socket` (if it holds one) and, after this turn's I/O, gives free slots to waiting connections. */
  private handshakeEnded(socket: Socket | undefined): void {
    if (socket === undefined) return;
    const slot = this.handshaking.get(socket);
    if (slot === undefined) return;
    clearTimeout(slot);
    this.handshaking.delete(socket);
    if (!this.anyWaiting() || this.drainScheduled !== undefined) return;
    this.drainScheduled = setImmediate(() => {
      this.drainScheduled = undefined;
      while (this.handshaking.size < MAX_CONCURRENT_HANDSHAKES && this.anyWaiting()) {
        const tier = this.waitingKnown.size > 0 ? this.waitingKnown : this.waiting;
        const [key, queue] = tier.entries().next().value as [string, Socket[]];
        const next = queue.shift()!;
        // The address goes to the back of its round.
        tier.delete(key);
        if (queue.length > 0) tier.set(key, queue);
        // Paused: the TLS layer takes the socket over and reads it itself.
        if (!next.destroyed) this.startHandshake(next);
      }
    });
  }

  /** Counts `socket` in and returns its address key, or destroys it: undefined when refused. */
  private admit(socket: Socket): string | undefined {
    // No address: the peer is already gone.
    if (socket.remoteAddress === undefined) {
      socket.destroy();
      return undefined;
    }
    const key = addressKey(socket.remoteAddress);
    const open = this.open.get(key) ?? 0;
    if (open >= this.limits.maxConnectionsPerAddress) {
      this.refuse('connections_per_address', socket.remoteAddress);
      socket.destroy();
      return undefined;
    }
    if (!this.handshakes.tryTake(key)) {
      this.refuse('handshake_rate', socket.remoteAddress);
      socket.destroy();
      return undefined;
    }
    this.open.set(key, open + 1);
    socket.once('close', () => {
      const left = (this.open.get(key) ?? 1) - 1;
      if (left > 0) this.open.set(key, left);
      else this.open.delete(key);
    });
    return key;
  }

  private refuse(reason: ConnectionRefusal, remoteAddress: string | undefined): void {
    const address = remoteAddress === undefined ? undefined : addressKey(remoteAddress);
    this.refused[reason] += 1;
    const limit = {
      max_connections: `the server's limit of ${this.limits.maxConnections} open connections (max_connections)`,
      connections_per_address:
        `the limit of ${this.limits.maxConnectionsPerAddress} open connections per address ` +
        '(max_connections_per_address)',
      handshake_rate:
        `the limit of ${this.limits.handshakeRatePerSecond} new connections per second per address, burst ` +
        `${this.limits.handshakeBurst} (tls_handshake_rate, tls_handshake_burst)`,
    }[reason];
    this.log.warn(`tls-refused:${reason}`, {
      msg: `connection refused at accept: over ${limit}; the client should retry later with backoff`,
      reason,
      address,
    });
  }
}

/**
 * Makes Node's HTTP server read `socket` through its stream instead of feeding the TLS layer's output straight into
 * the HTTP parser, so that a kept-alive connection is never destroyed by Node's own pause (Node 20).
 *
 * The HTTP server stops reading a connection when a request arrives while the answer before it is still waiting to
 * be sent (its write buffer over the high-water mark: every answer over 16 KiB, until the next tick at least), and
 * pauses its parser. Fed straight from the TLS layer, the parser still gets the rest of the TLS records already
 * decrypted; parsing them while paused fails with `HPE_PAUSED`, which Node handles as a parse error: it destroys the
 * connection, and the agent's request in flight ends in "socket hang up". An agent's next request can arrive in that
 * window whenever the answer's last bytes and the next request are read in one turn of the event loop (the signing
 * queue made it happen on every run of `bench:signing-server`). A `data` listener is the documented way to take the
 * socket back from the parser (Node then unconsumes it); paused, the stream keeps what arrives until the answer has
 * drained, and the request is then parsed and answered as usual.
 */
export function readThroughStream(socket: Socket): void {
  socket.on('data', keepReading);
}

function keepReading(): void {
  // The HTTP server's own `data` listener parses; this one only keeps the socket on the stream path.
}
