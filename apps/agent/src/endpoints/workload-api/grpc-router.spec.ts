import { once } from 'node:events';
import {
  type ClientHttp2Session,
  type Http2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  connect,
  createServer,
} from 'node:http2';
import { type AddressInfo } from 'node:net';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, createContextValues } from '@connectrpc/connect';
import {
  DiscoveryRequestSchema,
  DiscoveryResponseSchema,
  SecretDiscoveryService,
  type DiscoveryRequest,
} from '@sigil/workload-api/envoy-sds';
import {
  JWTSVIDRequestSchema,
  JWTSVIDResponseSchema,
  SpiffeWorkloadAPI,
  X509SVIDResponseSchema,
  type JWTSVIDRequest,
} from '@sigil/workload-api/service';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type GrpcCall, GrpcRouter, type GrpcRouterOptions } from './grpc-router.js';

const READ_MAX = 64 * 1024;

function envelope(bytes: Uint8Array, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

const jwtRequest = (audience: string[]): Buffer =>
  envelope(toBinary(JWTSVIDRequestSchema, create(JWTSVIDRequestSchema, { audience })));

/** Splits a response body into its messages' bytes. */
function messages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length;) {
    const length = body.readUInt32BE(at + 1);
    expect(body[at]).toBe(0); // responses are never compressed
    out.push(body.subarray(at + 5, at + 5 + length));
    at += 5 + length;
  }
  return out;
}

