import { type IncomingHttpHeaders, type ServerHttp2Stream, constants } from 'node:http2';
import { gunzipSync } from 'node:zlib';
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
 * - requests may be gzip-compressed (`grpc-encoding: gzip`; another encoding is `UNIMPLEMENTED`); responses never are;
 * - a request message over `readMaxBytes`, before or after decompression, is `RESOURCE_EXHAUSTED`; a broken envelope
 *   `INVALID_ARGUMENT`; a message the protobuf decoder refuses, or a compressed one without an encoding, `INTERNAL`;
 *   none or more than one request message for a unary or server-streaming method `UNIMPLEMENTED`;
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
/** Request messages a bidi stream buffers before it stops reading from the client. */
const QUEUED_REQUESTS = 16;
const noop = (): void => undefined;
/**
 * The abort reasons of every call the client left, and of every call once it has ended: made once, since an error's
 * stack trace cost ~5 % of the agent's CPU per call when each cancelled call made its own (bench:workload's profile).
 * Nothing adds to them; they only carry their code and message.
 */
const CLIENT_LEFT = Object.freeze(new ConnectError('the client cancelled the call', Code.Canceled));
const CALL_ENDED = Object.freeze(new ConnectError('the call ended', Code.Canceled));

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
      new ResponseWriter(stream).fail(new ConnectError(`${path} is not implemented`, Code.Unimplemented));
      return;
    }
    void this.serve(route, stream, headers, values);
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
      if (!writer.ended) controller.abort(CLIENT_LEFT);
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
      const gzip = requestCompression(headers['grpc-encoding']);
      this.options.checkCall?.(call);
      const requests = new RequestReader(stream, method.input, gzip, this.options.readMaxBytes, controller.signal);
      const context = handlerContext(call, controller.signal, timeoutMs);
      if (method.methodKind === 'unary' || method.methodKind === 'server_streaming') {
        const request = await requests.single(method.methodKind === 'unary' ? 'unary' : 'server_streaming');
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
      const failure =
        error instanceof ConnectError
          ? error
          : new ConnectError('internal error', Code.Internal, undefined, undefined, error);
      outcome = failure.code;
      const hold = this.options.unaryRefusalHoldMs ?? 0;
      if (hold > 0 && method.methodKind === 'unary' && failure.code === Code.ResourceExhausted) {
        await abortableSleep(hold, controller.signal);
      }
      writer.fail(failure);
    } finally {
      clearTimeout(deadline);
      stream.off('close', onClose);
      this.calls.delete(controller);
      if (!controller.signal.aborted) controller.abort(CALL_ENDED);
      this.options.onCallEnd?.(call, outcome);
    }
  }
}

