/**
 * The Workload API client's gRPC channel (libs/workload-api/src/grpc-channel.ts) against a raw node:http2 server
 * that answers what a broken or hostile endpoint could: the protocol's edge cases that the agent's real server
 * (client.spec.ts) never produces. Each case goes through WorkloadApiClient, so the gRPC status reaches the caller
 * as WorkloadApiError `status`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import {
  type ClientHttp2Stream,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
  createServer,
} from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WorkloadApiClient } from '../../../libs/workload-api/src/client.js';
import { WorkloadApiError } from '../../../libs/workload-api/src/errors.js';
import { JWTBundlesResponseSchema } from '../../../libs/workload-api/src/gen/workload_pb.js';
import {
  CallState,
  MAX_RESPONSE_MESSAGE_BYTES,
  QUEUE_HIGH_WATER,
} from '../../../libs/workload-api/src/grpc-channel.js';

type Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

/** A gRPC message frame: flags, big-endian length, bytes. */
function frame(message: Uint8Array, flags = 0, length = message.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(flags, 0);
  prefix.writeUInt32BE(length, 1);
  return Buffer.concat([prefix, message]);
}

const JWKS = new TextEncoder().encode(
  JSON.stringify({
    keys: [
      {
        kty: 'EC',
        kid: 'k1',
        crv: 'P-256',
        x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU',
        y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0',
      },
    ],
  }),
);
const BUNDLES = toBinary(
  JWTBundlesResponseSchema,
  create(JWTBundlesResponseSchema, { bundles: { 'spiffe://example.org': JWKS } }),
);
const GRPC = { ':status': 200, 'content-type': 'application/grpc' };

