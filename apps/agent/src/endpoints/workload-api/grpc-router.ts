import { type IncomingHttpHeaders, type ServerHttp2Stream, constants } from 'node:http2';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type ZlibOptions, brotliDecompress, gunzip } from 'node:zlib';
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService } from '@bufbuild/protobuf';
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type ServiceImpl,
  createServiceImplSpec,
} from '@connectrpc/connect';
import { encodeGrpcMessage } from './grpc-message.js';

/**
 * The gRPC protocol (HTTP/2, `application/grpc`, protobuf messages) served straight on node:http2's stream API, for
 * connect service implementations (`ServiceImpl`): the agent's Workload API and Envoy SDS. connect-node's adapter,
 * which this replaces, costs ~1.2 ms of CPU per connection and call on this project's 2-core hosts (its universal
 * request/response, web `Headers` and async-iterable pipeline), three times what node:http2 itself costs
 * (bench/README.md, "Workload API per-call cost"). The behaviour is connect-node's for the gRPC protocol, status for
 * status, so that every client sees what it saw:
 *
 * - a method other than POST is answered HTTP 405, a content type other than `application/grpc` or
 *   `application/grpc+proto` HTTP 415, a path no service has `UNIMPLEMENTED`;
 * - `grpc-timeout` ends the call with `DEADLINE_EXCEEDED` (an invalid value: `INVALID_ARGUMENT`);
 * - requests may be compressed (`grpc-encoding: gzip` or `br`, inflated off the event loop; another encoding is
 *   `UNIMPLEMENTED`); responses never are;
 * - a request message over `readMaxBytes`, before or after decompression, is `RESOURCE_EXHAUSTED`; a broken envelope
 *   `INVALID_ARGUMENT`; a message the protobuf decoder refuses, or a compressed one without an encoding, `INTERNAL`;
 *   none or more than one request message for a unary or server-streaming method `UNIMPLEMENTED` (a second one as
 *   soon as it is whole, not at the end of the request);
 * - an error the implementation throws is answered with its code and message when it is a `ConnectError`, else as
 *   `INTERNAL` "internal error" (its text stays in the agent);
 * - the call's `signal` aborts when the client cancels (reason: `CANCELED`), the deadline passes, the router is
 *   stopped ({@link GrpcRouter.abortAll}) or the call ends.
 */

/** What a call looks like to {@link GrpcRouterOptions} hooks. */
export interface GrpcCall {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly headers: IncomingHttpHeaders;
  readonly values: ContextValues;
}

export interface GrpcRouterOptions {
  /** Largest request message accepted, in bytes, compressed or not. */
  readonly readMaxBytes: number;
  /** Runs before the request is read; throws a `ConnectError` to refuse the call with its code. */
  readonly checkCall?: (call: GrpcCall) => void;
  /**
   * Told once when a call ends: `OK`, the code it failed with, or `CANCELED` when the client left first. Every call
   * routed to a method is told, refused ones included.
   */
  readonly onCallEnd?: (call: GrpcCall, code: Code | 'OK') => void;
  /** Told of each error an implementation threw that is not a `ConnectError` (answered `INTERNAL` "internal error"). */
  readonly onUnexpectedError?: (call: GrpcCall, error: unknown) => void;
  /**
   * How long a unary call's `RESOURCE_EXHAUSTED` is held before it is sent, in milliseconds (the caller cancelling
   * ends the wait); 0 answers at once.
   */
  readonly unaryRefusalHoldMs?: number;
}

type AnyMethodImpl = (request: unknown, context: HandlerContext) => unknown;

interface Route {
  readonly service: DescService;
  readonly method: DescMethod;
  readonly impl: AnyMethodImpl;
}

const GRPC_CONTENT_TYPE = /^application\/grpc(?:\+proto)?$/i;
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
/** Longer deadlines than a Node timer can hold (~24.8 days) are as good as none. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const RESPONSE_HEADERS = { ':status': 200, 'content-type': 'application/grpc' };
/** Headers an error's metadata may not set in the trailers: pseudo-headers, the protocol's own and HTTP/2's banned. */
const RESERVED_TRAILERS =
  /^(?::|grpc-status$|grpc-message$|grpc-status-details-bin$|content-type$|te$|connection$|keep-alive$|proxy-connection$|transfer-encoding$|upgrade$)/i;
const noop = (): void => undefined;
/**
 * A call's abort reason, made without a stack trace: the reasons every call gets (the client left, the call ended)
 * cost ~5 % of the agent's CPU per call with theirs (bench:workload's profile), and say all they have to say by code
 * and message. One per call, so that nothing one call's code adds to its reason reaches another's.
 */