interface Answer {
  readonly status: number | undefined;
  /** grpc-status and grpc-message, from the trailers or from a trailers-only answer's headers. */
  readonly code: string | undefined;
  readonly message: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

describe('GrpcRouter', () => {
  let server: Http2Server;
  let session: ClientHttp2Session;
  let router: GrpcRouter;
  let ended: { rpc: string; code: Code | 'OK' }[];
  let contexts: HandlerContext[];
  let produced: number;

  async function serve(options: Partial<GrpcRouterOptions> = {}): Promise<void> {
    router = new GrpcRouter({
      readMaxBytes: READ_MAX,
      onCallEnd: (call: GrpcCall, code) => ended.push({ rpc: call.method.name, code }),
      ...options,
    });
    router.service(SpiffeWorkloadAPI, {
      fetchJWTSVID: (request: JWTSVIDRequest, context) => {
        contexts.push(context);
        const [audience] = request.audience;
        if (audience === 'throw') throw new Error('secret detail of the agent');
        if (audience === 'denied') throw new ConnectError('not yours: ü', Code.PermissionDenied);
        if (audience === 'exhausted') throw new ConnectError('over the limit', Code.ResourceExhausted);
        if (audience === 'wait') {
          return new Promise((_resolve, reject) =>
            context.signal.addEventListener('abort', () => reject(context.signal.reason as Error)),
          );
        }
        return { svids: [{ spiffeId: 'spiffe://example.org/w', svid: request.audience.join(','), hint: '' }] };
      },
      async *fetchX509SVID(_request, context) {
        contexts.push(context);
        // Large messages, as fast as the client takes them, until it leaves (a turn of the event loop between them,
        // so that a router writing regardless of the client would keep producing rather than block).
        for (let i = 0; ; i++) {
          produced++;
          await new Promise(setImmediate);
          yield create(X509SVIDResponseSchema, {
            svids: [{ spiffeId: `spiffe://example.org/${i}`, x509Svid: new Uint8Array(256 * 1024) }],
          });
        }
      },
      // eslint-disable-next-line require-yield
      async *fetchX509Bundles(_request, context) {
        contexts.push(context);
        await new Promise((resolve) => context.signal.addEventListener('abort', resolve));
        throw context.signal.reason;
      },
    });
    router.service(SecretDiscoveryService, {
      // Echoes each request's version as a response, until the client half-closes.
      async *streamSecrets(requests: AsyncIterable<DiscoveryRequest>) {
        for await (const request of requests) {
          yield create(DiscoveryResponseSchema, { versionInfo: request.versionInfo });
        }
      },
    });
    server = createServer();
    const values = createContextValues();
    server.on('stream', (stream, headers) => router.handle(stream, headers, values));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    session.on('error', () => undefined);
  }

  beforeEach(() => {
    ended = [];
    contexts = [];
    produced = 0;
  });

  afterEach(async () => {
    session.destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  function call(
    path: string,
    body: Buffer | undefined,
    headers: OutgoingHttpHeaders = {},
    onStream?: (stream: ReturnType<ClientHttp2Session['request']>) => void,
  ): Promise<Answer> {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    stream.on('error', () => undefined);
    let response: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (headers) => (response = headers));
    stream.on('trailers', (headers) => (trailers = headers));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    onStream?.(stream);
    if (body !== undefined) stream.end(body);
    return new Promise((resolve) =>
      stream.once('close', () => {
        const status = trailers ?? response;
        resolve({
          status: response[':status'] as number | undefined,
          code: status['grpc-status'] as string | undefined,
          message:
            status['grpc-message'] === undefined ? undefined : decodeURIComponent(String(status['grpc-message'])),
          headers: response,
          body: Buffer.concat(chunks),
        });
      }),
    );
  }

  const JWT = '/SpiffeWorkloadAPI/FetchJWTSVID';

  it('answers a unary call with one message and grpc-status 0 in the trailers', async () => {
    await serve();
    const answer = await call(JWT, jwtRequest(['a', 'b']));
    expect(answer.status).toBe(200);
    expect(answer.headers['content-type']).toBe('application/grpc');
    expect(answer.code).toBe('0');
    const [message] = messages(answer.body);
    expect(fromBinary(JWTSVIDResponseSchema, message as Buffer).svids[0]?.svid).toBe('a,b');
    expect(ended).toEqual([{ rpc: 'FetchJWTSVID', code: 'OK' }]);
    // The handler's signal is aborted once the call has ended, as connect's is.
    expect(contexts[0]?.signal.aborted).toBe(true);
    expect(contexts[0]?.protocolName).toBe('grpc');
  });

  it('reads a request split across many DATA frames and a gzip-compressed one', async () => {
    await serve();
    const split = await call(JWT, undefined, {}, (stream) => {
      const bytes = jwtRequest(['split']);
      for (const byte of bytes) stream.write(Buffer.from([byte]));
      stream.end();
    });
    expect(split.code).toBe('0');
    const raw = toBinary(JWTSVIDRequestSchema, create(JWTSVIDRequestSchema, { audience: ['zipped'] }));
    const zipped = await call(JWT, envelope(gzipSync(raw), 1), { 'grpc-encoding': 'gzip' });
    expect(zipped.code).toBe('0');
    expect(fromBinary(JWTSVIDResponseSchema, messages(zipped.body)[0] as Buffer).svids[0]?.svid).toBe('zipped');
    const brotli = await call(JWT, envelope(brotliCompressSync(raw), 1), { 'grpc-encoding': 'br' });
    expect(fromBinary(JWTSVIDResponseSchema, messages(brotli.body)[0] as Buffer).svids[0]?.svid).toBe('zipped');
  });

  it.each([
    ['a ConnectError: its code and message (percent-encoded)', 'denied', '7', 'not yours: ü'],
    ['anything else: INTERNAL "internal error", its text kept in the agent', 'throw', '13', 'internal error'],
  ])('answers an error thrown by the implementation, %s', async (_name, audience, code, message) => {
    await serve();
    const answer = await call(JWT, jwtRequest([audience]));
    // Trailers-only: nothing was sent before the error.
    expect(answer.headers['grpc-status']).toBe(code);
    expect(answer.code).toBe(code);
    expect(answer.message).toBe(message);
    expect(answer.body.length).toBe(0);
  });

  it.each([
    ['a method other than POST', { ':method': 'PUT' }, 405],
    ['a content type other than gRPC', { 'content-type': 'application/json' }, 415],
    ['gRPC with JSON messages', { 'content-type': 'application/grpc+json' }, 415],
  ])('answers %s with an HTTP status alone', async (_name, headers, status) => {
    await serve();
    const answer = await call(JWT, jwtRequest(['a']), headers);
    expect(answer.status).toBe(status);
    expect(answer.code).toBeUndefined();
    expect(ended).toEqual([]);
  });

  it.each([
    ['a path no service has', '/SpiffeWorkloadAPI/Nope', jwtRequest(['a']), {}, '12', /is not implemented$/],
    [
      'a method the implementation lacks',
      '/SpiffeWorkloadAPI/ValidateJWTSVID',
      envelope(new Uint8Array()),
      {},
      '12',
      /not implemented/,
    ],
    ['an invalid grpc-timeout', JWT, jwtRequest(['a']), { 'grpc-timeout': '5 seconds' }, '3', /invalid grpc timeout/],
    [
      'an unknown encoding',
      JWT,
      jwtRequest(['a']),
      { 'grpc-encoding': 'deflate' },
      '12',
      /unknown compression "deflate"/,
    ],
    ['no request message', JWT, Buffer.alloc(0), {}, '12', /missing input message/],
    [
      'two request messages',
      JWT,
      Buffer.concat([jwtRequest(['a']), jwtRequest(['b'])]),
      {},
      '12',
      /extra input message/,
    ],
    ['a cut envelope', JWT, jwtRequest(['a']).subarray(0, 7), {}, '3', /incomplete envelope/],
    ['bytes the decoder refuses', JWT, envelope(Buffer.from([0x0a, 0x09, 0x61])), {}, '13', /^parse binary: /],
    [
      'a compressed message without an encoding',
      JWT,
      envelope(Buffer.from([1, 2]), 1),
      {},
      '13',
      /do not know how to decompress/,
    ],
    [
      'an envelope announcing more than readMaxBytes',
      JWT,
      Buffer.from([0, 0, 1, 0, 1]),
      {},
      '8',
      /message size 65537 is larger/,
    ],
    [
      'a compressed message that inflates past readMaxBytes',
      JWT,
      envelope(gzipSync(new Uint8Array(READ_MAX + 1)), 1),
      { 'grpc-encoding': 'gzip' },
      '8',
      /after decompression/,
    ],
    [
      'a compressed message that is not gzip',
      JWT,
      envelope(Buffer.from('not gzip'), 1),
      { 'grpc-encoding': 'gzip' },
      '3',
      /^decompress: /,
    ],
  ])('refuses %s', async (_name, path, body, headers, code, message) => {
    await serve();
    const answer = await call(path, body, headers);
    expect(answer.status).toBe(200);
    expect(answer.code).toBe(code);
    expect(answer.message).toMatch(message);
    if (code === '12' && _name === 'an unknown encoding')
      expect(answer.headers['grpc-accept-encoding']).toBe('gzip,br');
  });

  it("refuses a second request message of a unary call as soon as its prefix arrives, before its body or the client's end", async () => {
    await serve();
    // Never half-closed, and the second message's 1 MiB body never sent: the answer waits for neither.
    const answer = await call(JWT, undefined, {}, (stream) => {
      stream.write(Buffer.concat([jwtRequest(['a']), Buffer.from([0, 0, 0x0f, 0xff, 0xff])]));
    });
    expect([answer.code, answer.message]).toEqual([
      '12',
      'protocol error: received extra input message for unary method',
    ]);
    expect(contexts).toEqual([]);
  });

  it('drops the unknown fields of a request message rather than keeping one object per field', async () => {
    await serve();
    let seen: JWTSVIDRequest | undefined;
    router.service(SpiffeWorkloadAPI, {
      fetchJWTSVID: (request: JWTSVIDRequest) => {
        seen = request;
        return { svids: [] };
      },
    });
    // audience "a", then field 15 (varint) a thousand times.
    const unknown = Buffer.alloc(2000);
    for (let i = 0; i < 1000; i++) unknown.set([15 << 3, 1], i * 2);
    const body = Buffer.concat([Buffer.from([0x0a, 0x01, 0x61]), unknown]);
    expect((await call(JWT, envelope(body))).code).toBe('0');
    expect(seen?.audience).toEqual(['a']);
    expect(seen?.$unknown).toBeUndefined();
  });

  it('sends the trailers, then RST_STREAM NO_ERROR, when it ends a stream whose client has not half-closed', async () => {
    await serve();
    router.service(SecretDiscoveryService, {
      async *streamSecrets() {
        yield create(DiscoveryResponseSchema, { versionInfo: 'v1' });
        throw new ConnectError('the SVIDs expired', Code.Unavailable);
      },
    });
    let rstCode: number | undefined;
    const answer = await call(
      '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
      undefined,
      {},
      (stream) => {
        stream.write(envelope(toBinary(DiscoveryRequestSchema, create(DiscoveryRequestSchema, {}))));
        stream.once('close', () => (rstCode = stream.rstCode));
      },
    );
    expect(messages(answer.body)).toHaveLength(1);
    expect([answer.code, answer.message]).toEqual(['14', 'the SVIDs expired']);
    expect(rstCode).toBe(0);
  });

  it('refuses twenty request messages of a unary call sent one frame each (no reading stalls)', async () => {
    await serve();
    const answer = await call(JWT, undefined, {}, (stream) => {
      for (let i = 0; i < 20; i++) stream.write(jwtRequest([`m${i}`]));
      stream.end();
    });
    expect(answer.code).toBe('12');
  });

  it('reads no further into a bidi stream than the one message its handler has not taken (flow control holds the client)', async () => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    await serve();
    router.service(SecretDiscoveryService, {
      async *streamSecrets(requests: AsyncIterable<DiscoveryRequest>) {
        await released;
        for await (const request of requests)
          yield create(DiscoveryResponseSchema, { versionInfo: request.versionInfo });
      },
    });
    const big = (version: string): Buffer =>
      envelope(
        toBinary(
          DiscoveryRequestSchema,
          create(DiscoveryRequestSchema, { versionInfo: version, responseNonce: 'x'.repeat(60 * 1024) }),
        ),
      );
    // What the server read off the stream while the handler was not taking anything.
    let read = 0;
    let readBeforeRelease = 0;
    server.on('stream', (stream) => stream.on('data', (chunk: Buffer) => (read += chunk.length)));
    const answer = call('/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets', undefined, {}, (stream) => {
      for (let i = 0; i < 40; i++) stream.write(big(`v${i}`));
      setTimeout(() => {
        readBeforeRelease = read;
        release();
        stream.end();
      }, 300);
    });
    const versions = messages((await answer).body).map(
      (bytes) => fromBinary(DiscoveryResponseSchema, bytes).versionInfo,
    );
    expect(versions).toEqual(Array.from({ length: 40 }, (_, i) => `v${i}`));
    // One message waiting for the handler, the next being assembled, and the HTTP/2 stream window (64 KiB): ~190 KiB
    // of the ~2.4 MB written.
    expect(readBeforeRelease).toBeGreaterThan(0);
    expect(readBeforeRelease).toBeLessThan(4 * 61 * 1024);
  });

  it('ends a call past its grpc-timeout with DEADLINE_EXCEEDED and aborts the handler', async () => {
    await serve();
    const answer = await call(JWT, jwtRequest(['wait']), { 'grpc-timeout': '50m' });
    expect(answer.code).toBe(String(Code.DeadlineExceeded));
    expect(contexts[0]?.signal.reason).toMatchObject({ code: Code.DeadlineExceeded });
    expect(ended).toEqual([{ rpc: 'FetchJWTSVID', code: Code.DeadlineExceeded }]);
  });

  it('aborts the handler with CANCELED when the client leaves, and counts the call CANCELED', async () => {
    await serve();
    const left = call('/SpiffeWorkloadAPI/FetchX509Bundles', envelope(new Uint8Array()), {}, (stream) => {
      stream.once('ready', () => setTimeout(() => stream.close(), 50));
    });
    await left;
    await expect.poll(() => ended).toEqual([{ rpc: 'FetchX509Bundles', code: Code.Canceled }]);
    expect(contexts[0]?.signal.reason).toMatchObject({ code: Code.Canceled });
  });

  it('ends open streams with the reason abortAll is given', async () => {
    await serve();
    const answer = call('/SpiffeWorkloadAPI/FetchX509Bundles', envelope(new Uint8Array()));
    await expect.poll(() => contexts.length).toBe(1);
    router.abortAll(new ConnectError('the agent is shutting down', Code.Unavailable));
    expect((await answer).code).toBe(String(Code.Unavailable));
    expect((await answer).message).toBe('the agent is shutting down');
  });

  it('holds a unary RESOURCE_EXHAUSTED for unaryRefusalHoldMs, not other errors', async () => {
    await serve({ unaryRefusalHoldMs: 300 });
    let start = performance.now();
    expect((await call(JWT, jwtRequest(['exhausted']))).code).toBe(String(Code.ResourceExhausted));
    expect(performance.now() - start).toBeGreaterThanOrEqual(290);
    start = performance.now();
    expect((await call(JWT, jwtRequest(['denied']))).code).toBe(String(Code.PermissionDenied));
    expect(performance.now() - start).toBeLessThan(290);
  });

  it('refuses a call checkCall throws for, before reading its request, and counts it', async () => {
    await serve({
      checkCall: (call) => {
        if (call.headers['x-let-in'] !== 'yes') throw new ConnectError('not let in', Code.InvalidArgument);
      },
    });
    const refused = await call(JWT, jwtRequest(['a']));
    expect([refused.code, refused.message]).toEqual(['3', 'not let in']);
    expect(contexts).toEqual([]);
    expect((await call(JWT, jwtRequest(['a']), { 'x-let-in': 'yes' })).code).toBe('0');
    expect(ended).toEqual([
      { rpc: 'FetchJWTSVID', code: Code.InvalidArgument },
      { rpc: 'FetchJWTSVID', code: 'OK' },
    ]);
  });

  it('sends a stream only as fast as the client reads it', async () => {
    await serve();
    let received = 0;
    const answer = call('/SpiffeWorkloadAPI/FetchX509SVID', envelope(new Uint8Array()), {}, (stream) => {
      // Read 1 MiB, then stop reading for a while: the server must stop producing (flow control), not buffer.
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > 1024 * 1024 && !stream.isPaused()) {
          stream.pause();
          setTimeout(() => {
            stream.close();
            stream.resume();
          }, 300);
        }
      });
    });
    await answer;
    // The generator ran ahead of the client by at most the HTTP/2 windows and a message or two, not for 300 ms.
    expect(contexts[0]?.signal.aborted).toBe(true);
    expect(received).toBeGreaterThan(1024 * 1024);
    expect(produced * 256 * 1024 - received).toBeLessThan(2 * 1024 * 1024);
    await expect.poll(() => ended).toEqual([{ rpc: 'FetchX509SVID', code: Code.Canceled }]);
  });

  it('hands a bidi stream its requests in order, reading on as the handler takes them, and answers each', async () => {
    await serve();
    const path = '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets';
    const request = (version: string): Buffer =>
      envelope(toBinary(DiscoveryRequestSchema, create(DiscoveryRequestSchema, { versionInfo: version })));
    // More requests at once than the router queues before it stops reading (16).
    const answer = await call(path, Buffer.concat(Array.from({ length: 50 }, (_, i) => request(`v${i}`))));
    expect(answer.code).toBe('0');
    const versions = messages(answer.body).map((bytes) => fromBinary(DiscoveryResponseSchema, bytes).versionInfo);
    expect(versions).toEqual(Array.from({ length: 50 }, (_, i) => `v${i}`));
  });
});
