import { type Socket } from 'node:net';
import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { type FastifyReply, type FastifyRequest, type HookHandlerDoneFunction } from 'fastify';
import { CLOCK, type Clock } from '../common/clock.js';
import { AdminSocketConnections } from './admin-socket-connections.js';

/**
 * How long the 429 of a connection that ignored its last Retry-After is held before it is sent (then the connection
 * is closed): the same as the shortest Retry-After, so a flood gets at most one answer per second per connection.
 */
export const IGNORED_RETRY_AFTER_HOLD_MS = 1000;
/**
 * Answers held at once, over every connection: past it, a refusal that ignored its Retry-After is answered at once
 * with `Connection: close` (each held answer keeps its request, reply and timer: about 3 KB).
 */
export const MAX_HELD_ANSWERS = 10_000;

/**
 * One rule for every 429 the TLS port sends, whichever limit refused (an open route's per-address budget, an agent's
 * sync rate or signing budget): a connection that asks again before half of the Retry-After it was just given has
 * passed ignores it (a flood on kept-alive connections; agents wait the whole Retry-After). If refused again, its
 * answer is held for {@link IGNORED_RETRY_AFTER_HOLD_MS} and sent with `Connection: close`, so each further refusal
 * costs the flood a wait and a new connection, which the per-address handshake rate refuses at accept, before any TLS
 * work. Answered at once instead, an agent looping on 1,000 kept-alive connections got ~1,300 refused syncs a second
 * and kept most of a core busy refusing them (`bench/dos/agent-db.bench.ts`).
 *
 * Counted per connection, never per address or agent: clients that honour Retry-After are never held. The local admin
 * socket is never held (its file permissions are the credential).
 */
@Injectable()
export class IgnoredRetryAfter implements OnModuleDestroy {
  /** Per connection refused before: the time before which asking again ignores the Retry-After it was given. */
  private readonly patientUntilMs = new WeakMap<Socket, number>();
  /** Answers being held: each sends its answer now when called. */
  private readonly held = new Set<() => void>();
  /** Connections with an answer held: one more request on them (pipelined behind it) closes them. */
  private readonly holding = new WeakSet<Socket>();

  constructor(
    private readonly adminSockets: AdminSocketConnections,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  onModuleDestroy(): void {
    // Runs before the listener closes: held answers go out now rather than keeping the shutdown waiting.
    for (const send of [...this.held]) send();
  }

  /**
   * The first Fastify `onRequest` hook: a request pipelined behind a held refusal closes its connection (the client
   * is not waiting for answers, so each such request would hold another).
   */
  readonly onRequest = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
    const socket = request.raw.socket;
    if (!this.holding.has(socket)) return done();
    reply.hijack();
    socket.destroy();
  };

  /** The Fastify `onSend` hook: holds a 429 that ignored the connection's last Retry-After, then closes. */
  readonly onSend = async (request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> => {
    const retryAfter = Number(reply.getHeader('retry-after'));
    const socket = request.raw.socket;
    if (reply.statusCode !== 429 || !(retryAfter > 0) || this.adminSockets.has(socket)) return payload;
    const nowMs = this.clock.now().getTime();
    const ignored = nowMs < (this.patientUntilMs.get(socket) ?? 0);
    // Half the Retry-After: a client whose timer fires a little early, or that counts from when it sent, is patient.
    this.patientUntilMs.set(socket, nowMs + (retryAfter * 1000) / 2);
    if (!ignored) return payload;
    void reply.header('connection', 'close');
    if (this.held.size >= MAX_HELD_ANSWERS) return payload;
    return new Promise((resolve) => this.hold(socket, () => resolve(payload)));
  };

  /**
   * Calls `answer` after {@link IGNORED_RETRY_AFTER_HOLD_MS} (at once when the server stops, or when the client is gone,
   * so that Fastify finishes the request). Bounded by the connections the TLS port holds (per address and in all).
   */
  private hold(socket: Socket, answer: () => void): void {
    const send = (): void => {
      clearTimeout(timer);
      this.held.delete(send);
      this.holding.delete(socket);
      socket.off('close', send);
      answer();
    };
    const timer = setTimeout(send, IGNORED_RETRY_AFTER_HOLD_MS);
    this.held.add(send);
    this.holding.add(socket);
    socket.once('close', send);
  }
}