function abortReason(message: string, code: Code): ConnectError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new ConnectError(message, code);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Routes gRPC calls to connect service implementations; see the file's comment. */
export class GrpcRouter {
  private readonly routes = new Map<string, Route>();
  private readonly calls = new Set<AbortController>();

  constructor(private readonly options: GrpcRouterOptions) {}

  /** Serves `service` with `impl`; a method `impl` lacks answers `UNIMPLEMENTED`. */
  service<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): this {
    const spec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const { impl: methodImpl } = spec.methods[method.localName] as unknown as { impl: AnyMethodImpl };
      this.routes.set(`/${service.typeName}/${method.name}`, { service, method, impl: methodImpl });
    }
    return this;
  }

  /** Aborts every open call with `reason` (the server's shutdown: streams end with its status). */
  abortAll(reason: ConnectError): void {
    for (const call of this.calls) call.abort(reason);
  }

  /** Serves one HTTP/2 stream of the server (`'stream'` event), `values` being its call's context values. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, values: ContextValues): void {
    // An error is followed by 'close', which ends the call.
    stream.on('error', noop);
    if (headers[constants.HTTP2_HEADER_METHOD] !== 'POST') {
      respondHttp(stream, 405, { allow: 'POST' });
      return;
    }
    const contentType = headers[constants.HTTP2_HEADER_CONTENT_TYPE];
    if (typeof contentType !== 'string' || !GRPC_CONTENT_TYPE.test(contentType)) {
      respondHttp(stream, 415, { 'accept-post': 'application/grpc, application/grpc+proto' });
      return;
    }
    const path = String(headers[constants.HTTP2_HEADER_PATH] ?? '');
    const route = this.routes.get(path);
    if (route === undefined) {
      failCall(stream, new ConnectError(`${path} is not implemented`, Code.Unimplemented));
      return;
    }
    // Nothing in serve() is expected to throw past its own catch; if writing the answer does (a stream in a state
    // node:http2 refuses), the stream is reset rather than the agent brought down by an unhandled rejection.
    this.serve(route, stream, headers, values).catch(() => stream.destroy());
  }

  private async serve(
    route: Route,
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    values: ContextValues,
  ): Promise<void> {
    const { service, method } = route;
    const call: GrpcCall = { service, method, headers, values };
    const controller = new AbortController();
    const writer = new ResponseWriter(stream);
    let deadline: NodeJS.Timeout | undefined;
    const onClose = (): void => {
      if (!writer.ended) controller.abort(abortReason('the client cancelled the call', Code.Canceled));
    };
    stream.once('close', onClose);
    this.calls.add(controller);
    let outcome: Code | 'OK' = 'OK';
    try {
      const timeoutMs = parseTimeout(headers['grpc-timeout']);
      if (timeoutMs !== undefined && timeoutMs <= MAX_TIMER_MS) {
        deadline = setTimeout(
          () => controller.abort(new ConnectError('the deadline passed', Code.DeadlineExceeded)),
          timeoutMs,
        );
      }
      const compression = requestCompression(headers['grpc-encoding']);
      this.options.checkCall?.(call);
      const single = method.methodKind === 'unary' || method.methodKind === 'server_streaming';
      const requests = new RequestReader(
        stream,
        method.input,
        compression,
        this.options.readMaxBytes,
        controller.signal,
        single ? 'single' : 'stream',
        method.methodKind,
      );
      const context = handlerContext(call, controller.signal, timeoutMs);
      if (single) {
        const request = await requests.single();
        if (method.methodKind === 'unary') {
          const response = await route.impl(request, context);
          throwIfAborted(controller.signal);
          writer.last(encode(method.output, response));
        } else {
          await writer.each(method.output, route.impl(request, context) as AsyncIterable<unknown>, controller.signal);
        }
      } else {
        const responses = route.impl(requests.all(), context);
        if (method.methodKind === 'client_streaming') writer.last(encode(method.output, await responses));
        else await writer.each(method.output, responses as AsyncIterable<unknown>, controller.signal);
      }
      writer.ok();
    } catch (caught) {
      // Once the call is aborted, its reason is the answer (the client left, the deadline, the shutdown), whatever
      // the implementation made of it.
      const error = controller.signal.aborted ? (controller.signal.reason as unknown) : caught;
      if (!(error instanceof ConnectError)) this.options.onUnexpectedError?.(call, error);
      const failure =
        error instanceof ConnectError
          ? error
          : new ConnectError('internal error', Code.Internal, undefined, undefined, error);
      outcome = failure.code;
      const hold = this.options.unaryRefusalHoldMs ?? 0;
      if (hold > 0 && method.methodKind === 'unary' && failure.code === Code.ResourceExhausted) {
        // Ends early, without an error of its own, when the caller cancels.
        await sleep(hold, undefined, { signal: controller.signal }).catch(noop);
      }
      writer.fail(failure);
    } finally {
      clearTimeout(deadline);
      stream.off('close', onClose);
      this.calls.delete(controller);
      if (!controller.signal.aborted) controller.abort(abortReason('the call ended', Code.Canceled));
      this.options.onCallEnd?.(call, outcome);
    }
  }
}

/**
 * Answers a gRPC call with `error` alone (a trailers-only response, its request read and dropped), for calls refused
 * before or outside the router's own handling: an unknown path, the server's per-uid limits.
 */