/** Answers a stream with an HTTP status alone (not a gRPC call). */
function respondHttp(stream: ServerHttp2Stream, status: number, headers: Record<string, string>): void {
  if (stream.closed || stream.headersSent) return;
  stream.respond({ ':status': status, ...headers }, { endStream: true });
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
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

/** Whether request messages may be gzip-compressed (`grpc-encoding`); any encoding but identity and gzip is refused. */
function requestCompression(value: string | string[] | undefined): boolean {
  if (value === undefined || value === 'identity') return false;
  if (value === 'gzip') return true;
  throw new ConnectError(`unknown compression "${String(value)}": supported encodings are gzip`, Code.Unimplemented, {
    'grpc-accept-encoding': 'gzip',
  });
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

/**
 * Reads a call's request messages as they arrive: envelopes split, decompressed and decoded, sizes checked before
 * anything is buffered.
 */
class RequestReader {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private readonly queue: unknown[] = [];
  private ended = false;
  private failure: ConnectError | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly schema: DescMessage,
    private readonly gzip: boolean,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal,
  ) {
    stream.on('data', (chunk: Buffer) => this.push(chunk));
    stream.once('end', () => this.end());
    signal.addEventListener('abort', () => this.notify(), { once: true });
  }

  /** The one request message of a unary or server-streaming call, once the client has sent it and half-closed. */
  async single(kind: string): Promise<unknown> {
    while (!this.ended && this.failure === undefined) await this.next();
    this.throwIfFailed();
    if (this.queue.length === 0) {
      throw new ConnectError(`protocol error: missing input message for ${kind} method`, Code.Unimplemented);
    }
    if (this.queue.length > 1) {
      throw new ConnectError(`protocol error: received extra input message for ${kind} method`, Code.Unimplemented);
    }
    return this.queue[0];
  }

  /** Every request message of a client- or bidi-streaming call, reading on only while the handler keeps up. */
  async *all(): AsyncGenerator<unknown> {
    for (;;) {
      const message = this.queue.shift();
      if (message !== undefined) {
        if (this.queue.length < QUEUED_REQUESTS && this.stream.isPaused()) this.stream.resume();
        yield message;
        continue;
      }
      this.throwIfFailed();
      if (this.ended) return;
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
    // After the call ended (the signal aborts then), whatever the client still sends is dropped.
    if (this.failure !== undefined || this.ended || this.signal.aborted) return;
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    try {
      this.split();
    } catch (error) {
      this.failure = error as ConnectError;
      this.buffered = [];
      this.stream.pause();
    }
    if (this.queue.length >= QUEUED_REQUESTS) this.stream.pause();
    this.notify();
  }

  private end(): void {
    if (this.failure === undefined && this.bufferedBytes > 0) {
      this.failure = new ConnectError('protocol error: incomplete envelope', Code.InvalidArgument);
    }
    this.ended = true;
    this.notify();
  }

  /** Takes every whole envelope off the buffered bytes. */
  private split(): void {
    while (this.bufferedBytes >= 5) {
      const head = this.peek(5);
      const flags = head[0] as number;
      const length = head.readUInt32BE(1);
      if (length > this.maxBytes) {
        throw new ConnectError(
          `message size ${length} is larger than configured readMaxBytes ${this.maxBytes}`,
          Code.ResourceExhausted,
        );
      }
      if (this.bufferedBytes < 5 + length) return;
      const envelope = this.take(5 + length).subarray(5);
      // Bit 0 is the only flag gRPC defines (compressed); connect-node ignored the others, and so does this.
      this.queue.push(this.parse((flags & 1) === 1 ? this.inflate(envelope) : envelope));
    }
  }

  private inflate(bytes: Buffer): Buffer {
    if (!this.gzip) {
      throw new ConnectError('received compressed envelope, but do not know how to decompress', Code.Internal);
    }
    try {
      return gunzipSync(bytes, { maxOutputLength: this.maxBytes });
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

  private parse(bytes: Uint8Array): unknown {
    try {
      return fromBinary(this.schema, bytes);
    } catch (error) {
      throw new ConnectError(`parse binary: ${(error as Error).message}`, Code.Internal);
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

/** Writes a call's response: headers with the first message, then messages, then the trailers with the status. */
class ResponseWriter {
  ended = false;

  constructor(private readonly stream: ServerHttp2Stream) {}

  /** Sends every message of `responses`, waiting for the client to take each when it holds back. */
  async each(schema: DescMessage, responses: AsyncIterable<unknown>, signal: AbortSignal): Promise<void> {
    for await (const response of responses) {
      throwIfAborted(signal);
      if (!this.write(encode(schema, response))) await this.drained();
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
    const trailers: Record<string, string> = {
      'grpc-status': String(error.code),
      'grpc-message': encodeGrpcMessage(error.rawMessage),
    };
    error.metadata.forEach((value, name) => {
      trailers[name] = value;
    });
    this.finish(trailers);
  }

  private write(message: Buffer): boolean {
    if (this.stream.closed || this.stream.destroyed) return true;
    if (!this.stream.headersSent) this.stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    return this.stream.write(message);
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        resolve();
      };
      this.stream.once('drain', done);
      this.stream.once('close', done);
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
    if (!stream.headersSent) {
      stream.respond({ ...RESPONSE_HEADERS, ...trailers }, { endStream: true });
      return;
    }
    stream.once('wantTrailers', () => stream.sendTrailers(trailers));
    stream.end();
  }
}
