import { type ClientHttp2Session, type ClientHttp2Stream, connect as connectHttp2, constants } from 'node:http2';
import { connect as connectNet } from 'node:net';
import { GrpcCallError, grpcStatusOf } from './errors.js';

/*
 * The Workload API client's gRPC channel: gRPC over HTTP/2 (PROTOCOL-HTTP2.md) with node:http2, cleartext (h2c), on a
 * Unix domain socket or TCP, for the calls WorkloadApiClient makes (unary and server-streaming, protobuf messages,
 * no compression). It replaces @connectrpc/connect-node for that client: Connect's transports and their
 * @bufbuild/protobuf registry took ~200 ms to load, most of `sigil-agent api fetch x509` (bench/README.md).
 *
 * As connect-node's session manager did: one HTTP/2 connection, opened on the first call and again after it closes
 * (agent restart, GOAWAY), referenced only while a call is open so that an idle client never keeps the process alive.
 */

/** Largest response message accepted, as grpc-go's default (go-spiffe's client): 4 MiB. */
export const MAX_RESPONSE_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Where the channel connects. */
export type GrpcTarget =
  { readonly kind: 'unix'; readonly path: string } | { readonly kind: 'tcp'; readonly url: string };

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM } = constants;

// PROTOCOL-HTTP2.md and http-grpc-status-mapping.md: an HTTP status other than 200 without grpc-status.
const STATUS_BY_HTTP: Readonly<Record<number, number>> = {
  400: 13,
  401: 16,
  403: 7,
  404: 12,
  429: 14,
  502: 14,
  503: 14,
  504: 14,
};
const UNKNOWN = 2;
const INTERNAL = 13;
const RESOURCE_EXHAUSTED = 8;
/** Messages queued unread before the channel stops reading the stream. */
export const QUEUE_HIGH_WATER = 16;

/** One HTTP/2 connection to a gRPC server, opened when needed, and the calls on it. */
export class GrpcChannel {
  private session: ClientHttp2Session | undefined;
  private open = 0;
  private closed = false;

  /**
   * @param target where to connect
   * @param metadata headers every call carries (for the Workload API, `workload.spiffe.io: true`)
   */
  constructor(
    private readonly target: GrpcTarget,
    private readonly metadata: Readonly<Record<string, string>>,
  ) {}

  /** A unary call: exactly one response message. */
  async unary<T>(path: string, request: Uint8Array, decode: (bytes: Uint8Array) => T, signal: AbortSignal): Promise<T> {
    let response: T | undefined;
    let count = 0;
    for await (const message of this.serverStream(path, request, decode, signal)) {
      response = message;
      count += 1;
    }
    if (count !== 1)
      throw new GrpcCallError('unimplemented', `protocol error: ${count} response messages to a unary call`);
    return response as T;
  }

  /**
   * A server-streaming call: yields each response message decoded with `decode` (a message that does not decode ends
   * the call with `internal`, as grpc-go). Leaving the loop early, or `signal` aborting, cancels the call.
   */
  async *serverStream<T>(
    path: string,
    request: Uint8Array,
    decode: (bytes: Uint8Array) => T,
    signal: AbortSignal,
  ): AsyncGenerator<T, void, undefined> {
    signal.throwIfAborted();
    if (this.closed) throw new GrpcCallError('canceled', 'the channel is closed');
    const session = this.connect();
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      ...this.metadata,
    });
    this.open += 1;
    session.ref();
    const call = new CallState(stream);
    const onAbort = (): void => call.cancel(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    stream.on('close', () => {
      this.open -= 1;
      if (this.open === 0 && !session.destroyed) session.unref();
    });
    stream.end(frame(request));
    try {
      for (;;) {
        const bytes = await call.next();
        if (bytes === undefined) return;
        let message: T;
        try {
          message = decode(bytes);
        } catch (error) {
          throw new GrpcCallError(grpcStatusOf(INTERNAL), `cannot decode the response: ${(error as Error).message}`, {
            cause: error,
          });
        }
        yield message;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (!stream.closed) stream.close(NGHTTP2_CANCEL);
    }
  }

  /** Closes the connection; open calls fail, later calls fail with `canceled`. */
  close(): void {
    this.closed = true;
    this.session?.destroy();
    this.session = undefined;
  }

  private connect(): ClientHttp2Session {
    const current = this.session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    const target = this.target;
    const session =
      target.kind === 'unix'
        ? connectHttp2('http://localhost', { createConnection: () => connectNet(target.path) })
        : connectHttp2(target.url);
    // A connection failure reaches every open stream as its 'error'; the session's own is not a second report.
    session.on('error', () => undefined);
    session.on('close', () => {
      if (this.session === session) this.session = undefined;
    });
    session.unref();
    this.session = session;
    return session;
  }
}

/** The 5-byte prefix of a gRPC message: uncompressed, big-endian length. */
function frame(message: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed.writeUInt8(0, 0);
  framed.writeUInt32BE(message.length, 1);
  framed.set(message, 5);
  return framed;
}

/**
 * The server's status message as it may be shown: control characters (a percent-encoded ESC or newline from a hostile
 * server would reach the caller's terminal and logs raw), format characters such as bidi overrides and line or
 * paragraph separators are written as `\\u` escapes.
 */