export function failCall(stream: ServerHttp2Stream, error: ConnectError): void {
  new ResponseWriter(stream).fail(error);
}

/** Answers a stream with an HTTP status alone (not a gRPC call). */
function respondHttp(stream: ServerHttp2Stream, status: number, headers: Record<string, string>): void {
  if (stream.closed || stream.headersSent) return;
  stream.respond({ ':status': status, ...headers }, { endStream: true });
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

/** `grpc-timeout` in milliseconds (gRPC over HTTP/2: at most 8 digits and a unit), or undefined when absent. */
function parseTimeout(value: string | string[] | undefined): number | undefined {
  if (value === undefined) return undefined;
  const match = typeof value === 'string' ? TIMEOUT.exec(value) : null;
  if (match === null) {
    throw new ConnectError(`protocol error: invalid grpc timeout value: ${String(value)}`, Code.InvalidArgument);
  }
  return Number(match[1]) * (TIMEOUT_UNIT_MS[match[2] as string] as number);
}

/** How request messages may be compressed (`grpc-encoding`): gzip or br, as connect-node read; others are refused. */
function requestCompression(value: string | string[] | undefined): Compression | undefined {
  if (value === undefined || value === 'identity') return undefined;
  if (value === 'gzip' || value === 'br') return value;
  throw new ConnectError(
    `unknown compression "${String(value)}": supported encodings are gzip, br`,
    Code.Unimplemented,
    { 'grpc-accept-encoding': 'gzip,br' },
  );
}

/** One gRPC message: the 5-byte prefix (not compressed, length) and the protobuf encoding. */
function encode(schema: DescMessage, message: unknown): Buffer {
  const bytes = toBinary(schema, create(schema, message as never));
  const framed = Buffer.allocUnsafe(5 + bytes.length);
  framed[0] = 0;
  framed.writeUInt32BE(bytes.length, 1);
  framed.set(bytes, 5);
  return framed;
}

/**
 * A handler context with what connect's `HandlerContext` promises. The web `Headers` objects are made only if an
 * implementation reads them (neither of the agent's does); response headers and trailers set on them are not sent.
 */
function handlerContext(call: GrpcCall, signal: AbortSignal, timeoutMs: number | undefined): HandlerContext {
  const deadlineAt = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  let requestHeader: Headers | undefined;
  let responseHeader: Headers | undefined;
  let responseTrailer: Headers | undefined;
  return {
    service: call.service,
    method: call.method,
    signal,
    timeoutMs: () => (deadlineAt === undefined ? undefined : deadlineAt - Date.now()),
    requestMethod: 'POST',
    protocolName: 'grpc',
    values: call.values,
    url: String(call.headers[constants.HTTP2_HEADER_PATH] ?? ''),
    get requestHeader() {
      return (requestHeader ??= webHeaders(call.headers));
    },
    get responseHeader() {
      return (responseHeader ??= new Headers());
    },
    get responseTrailer() {
      return (responseTrailer ??= new Headers());
    },
  };
}

function webHeaders(headers: IncomingHttpHeaders): Headers {
  const result = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    for (const item of Array.isArray(value) ? value : [value]) result.append(name, item);
  }
  return result;
}

type Compression = 'gzip' | 'br';

const inflaters: Readonly<Record<Compression, (bytes: Buffer, options: ZlibOptions) => Promise<Buffer>>> = {
  gzip: promisify(gunzip),
  br: promisify(brotliDecompress),
};

interface Envelope {
  readonly compressed: boolean;
  readonly bytes: Buffer;
}