describe('the Workload API client against a raw HTTP/2 endpoint', () => {
  let dir: string;
  let server: Http2Server;
  let handler: Handler;
  let client: WorkloadApiClient;
  const seen: IncomingHttpHeaders[] = [];
  const closed: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-grpc-channel-'));
    server = createServer();
    server.on('stream', (stream, headers) => {
      seen.push(headers);
      stream.on('close', () => closed.push(String(headers[':path'])));
      stream.on('error', () => undefined);
      handler(stream, headers);
    });
    await new Promise<void>((done) => server.listen(join(dir, 'api.sock'), done));
    client = new WorkloadApiClient({ address: `unix://${join(dir, 'api.sock')}` });
  });

  afterEach(() => {
    seen.length = 0;
    closed.length = 0;
  });

  afterAll(async () => {
    await client?.close();
    await new Promise((done) => server?.close(done));
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * The status of the failed fetchJwtBundles (server-streaming: the first message is the answer), or with `unary` of
   * fetchJwtSvid (which reads up to the status), or 'ok'.
   */
  async function statusOf(reply: Handler, unary = false): Promise<{ status: string; message: string }> {
    handler = reply;
    const signal = AbortSignal.timeout(10_000);
    try {
      await (unary ? client.fetchJwtSvid({ audience: 'a', signal }) : client.fetchJwtBundles({ signal }));
      return { status: 'ok', message: '' };
    } catch (error) {
      if (!(error instanceof WorkloadApiError)) throw error;
      return { status: error.status ?? error.code, message: error.message };
    }
  }

  it('sends a gRPC request with the security header, and reads messages split across DATA frames', async () => {
    const result = await statusOf((stream) => {
      stream.respond(GRPC, { waitForTrailers: true });
      const framed = frame(BUNDLES);
      stream.write(framed.subarray(0, 3));
      stream.write(framed.subarray(3, 20));
      stream.end(framed.subarray(20));
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    });
    expect(result.status).toBe('ok');
    expect(seen[0]).toMatchObject({
      ':method': 'POST',
      ':path': '/SpiffeWorkloadAPI/FetchJWTBundles',
      'content-type': 'application/grpc+proto',
      te: 'trailers',
      'workload.spiffe.io': 'true',
    });
  });

  it('reports a trailers-only status with its percent-decoded message', async () => {
    const result = await statusOf((stream) =>
      stream.respond(
        { ...GRPC, 'grpc-status': '7', 'grpc-message': 'no%20identity%20for%20uid%201000' },
        { endStream: true },
      ),
    );
    expect(result).toEqual({
      status: 'permission_denied',
      message: 'fetch jwt bundles: permission_denied: no identity for uid 1000',
    });
  });

  it('writes control characters of a status message as escapes (a hostile server cannot drive the terminal)', async () => {
    const result = await statusOf((stream) =>
      stream.respond(
        { ...GRPC, 'grpc-status': '7', 'grpc-message': 'denied%1B%5B2J%0Aforged%20log%20line%7F%E2%80%AE%E2%80%A8' },
        { endStream: true },
      ),
    );
    expect(result).toEqual({
      status: 'permission_denied',
      message: 'fetch jwt bundles: permission_denied: denied\\u001b[2J\\u000aforged log line\\u007f\\u202e\\u2028',
    });
  });

  it('maps an HTTP status without grpc-status as the gRPC specification does', async () => {
    expect((await statusOf((stream) => stream.respond({ ':status': 503 }, { endStream: true }))).status).toBe(
      'unavailable',
    );
    expect((await statusOf((stream) => stream.respond({ ':status': 404 }, { endStream: true }))).status).toBe(
      'unimplemented',
    );
    const html = await statusOf((stream) => {
      stream.respond({ ':status': 200, 'content-type': 'text/html' });
      stream.end('<html>');
    });
    expect(html.status).toBe('unknown');
  });

  it('refuses a response message longer than 4 MiB before reading it, and cancels the stream', async () => {
    const result = await statusOf((stream) => {
      stream.respond(GRPC);
      stream.write(frame(new Uint8Array(16), 0, MAX_RESPONSE_MESSAGE_BYTES + 1));
    });
    expect(result.status).toBe('resource_exhausted');
    await expect.poll(() => closed).toContain('/SpiffeWorkloadAPI/FetchJWTBundles');
  });

  it('refuses a compressed message, which it never offered to accept', async () => {
    const result = await statusOf((stream) => {
      stream.respond({ ...GRPC, 'grpc-encoding': 'gzip' });
      stream.write(frame(BUNDLES, 1));
    });
    expect(result).toMatchObject({ status: 'internal', message: expect.stringContaining('compression') });
  });

  it('refuses a response that ends without grpc-status, or in the middle of a message', async () => {
    const noStatus = await statusOf((stream) => {
      stream.respond(GRPC);
      stream.end(frame(BUNDLES));
    }, true);
    expect(noStatus).toMatchObject({ status: 'internal', message: expect.stringContaining('without grpc-status') });
    const cut = await statusOf((stream) => {
      stream.respond(GRPC, { waitForTrailers: true });
      stream.end(frame(BUNDLES).subarray(0, 12));
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    }, true);
    expect(cut).toMatchObject({ status: 'internal', message: expect.stringContaining('bytes after the last message') });
  });

  it('a message that does not decode ends the call with internal', async () => {
    const result = await statusOf((stream) => {
      stream.respond(GRPC);
      stream.write(frame(new Uint8Array([0x0a, 0x05, 0x01])));
    });
    expect(result).toMatchObject({ status: 'internal', message: expect.stringContaining('cannot decode') });
  });

  it('a unary call with two response messages is a cardinality violation (unimplemented)', async () => {
    handler = (stream) => {
      stream.respond(GRPC, { waitForTrailers: true });
      const token = toBinary(
        JWTBundlesResponseSchema,
        create(JWTBundlesResponseSchema, { bundles: {} }), // an empty message: a valid JWTSVIDResponse too
      );
      stream.end(Buffer.concat([frame(token), frame(token)]));
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    };
    await expect(client.fetchJwtSvid({ audience: 'a' })).rejects.toMatchObject({ status: 'unimplemented' });
  });

  it('an aborted call cancels its stream on the server', async () => {
    handler = (stream) => stream.respond(GRPC);
    const controller = new AbortController();
    const call = client.fetchX509Context({ signal: controller.signal });
    await expect.poll(() => seen.length).toBe(1);
    controller.abort(new Error('stop'));
    await expect(call).rejects.toThrow('stop');
    await expect.poll(() => closed).toContain('/SpiffeWorkloadAPI/FetchX509SVID');
  });
});

describe('a call that receives faster than it is read', () => {
  it('stops reading the stream while 16 messages wait, and reads again once they are taken', async () => {
    const stream = new PassThrough();
    const call = new CallState(stream as unknown as ClientHttp2Stream);
    stream.emit('response', GRPC);
    stream.emit('data', Buffer.concat(Array.from({ length: QUEUE_HIGH_WATER + 4 }, () => frame(BUNDLES))));
    expect(stream.isPaused()).toBe(true);
    for (let read = 0; read < 4; read++) await call.next();
    expect(stream.isPaused()).toBe(true); // still 16 waiting
    await call.next();
    expect(stream.isPaused()).toBe(false);
  });
});