function printable(text: string): string {
  return text.replace(
    /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu,
    (char) => `\\u${char.codePointAt(0)!.toString(16).padStart(4, '0')}`,
  );
}

function statusError(code: number, message: string): GrpcCallError {
  return new GrpcCallError(grpcStatusOf(code), message);
}

/**
 * What one call has received: its messages not yet read, and how it ended. Reading pauses while
 * {@link QUEUE_HIGH_WATER} messages wait, so HTTP/2 flow control holds a server that sends faster than the caller reads.
 * Exported for its spec only.
 */
export class CallState {
  private readonly messages: Buffer[] = [];
  private pending: Buffer = Buffer.alloc(0);
  private httpStatus: number | undefined;
  private grpcStatus: number | undefined;
  private grpcMessage = '';
  private failure: Error | undefined;
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(private readonly stream: ClientHttp2Stream) {
    stream.on('response', (headers) => {
      this.httpStatus = Number(headers[':status']);
      const contentType = String(headers['content-type'] ?? '');
      if (headers['grpc-status'] !== undefined) {
        this.trailers(headers); // a trailers-only response
      } else if (this.httpStatus !== 200) {
        this.fail(statusError(STATUS_BY_HTTP[this.httpStatus] ?? UNKNOWN, `http status ${this.httpStatus}`));
      } else if (!/^application\/grpc(?:[+;]|$)/.test(contentType)) {
        this.fail(statusError(UNKNOWN, `unexpected content-type ${JSON.stringify(contentType)}`));
      }
    });
    stream.on('data', (chunk: Buffer) => this.data(chunk));
    stream.on('trailers', (trailers) => this.trailers(trailers));
    stream.on('error', (error: Error) => {
      // node:http2 wraps a failed connection ("The pending stream has been canceled"); report the socket's own error.
      const reason = error.cause instanceof Error ? error.cause : error;
      this.fail(new GrpcCallError('unavailable', reason.message, { cause: reason }));
    });
    stream.on('close', () => this.close());
  }

  /** The next message, or undefined after an OK status. @throws GrpcCallError, or the abort reason */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const message = this.messages.shift();
      if (message !== undefined) {
        if (this.messages.length < QUEUE_HIGH_WATER && this.stream.isPaused()) this.stream.resume();
        return message;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return undefined;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  cancel(reason: unknown): void {
    this.fail(reason instanceof Error ? reason : new Error(String(reason)));
    if (!this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
  }

  private data(chunk: Buffer): void {
    if (this.failure !== undefined) return;
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 5) {
      const flags = this.pending.readUInt8(0);
      const length = this.pending.readUInt32BE(1);
      if (flags !== 0) {
        // We never offer grpc-accept-encoding, so a compressed message (flag 1) is a protocol error (PROTOCOL-HTTP2.md).
        return this.refuse(
          statusError(INTERNAL, `protocol error: message flags ${flags}, compression was not offered`),
        );
      }
      if (length > MAX_RESPONSE_MESSAGE_BYTES) {
        return this.refuse(
          statusError(RESOURCE_EXHAUSTED, `response message of ${length} bytes exceeds ${MAX_RESPONSE_MESSAGE_BYTES}`),
        );
      }
      if (this.pending.length < 5 + length) break;
      this.messages.push(this.pending.subarray(5, 5 + length));
      this.pending = this.pending.subarray(5 + length);
    }
    if (this.messages.length >= QUEUE_HIGH_WATER) this.stream.pause();
    this.notify();
  }

  private trailers(headers: Record<string, unknown>): void {
    const status = headers['grpc-status'];
    this.grpcStatus = typeof status === 'string' && /^\d{1,2}$/.test(status) ? Number(status) : UNKNOWN;
    const message = headers['grpc-message'];
    if (typeof message === 'string') {
      let text: string;
      try {
        text = decodeURIComponent(message);
      } catch {
        text = message;
      }
      this.grpcMessage = printable(text);
    }
  }

  /** The stream is over: how it ended decides the call's outcome. */
  private close(): void {
    if (this.failure === undefined) {
      if (this.grpcStatus === undefined) {
        const code = this.stream.rstCode;
        this.failure =
          code === NGHTTP2_REFUSED_STREAM
            ? new GrpcCallError('unavailable', 'the stream was refused')
            : code === NGHTTP2_CANCEL
              ? new GrpcCallError('canceled', 'the server cancelled the stream')
              : this.httpStatus === undefined
                ? new GrpcCallError('unavailable', `the stream closed before a response (http/2 code ${code})`)
                : statusError(INTERNAL, `protocol error: the response ended without grpc-status (http/2 code ${code})`);
      } else if (this.grpcStatus !== 0) {
        this.failure = statusError(this.grpcStatus, this.grpcMessage);
      } else if (this.pending.length !== 0) {
        this.failure = statusError(INTERNAL, `protocol error: ${this.pending.length} bytes after the last message`);
      }
    }
    this.ended = true;
    this.notify();
  }

  private refuse(error: GrpcCallError): void {
    this.fail(error);
    this.pending = Buffer.alloc(0);
    if (!this.stream.closed) this.stream.close(NGHTTP2_CANCEL);
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error; // messages that arrived before it are still read first
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