/**
 * Reads a call's request messages: envelopes split as DATA frames arrive, each one's size checked from its prefix
 * before it is buffered, then decompressed (off the event loop) and decoded only when the handler takes it.
 *
 * - `single` (unary and server-streaming methods): a second whole envelope fails the call at once (connect-node's
 *   "received extra input message"), so nothing past one message and the next one's bytes is held.
 * - `stream` (client- and bidi-streaming): at most one envelope waits for the handler; until it takes it, nothing
 *   more is split and the stream is paused, so HTTP/2 flow control holds the client back.
 */
class RequestReader {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private readonly envelopes: Envelope[] = [];
  private received = 0;
  private ended = false;
  private failure: ConnectError | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly compression: Compression | undefined,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal,
    private readonly mode: 'single' | 'stream',
    private readonly kind: string,
  ) {
    stream.on('data', (chunk: Buffer) => this.push(chunk));
    stream.once('end', () => {
      this.ended = true;
      this.notify();
    });
    signal.addEventListener('abort', () => this.notify(), { once: true });
  }

  /** The one request message of a unary or server-streaming call, once the client has sent it and half-closed. */
  async single(): Promise<unknown> {
    while (!this.ended && this.failure === undefined) await this.next();
    this.throwIfFailed();
    if (this.bufferedBytes > 0) throw incompleteEnvelope();
    const envelope = this.envelopes[0];
    if (envelope === undefined) {
      throw new ConnectError(`protocol error: missing input message for ${this.kind} method`, Code.Unimplemented);
    }
    return this.decode(envelope);
  }

  /** Every request message of a client- or bidi-streaming call, read on only as the handler takes them. */
  async *all(): AsyncGenerator<unknown> {
    for (;;) {
      const envelope = this.envelopes.shift();
      if (envelope !== undefined) {
        this.splitOrFail();
        if (this.envelopes.length === 0 && this.failure === undefined && this.stream.isPaused()) this.stream.resume();
        yield await this.decode(envelope);
        continue;
      }
      this.throwIfFailed();
      if (this.ended) {
        if (this.bufferedBytes > 0) throw incompleteEnvelope();
        return;
      }
      await this.next();
    }
  }

  private next(): Promise<void> {
    throwIfAborted(this.signal);
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  private throwIfFailed(): void {
    throwIfAborted(this.signal);
    if (this.failure !== undefined) throw this.failure;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private push(chunk: Buffer): void {
    // After a failure, or once the call ended (the signal aborts then), whatever the client still sends is dropped.
    if (this.failure !== undefined || this.signal.aborted) return;
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    this.splitOrFail();
    this.notify();
  }

  private splitOrFail(): void {
    if (this.failure !== undefined) return;
    try {
      this.split();
    } catch (error) {
      this.failure = error as ConnectError;
      this.buffered = [];
      this.bufferedBytes = 0;
    }
  }

  /** Takes whole envelopes off the buffered bytes, as far as the mode allows. */
  private split(): void {
    while (this.bufferedBytes >= 5) {
      if (this.mode === 'stream' && this.envelopes.length > 0) {
        this.stream.pause();
        return;
      }
      // A unary or server-streaming call has one message: the next prefix is refused as soon as it arrives, before
      // any of its body is buffered.
      if (this.mode === 'single' && this.received > 0) {
        throw new ConnectError(
          `protocol error: received extra input message for ${this.kind} method`,
          Code.Unimplemented,
        );
      }
      const head = this.peek(5);
      const length = head.readUInt32BE(1);
      if (length > this.maxBytes) {
        throw new ConnectError(
          `message size ${length} is larger than configured readMaxBytes ${this.maxBytes}`,
          Code.ResourceExhausted,
        );
      }
      if (this.bufferedBytes < 5 + length) return;
      // Bit 0 is the only flag gRPC defines (compressed); connect-node ignored the others, and so does this.
      const compressed = ((head[0] as number) & 1) === 1;
      this.envelopes.push({ compressed, bytes: this.take(5 + length).subarray(5) });
      this.received++;
    }
  }

  private async decode({ compressed, bytes }: Envelope): Promise<unknown> {
    const message = compressed ? await this.inflate(bytes) : bytes;
    try {
      // Unknown fields are dropped, not kept: protobuf-es keeps one object per field, so a 1 MiB request of 2-byte
      // unknown fields decoded to ~80 MiB (review of the gRPC router). Nothing of the agent reads them.
      return fromBinary(this.schema, message, { readUnknownFields: false });
    } catch (error) {
      throw new ConnectError(`parse binary: ${(error as Error).message}`, Code.Internal);
    }
  }

  private async inflate(bytes: Buffer): Promise<Buffer> {
    if (this.compression === undefined) {
      throw new ConnectError('received compressed envelope, but do not know how to decompress', Code.Internal);
    }
    try {
      return await inflaters[this.compression](bytes, { maxOutputLength: this.maxBytes });
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new ConnectError(
          `message is larger than configured readMaxBytes ${this.maxBytes} after decompression`,
          Code.ResourceExhausted,
        );
      }
      throw new ConnectError(`decompress: ${(error as Error).message}`, Code.InvalidArgument);
    }
  }

  /** The first `length` buffered bytes, without consuming them. */
  private peek(length: number): Buffer {
    const first = this.buffered[0] as Buffer;
    if (first.length >= length) return first;
    const joined = Buffer.concat(this.buffered);
    this.buffered = [joined];
    return joined;
  }

  /** Consumes the first `length` buffered bytes. */
  private take(length: number): Buffer {
    const first = this.peek(length);
    const taken = first.subarray(0, length);
    if (first.length === length) this.buffered.shift();
    else this.buffered[0] = first.subarray(length);
    this.bufferedBytes -= length;
    return taken;
  }
}

function incompleteEnvelope(): ConnectError {
  return new ConnectError('protocol error: incomplete envelope', Code.InvalidArgument);
}

/** Writes a call's response: headers with the first message, then messages, then the trailers with the status. */
class ResponseWriter {
  ended = false;

  constructor(private readonly stream: ServerHttp2Stream) {}

  /** Sends every message of `responses`, waiting for the client to take each when it holds back. */
  async each(schema: DescMessage, responses: AsyncIterable<unknown>, signal: AbortSignal): Promise<void> {
    for await (const response of responses) {
      throwIfAborted(signal);
      if (!this.write(encode(schema, response))) await this.drained(signal);
    }
  }

  /** Sends the one message of a unary call. */
  last(message: Buffer): void {
    this.write(message);
  }

  ok(): void {
    this.finish({ 'grpc-status': '0' });
  }

  fail(error: ConnectError): void {
    const trailers: Record<string, string> = {};
    // The error's own metadata (grpc-accept-encoding, say), never a header that is the protocol's.
    error.metadata.forEach((value, name) => {
      if (!RESERVED_TRAILERS.test(name)) trailers[name] = value;
    });
    trailers['grpc-status'] = String(error.code);
    trailers['grpc-message'] = encodeGrpcMessage(error.rawMessage);
    this.finish(trailers);
  }

  private write(message: Buffer): boolean {
    if (this.stream.closed || this.stream.destroyed) return true;
    if (!this.stream.headersSent) this.stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    return this.stream.write(message);
  }

  /** Waits until the client has taken what was written, the stream closed, or the call was aborted. */
  private drained(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.stream.once('drain', done);
      this.stream.once('close', done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Ends the response with `trailers`: after the messages, or alone (a trailers-only response) when none was sent. */
  private finish(trailers: Record<string, string>): void {
    this.ended = true;
    const stream = this.stream;
    if (stream.closed || stream.destroyed) return;
    // Whatever the client still sends (a request refused unread, a stream answered early) is read and dropped, so
    // that its side ends and the stream closes.
    stream.resume();
    // node:http2 throws on headers it refuses; the stream is then reset rather than left open (or the agent down).
    const orReset = (send: () => void): void => {
      try {
        send();
      } catch {
        stream.close(constants.NGHTTP2_INTERNAL_ERROR);
      }
    };
    if (!stream.headersSent) {
      orReset(() => stream.respond({ ...RESPONSE_HEADERS, ...trailers }, { endStream: true }));
      endUnlessHalfClosed(stream);
      return;
    }
    stream.once('wantTrailers', () => {
      orReset(() => stream.sendTrailers(trailers));
      endUnlessHalfClosed(stream);
    });
    stream.end();
  }
}

/**
 * Tells a client that has not half-closed that its call is over, with RST_STREAM NO_ERROR after the response (as
 * grpc-go does), so that its stream does not stay open and counted against its uid's caps. Deferred a turn: node:http2
 * hands trailers to nghttp2 on a later tick (`setImmediate`), and a close before that would send the reset first and
 * the trailers never (review of the gRPC router). A stream whose client has half-closed, or that is closed, is left
 * alone.
 */
function endUnlessHalfClosed(stream: ServerHttp2Stream): void {
  setImmediate(() => {
    if (!stream.closed && !stream.destroyed && stream.state.remoteClose !== 1) {
      stream.close(constants.NGHTTP2_NO_ERROR);
    }
  });
}
