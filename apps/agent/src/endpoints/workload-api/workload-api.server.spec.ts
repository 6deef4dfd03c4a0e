import { once } from 'node:events';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { connect as http2Connect, constants as http2Constants, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SpiffeId, TrustBundle, TrustDomain, parseAndValidateJwtSvid, verifyX509Svid } from '@sigil/spiffe';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  isRoot,
  makeSetgidSleep,
  spawnRelayCaller,
  spawnSetgidExecCaller,
} from '../../../../../test/support/relay-caller.js';
import { TestCa } from '../../../../../test/support/test-ca.js';
import { FakeIdentityCache, type FakeEntry, JWT_KID } from '../../../../../test/support/fake-workload-api.js';
import { UnixWorkloadAttestor } from '../../attestor/workload/unix/unix-attestor.js';
import { CompositeWorkloadAttestor } from '../../attestor/workload/workload-attestor.js';
import { JwtSvidLimitError } from '../../manager/jwt-signing-lane.js';
import { WorkloadApiHandler } from './workload-api.handler.js';
import {
  WORKLOAD_API_LIMITS,
  type WorkloadApiLimits,
  WorkloadApiServer,
  type WorkloadApiServerOptions,
} from './workload-api.server.js';
import { type WorkloadIdentity } from './workload-responses.js';

const quiet = { debug: () => undefined, warn: () => undefined, log: () => undefined };
const REPO = fileURLToPath(new URL('../../../../../', import.meta.url));
const PROTO = join(REPO, 'libs/workload-api/proto/workload.proto');

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
type Message = Record<string, unknown>;

const securityHeader = (): grpc.Metadata => {
  const metadata = new grpc.Metadata();
  metadata.set('workload.spiffe.io', 'true');
  return metadata;
};

/** One HPACK "literal header field without indexing, new name" with short, non-Huffman strings (RFC 7541 §6.2.2). */
function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x00, name.length]),
    Buffer.from(name),
    Buffer.from([value.length]),
    Buffer.from(value),
  ]);
}

function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header.writeUInt8(type, 3);
  header.writeUInt8(flags, 4);
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/**
 * An HTTP/2 client written frame by frame, so that it can do what well-behaved clients (nghttp2, grpc-js) never do:
 * open more streams than the server's SETTINGS_MAX_CONCURRENT_STREAMS. It reports the RST_STREAM and GOAWAY frames
 * the server answers with.
 */
function rawHttp2Attacker(path: string) {
  const socket: Socket = netConnect(path);
  const resets = new Map<number, number>();
  let goAway: { lastStreamId: number; errorCode: number } | undefined;
  let buffered = Buffer.alloc(0);
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9 && buffered.length >= 9 + buffered.readUIntBE(0, 3)) {
      const length = buffered.readUIntBE(0, 3);
      const type = buffered.readUInt8(3);
      const streamId = buffered.readUInt32BE(5) & 0x7fffffff;
      const payload = buffered.subarray(9, 9 + length);
      if (type === 0x3) resets.set(streamId, payload.readUInt32BE(0));
      if (type === 0x7)
        goAway = { lastStreamId: payload.readUInt32BE(0) & 0x7fffffff, errorCode: payload.readUInt32BE(4) };
      buffered = buffered.subarray(9 + length);
    }
  });
  return {
    resets,
    goAway: () => goAway,
    closed: new Promise<void>((resolve) => socket.once('close', () => resolve())),
    /** Sends the preface and opens `count` FetchX509SVID streams whose request never comes (no END_STREAM). */
    async openStreams(count: number): Promise<void> {
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      const headers = Buffer.concat([
        hpackLiteral(':method', 'POST'),
        hpackLiteral(':scheme', 'http'),
        hpackLiteral(':path', '/SpiffeWorkloadAPI/FetchX509SVID'),
        hpackLiteral(':authority', 'localhost'),
        hpackLiteral('content-type', 'application/grpc'),
        hpackLiteral('te', 'trailers'),
        hpackLiteral('workload.spiffe.io', 'true'),
      ]);
      const frames = [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), h2Frame(0x4, 0, 0, Buffer.alloc(0))];
      for (let i = 0; i < count; i++) frames.push(h2Frame(0x1, 0x4, 2 * i + 1, headers));
      socket.write(Buffer.concat(frames));
    },
    close: () => socket.destroy(),
  };
}

describe('Workload API over the Unix socket', () => {
  const uid = process.geteuid!();
  const example = TrustDomain.parse('example.org');
  let dir: string;
  let socketPath: string;
  let ca: TestCa;
  let federatedCa: TestCa;
  let jwtKeys: webcrypto.CryptoKeyPair;
  let cache: FakeIdentityCache;
  let server: WorkloadApiServer;
  let client: Client;

  async function identity(path: string, options: Partial<WorkloadIdentity> = {}): Promise<WorkloadIdentity> {
    const spiffeId = SpiffeId.fromPath(example, path);
    const svid = await ca.createX509Svid(spiffeId.toString());
    return {
      entryId: `entry-${path}`,
      spiffeId,
      hint: '',
      federatesWith: [],
      x509Svid: { chain: svid.chainDer(), privateKey: await svid.privateKeyPkcs8() },
      ...options,
    };
  }

  function unary(method: string, request: Message, metadata = securityHeader()): Promise<Message> {
    return new Promise((resolve, reject) => {
      client[method]!(request, metadata, (error: grpc.ServiceError | null, response: Message) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  /** Opens a server stream and hands out its messages one by one. */
  function stream(method: string, metadata = securityHeader()) {
    const call = client[method]!({}, metadata) as grpc.ClientReadableStream<Message>;
    const queue: Message[] = [];
    const waiters: (() => void)[] = [];
    let failure: grpc.ServiceError | undefined;
    const wake = () => waiters.splice(0).forEach((w) => w());
    call.on('data', (message: Message) => (queue.push(message), wake()));
    call.on('error', (error: grpc.ServiceError) => ((failure = error), wake()));
    call.on(
      'end',
      () => ((failure ??= new Error('stream ended without an error status') as grpc.ServiceError), wake()),
    );
    return {
      call,
      async next(): Promise<Message> {
        while (queue.length === 0 && failure === undefined) await new Promise<void>((r) => waiters.push(r));
        if (queue.length > 0) return queue.shift()!;
        throw failure;
      },
    };
  }

  beforeAll(async () => {
    ca = await (await TestCa.create(example)).createIntermediate();
    federatedCa = await TestCa.create('other.org');
    jwtKeys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ])) as webcrypto.CryptoKeyPair;
    dir = await mkdtemp(join(tmpdir(), 'sigil-wl-'));
    await chmod(dir, 0o755); // lets the test child running as another user reach the socket
    socketPath = join(dir, 'nested', 'public', 'api.sock');
    const definition = protoLoader.loadSync(PROTO, { keepCase: true });
    const Service = grpc.loadPackageDefinition(definition)['SpiffeWorkloadAPI'] as grpc.ServiceClientConstructor;
    client = new Service(`unix://${socketPath}`, grpc.credentials.createInsecure()) as unknown as Client;
  });

  beforeEach(async () => {
    cache = new FakeIdentityCache(jwtKeys.privateKey);
    const { x, y } = await webcrypto.subtle.exportKey('jwk', jwtKeys.publicKey);
    cache.agentBundles = {
      own: TrustBundle.create(example, {
        x509Authorities: [ca.root().certificate],
        jwtAuthorities: { [JWT_KID]: { kty: 'EC', crv: 'P-256', x, y } },
      }),
      federated: [federatedCa.bundle(), (await TestCa.create('third.org')).bundle()],
    };
    cache.entries = [
      {
        selectors: [{ type: 'unix', value: `uid:${uid}` }],
        identity: await identity('/web', { hint: 'internal', federatesWith: [TrustDomain.parse('other.org')] }),
      },
    ];
    // As the agent wires it: the unix attestor behind the composite, whose errors keep the attestor's message.
    const attestor = new CompositeWorkloadAttestor([new UnixWorkloadAttestor({ logger: quiet })]);
    const handler = new WorkloadApiHandler(attestor, cache, { logger: quiet });
    server = new WorkloadApiServer({ socketPath, service: handler.service(), logger: quiet });
    await server.start();
  });

  afterEach(async () => {
    await server.stop();
  });

  afterAll(async () => {
    client.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the parent directories and a socket any local user can connect to', async () => {
    const stats = await stat(socketPath);
    expect(stats.isSocket()).toBe(true);
    expect(stats.mode & 0o777).toBe(0o777);
  });

  it('FetchX509SVID sends DER chain leaf first, PKCS#8 key, own bundle, hint and federated bundles', async () => {
    const { call, next } = stream('FetchX509SVID');
    const response = await next();
    call.cancel();
    const [svid, ...rest] = response['svids'] as Message[];
    expect(rest).toEqual([]);
    expect(svid).toMatchObject({ spiffe_id: 'spiffe://example.org/web', hint: 'internal' });
    const bundle = svid!['bundle'] as Buffer;
    expect(bundle).toEqual(Buffer.from(ca.root().certificate.rawData));
    const verified = await verifyX509Svid(
      new Uint8Array(svid!['x509_svid'] as Buffer),
      TrustBundle.fromX509Der(example, bundle),
    );
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/web');
    // leaf and intermediate from x509_svid, then the root from the bundle
    expect(verified.verifiedChain.map((c) => c.subject)).toEqual([
      verified.verifiedChain[0]!.subject,
      ca.certificate.subject,
      ca.root().certificate.subject,
    ]);
    const key = createPrivateKey({ key: svid!['x509_svid_key'] as Buffer, format: 'der', type: 'pkcs8' });
    const leafSpki = Buffer.from(verified.verifiedChain[0]!.publicKey.rawData);
    expect(createPublicKey(key).export({ type: 'spki', format: 'der' })).toEqual(leafSpki);
    // federates with other.org only: third.org's bundle is held but not sent
    expect(Object.keys(response['federated_bundles'] as Message)).toEqual(['spiffe://other.org']);
    expect((response['federated_bundles'] as Record<string, Buffer>)['spiffe://other.org']).toEqual(
      Buffer.from(federatedCa.certificate.rawData),
    );
  });

  it('FetchX509SVID sends the full state again on every change and PERMISSION_DENIED when nothing matches', async () => {
    const { next } = stream('FetchX509SVID');
    expect(((await next())['svids'] as Message[]).map((s) => s['spiffe_id'])).toEqual(['spiffe://example.org/web']);
    const db = await identity('/db');
    cache.update((c) => c.entries.push({ selectors: [{ type: 'unix', value: `uid:${uid}` }], identity: db }));
    expect(((await next())['svids'] as Message[]).map((s) => s['spiffe_id'])).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);
    cache.update((c) => (c.entries = []));
    await expect(next()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
  });

  it('FetchX509Bundles and FetchJWTBundles key bundles by spiffe://<td> and resend on change', async () => {
    const x509 = stream('FetchX509Bundles');
    const first = (await x509.next())['bundles'] as Record<string, Buffer>;
    expect(Object.keys(first).sort()).toEqual(['spiffe://example.org', 'spiffe://other.org']);
    expect(first['spiffe://example.org']).toEqual(Buffer.from(ca.root().certificate.rawData));
    const rotatedRoot = await TestCa.create(example);
    cache.update((c) => {
      c.agentBundles = {
        ...c.agentBundles!,
        own: c.agentBundles!.own.withX509Authorities([ca.root().certificate, rotatedRoot.certificate]),
      };
    });
    const second = (await x509.next())['bundles'] as Record<string, Buffer>;
    expect(second['spiffe://example.org']).toEqual(
      Buffer.concat([Buffer.from(ca.root().certificate.rawData), Buffer.from(rotatedRoot.certificate.rawData)]),
    );
    x509.call.cancel();

    const jwt = stream('FetchJWTBundles');
    const jwks = (await jwt.next())['bundles'] as Record<string, Buffer>;
    jwt.call.cancel();
    expect(Object.keys(jwks).sort()).toEqual(['spiffe://example.org', 'spiffe://other.org']);
    const { keys } = JSON.parse(jwks['spiffe://example.org']!.toString()) as { keys: Message[] };
    expect(keys).toEqual([expect.objectContaining({ kid: JWT_KID, kty: 'EC', crv: 'P-256', use: 'jwt-svid' })]);
    expect(JSON.parse(jwks['spiffe://other.org']!.toString())).toEqual({ keys: [] });
  });

  it('FetchJWTSVID signs for every identity or only the requested one; ValidateJWTSVID checks it', async () => {
    const db = await identity('/db');
    cache.entries.push({ selectors: [{ type: 'unix', value: `uid:${uid}` }], identity: db });
    const all = (await unary('FetchJWTSVID', { audience: ['svc-a', 'svc-b'] }))['svids'] as Message[];
    expect(all.map((s) => [s['spiffe_id'], s['hint'] ?? ''])).toEqual([
      ['spiffe://example.org/web', 'internal'],
      ['spiffe://example.org/db', ''],
    ]);
    const one = (await unary('FetchJWTSVID', { audience: ['svc-a'], spiffe_id: 'spiffe://example.org/db' }))[
      'svids'
    ] as Message[];
    expect(one.map((s) => s['spiffe_id'])).toEqual(['spiffe://example.org/db']);
    const token = one[0]!['svid'] as string;
    const checked = await parseAndValidateJwtSvid(token, cache.agentBundles!.own, 'svc-a');
    expect(checked.spiffeId.toString()).toBe('spiffe://example.org/db');

    const validated = await unary('ValidateJWTSVID', { audience: 'svc-a', svid: token });
    expect(validated['spiffe_id']).toBe('spiffe://example.org/db');
    expect(validated['claims']).toMatchObject({
      fields: {
        sub: { stringValue: 'spiffe://example.org/db' },
        aud: { listValue: { values: [{ stringValue: 'svc-a' }] } },
      },
    });
    await expect(unary('ValidateJWTSVID', { audience: 'svc-z', svid: token })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining('audience'),
    });
  });

  it.each([
    ['FetchJWTSVID without audience', 'FetchJWTSVID', { audience: [] }, 'audience must be specified'],
    [
      'FetchJWTSVID with an empty audience',
      'FetchJWTSVID',
      { audience: ['a', ''] },
      'audience[1]: must not be empty or blank',
    ],
    ['FetchJWTSVID with a bad spiffe_id', 'FetchJWTSVID', { audience: ['a'], spiffe_id: 'http://x' }, 'spiffe_id: '],
    ['ValidateJWTSVID without audience', 'ValidateJWTSVID', { svid: 'x.y.z' }, 'audience must be specified'],
    ['ValidateJWTSVID without svid', 'ValidateJWTSVID', { audience: 'a' }, 'svid must be specified'],
    ['ValidateJWTSVID with garbage', 'ValidateJWTSVID', { audience: 'a', svid: 'x.y.z' }, ''],
  ])('%s is INVALID_ARGUMENT', async (_case, method, request, message) => {
    await expect(unary(method, request)).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: expect.stringContaining(message),
    });
  });

  it('refuses a request over 1 MiB with RESOURCE_EXHAUSTED', async () => {
    const svid = 'x'.repeat(1024 * 1024 + 1);
    await expect(unary('ValidateJWTSVID', { audience: 'a', svid })).rejects.toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
    });
  });

  it('FetchJWTSVID for a SPIFFE ID the caller does not hold is PERMISSION_DENIED', async () => {
    await expect(
      unary('FetchJWTSVID', { audience: ['a'], spiffe_id: 'spiffe://example.org/db' }),
    ).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' });
  });

  it.each([
    ['no header', new grpc.Metadata()],
    [
      'header "false"',
      (() => {
        const m = new grpc.Metadata();
        m.set('workload.spiffe.io', 'false');
        return m;
      })(),
    ],
  ])('refuses calls with %s: INVALID_ARGUMENT', async (_case, metadata) => {
    const expected = { code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' };
    await expect(unary('FetchJWTSVID', { audience: ['a'] }, metadata)).rejects.toMatchObject(expected);
    await expect(stream('FetchX509SVID', metadata).next()).rejects.toMatchObject(expected);
  });

  it('answers PERMISSION_DENIED to a caller no entry matches', async () => {
    cache.entries = [{ selectors: [{ type: 'unix', value: `uid:${uid + 1}` }], identity: cache.entries[0]!.identity }];
    const denied = { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' };
    await expect(stream('FetchX509SVID').next()).rejects.toMatchObject(denied);
    await expect(stream('FetchX509Bundles').next()).rejects.toMatchObject(denied);
    await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject(denied);
  });

  it('answers UNAVAILABLE while the agent is not ready', async () => {
    cache.agentBundles = undefined;
    await expect(stream('FetchX509SVID').next()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });

  it('ends open streams with UNAVAILABLE when the server stops, and removes the socket', async () => {
    const { next } = stream('FetchX509SVID');
    await next();
    await server.stop();
    await expect(next()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await expect(stat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  async function restartWith(
    limits: Partial<WorkloadApiLimits>,
    logger: WorkloadApiServerOptions['logger'] = quiet,
    clock?: WorkloadApiServerOptions['clock'],
  ): Promise<void> {
    await server.stop();
    server = new WorkloadApiServer({ socketPath, service: server.service, logger, limits, ...(clock && { clock }) });
    await server.start();
  }

  async function until(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await predicate())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async function servedEventually(caller: () => Promise<unknown>): Promise<void> {
    await until(async () => {
      const result = await caller().catch((error: unknown) => error);
      return JSON.stringify(result) === JSON.stringify({ ids: ['spiffe://example.org/web'] });
    }, 'the caller to be served');
  }

  const nobodyEntry = async (): Promise<FakeEntry> => ({
    selectors: [{ type: 'unix', value: 'uid:65534' }],
    identity: await identity('/nobody'),
  });

  it('answers a client that accepts gzip with uncompressed messages, and still reads a gzip-compressed request', async () => {
    const session: ClientHttp2Session = http2Connect('http://localhost', {
      createConnection: () => netConnect(socketPath),
    });
    /** One call with a raw HTTP/2 client: the response's grpc-status and its first message's envelope flag. */
    const call = async (path: string, body: Buffer, headers: Record<string, string>) => {
      const stream = session.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'workload.spiffe.io': 'true',
        'grpc-accept-encoding': 'gzip',
        ...headers,
      });
      const chunks: Buffer[] = [];
      let status: string | undefined;
      // The status comes in the trailers, or in the headers of a trailers-only answer.
      stream.on('response', (response) => {
        if (response['grpc-status'] !== undefined) status = String(response['grpc-status']);
      });
      stream.on('trailers', (trailers) => (status = String(trailers['grpc-status'])));
      stream.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        // A stream's first message is enough; then the call is cancelled.
        if (path.endsWith('/FetchX509SVID')) stream.close();
      });
      stream.end(body);
      await once(stream, 'close');
      const data = Buffer.concat(chunks);
      return { status, flag: data.length >= 5 ? data.readUInt8(0) : undefined, length: data.length };
    };
    try {
      // An empty X509SVIDRequest, uncompressed: the answer is one envelope with the compressed flag clear.
      const x509 = await call('/SpiffeWorkloadAPI/FetchX509SVID', Buffer.from([0, 0, 0, 0, 0]), {});
      expect(x509.length).toBeGreaterThan(500);
      expect(x509.flag).toBe(0);
      // A gzip-compressed ValidateJWTSVIDRequest (audience "a", svid "x"): read, and answered INVALID_ARGUMENT
      // for the token, not UNIMPLEMENTED or INTERNAL for the compression.
      const request = gzipSync(Buffer.from([0x0a, 0x01, 0x61, 0x12, 0x01, 0x78]));
      const envelope = Buffer.alloc(5);
      envelope.writeUInt8(1, 0);
      envelope.writeUInt32BE(request.length, 1);
      const validate = await call('/SpiffeWorkloadAPI/ValidateJWTSVID', Buffer.concat([envelope, request]), {
        'grpc-encoding': 'gzip',
      });
      expect(validate.status).toBe(String(grpc.status.INVALID_ARGUMENT));
    } finally {
      session.destroy();
    }
  });

  // Linux caps the listen backlog at net.core.somaxconn; below 1,000 this host cannot hold them whatever the agent asks.
  const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
  it.skipIf(somaxconn < 1000)(
    'holds 1,000 connections made at once, before it accepts any, in its listen backlog (none refused with EAGAIN)',
    async () => {
      // All 1,000 connect(2) calls happen in this synchronous loop (libuv connects Unix sockets at once), so the server,
      // on this same event loop, accepts none of them before the last: each must wait in the kernel's backlog.
      const sockets: Socket[] = [];
      const outcomes: Promise<string>[] = [];
      for (let i = 0; i < 1000; i++) {
        const socket = netConnect(socketPath);
        sockets.push(socket);
        outcomes.push(
          new Promise((resolve) => {
            socket.once('connect', () => resolve('connected'));
            socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
          }),
        );
      }
      try {
        const results = await Promise.all(outcomes);
        const refused = results.filter((result) => result !== 'connected');
        expect(refused.slice(0, 3)).toEqual([]);
        expect(results).toHaveLength(1000);
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    },
  );

  it('advertises SETTINGS_MAX_CONCURRENT_STREAMS (32) to every connection', async () => {
    const session: ClientHttp2Session = http2Connect('http://localhost', {
      createConnection: () => netConnect(socketPath),
    });
    try {
      await once(session, 'remoteSettings');
      expect(session.remoteSettings.maxConcurrentStreams).toBe(WORKLOAD_API_LIMITS.maxStreamsPerConnection);
      expect(WORKLOAD_API_LIMITS.maxStreamsPerConnection).toBe(32);
    } finally {
      session.destroy();
    }
  });

  it('refuses the streams a connection opens beyond SETTINGS_MAX_CONCURRENT_STREAMS; another connection is served', async () => {
    const max = WORKLOAD_API_LIMITS.maxStreamsPerConnection;
    const attacker = rawHttp2Attacker(socketPath);
    try {
      await attacker.openStreams(max + 5);
      const refusedIds = () => [...attacker.resets].filter(([, code]) => code === 7).map(([id]) => id);
      await until(() => refusedIds().length === 5 || attacker.goAway() !== undefined, 'the excess streams refused');
      expect(attacker.goAway()).toBeUndefined();
      // REFUSED_STREAM (7) for exactly the streams past the limit: the first `max` stay open
      expect(refusedIds().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4].map((i) => 2 * (max + i) + 1));
      const { call, next } = stream('FetchX509SVID');
      expect(((await next())['svids'] as Message[]).map((s) => s['spiffe_id'])).toEqual(['spiffe://example.org/web']);
      call.cancel();
    } finally {
      attacker.close();
    }
  });

  it('answers RESOURCE_EXHAUSTED to a stream over the per-uid cap on any connection of that uid, logs it once, and serves again once a stream closes', async () => {
    const warnings: string[] = [];
    await restartWith(
      { maxStreamsPerUid: 3 },
      { ...quiet, warn: (line: { msg: string }) => void warnings.push(line.msg) },
    );
    const open = [stream('FetchX509SVID'), stream('FetchX509Bundles'), stream('FetchJWTBundles')];
    for (const s of open) await s.next();
    const exhausted = {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `too many open Workload API streams for uid ${uid} (at most 3)`,
    };
    await expect(stream('FetchX509SVID').next()).rejects.toMatchObject(exhausted);
    await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject(exhausted);
    // another connection (another process) of the same uid shares the cap
    const sameUid = await spawnRelayCaller(socketPath);
    try {
      expect(await sameUid.fetchX509SvidIds()).toEqual({ grpcStatus: 8, message: exhausted.details });
      expect(warnings).toEqual([
        `refusing Workload API streams of uid ${uid}: too many open Workload API streams for uid ${uid} (at most 3)`,
      ]);
      open[0]!.call.cancel();
      await servedEventually(() => sameUid.fetchX509SvidIds());
    } finally {
      await sameUid.close();
    }
  });

  it.skipIf(!isRoot)(
    'serves another uid while one uid is at its stream cap (root only: runs the other caller as nobody)',
    async () => {
      cache.entries.push(await nobodyEntry());
      await restartWith({ maxStreamsPerUid: 2 });
      const open = [stream('FetchX509SVID'), stream('FetchX509Bundles')];
      for (const s of open) await s.next();
      await expect(stream('FetchX509SVID').next()).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
      const nobody = await spawnRelayCaller(socketPath, { asNobody: true });
      try {
        expect(await nobody.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/nobody'] });
      } finally {
        await nobody.close();
        for (const s of open) s.call.cancel();
      }
    },
  );

  it('answers RESOURCE_EXHAUSTED to the calls of a uid past its rate of new calls, logs it once, and serves again once the bucket refills', async () => {
    const warnings: string[] = [];
    let now = Date.parse('2026-01-01T00:00:00Z');
    await restartWith(
      { streamRatePerUid: 2, streamBurstPerUid: 3, refusalHoldMs: 0 },
      { ...quiet, warn: (line: { msg: string }) => void warnings.push(line.msg) },
      { now: () => new Date(now) },
    );
    const tooFast = {
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `too many new Workload API calls for uid ${uid} (at most 2 per second, 3 at once); retry later`,
    };
    // unary calls end at once: only the rate, not the open-call cap, can refuse the fourth
    for (let i = 0; i < 3; i++) await expect(unary('FetchJWTSVID', { audience: ['a'] })).resolves.toBeDefined();
    await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject(tooFast);
    await expect(stream('FetchX509SVID').next()).rejects.toMatchObject(tooFast);
    // another process of the same uid shares the bucket
    const sameUid = await spawnRelayCaller(socketPath);
    try {
      expect(await sameUid.fetchX509SvidIds()).toEqual({ grpcStatus: 8, message: tooFast.details });
      expect(warnings).toEqual([`refusing Workload API calls of uid ${uid}: ${tooFast.details}`]);
      now += 500; // one token back
      expect(await sameUid.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/web'] });
      await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject(tooFast);
    } finally {
      await sameUid.close();
    }
  });

  it.skipIf(!isRoot)(
    'serves another uid while one uid is past its rate of new calls (root only: runs the other caller as nobody)',
    async () => {
      cache.entries.push(await nobodyEntry());
      await restartWith({ streamRatePerUid: 1, streamBurstPerUid: 1, refusalHoldMs: 0 }, quiet, {
        now: () => new Date(0),
      });
      await unary('FetchJWTSVID', { audience: ['a'] });
      await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject({
        code: grpc.status.RESOURCE_EXHAUSTED,
      });
      const nobody = await spawnRelayCaller(socketPath, { asNobody: true });
      try {
        expect(await nobody.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/nobody'] });
      } finally {
        await nobody.close();
      }
    },
  );

  it('holds the RESOURCE_EXHAUSTED of a call past the rate for refusalHoldMs, its stream counted until it ends', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    await restartWith(
      { streamRatePerUid: 1, streamBurstPerUid: 1, maxStreamsPerUid: 2, refusalHoldMs: 60_000 },
      quiet,
      {
        now: () => new Date(now),
      },
    );
    await unary('FetchJWTSVID', { audience: ['a'] });
    // Past the rate: held, unanswered, each holding one of the uid's two streams.
    const held = [stream('FetchX509SVID'), stream('FetchX509SVID')];
    const answered = held.map((s) =>
      s.next().then(
        () => 'served',
        (error: grpc.ServiceError) => error.details,
      ),
    );
    let settled = 0;
    for (const answer of answered) void answer.then(() => settled++);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled).toBe(0);
    // The uid's stream cap still answers at once.
    await expect(unary('FetchJWTSVID', { audience: ['a'] })).rejects.toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: `too many open Workload API streams for uid ${uid} (at most 2)`,
    });
    // Cancelled, the held calls give their streams back: once the bucket refills, the uid is served.
    for (const s of held) s.call.cancel();
    expect(await Promise.all(answered)).toEqual(['Cancelled on client', 'Cancelled on client']);
    now += 2000;
    await until(async () => {
      const result = await unary('FetchJWTSVID', { audience: ['a'] }).catch(
        (error: grpc.ServiceError) => error.details,
      );
      return typeof result !== 'string';
    }, 'a call of the uid to be served');
  });

  it('survives a client resetting with an error code a stream it holds past the rate (the stream never reaches the router)', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    await restartWith({ streamRatePerUid: 1, streamBurstPerUid: 1, refusalHoldMs: 60_000 }, quiet, {
      now: () => new Date(now),
    });
    await unary('FetchJWTSVID', { audience: ['a'] });
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown): void => void uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    try {
      const session = http2Connect('http://localhost', { createConnection: () => netConnect(socketPath) });
      session.on('error', () => undefined);
      const held = session.request({
        ':method': 'POST',
        ':path': '/SpiffeWorkloadAPI/FetchX509SVID',
        'content-type': 'application/grpc',
        te: 'trailers',
        'workload.spiffe.io': 'true',
      });
      held.on('error', () => undefined);
      held.end(Buffer.from([0, 0, 0, 0, 0]));
      await new Promise((resolve) => setTimeout(resolve, 100));
      // RST_STREAM INTERNAL_ERROR: node:http2 reports it on the server's stream as an 'error'.
      await new Promise((resolve) => held.close(http2Constants.NGHTTP2_INTERNAL_ERROR, () => resolve(undefined)));
      await new Promise((resolve) => setTimeout(resolve, 100));
      session.destroy();
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
    now += 2000;
    expect(await unary('FetchJWTSVID', { audience: ['a'] })).toBeDefined();
  });

  it("holds a unary call's RESOURCE_EXHAUSTED from the handler (a JWT-SVID limit) for refusalHoldMs; other errors at once", async () => {
    const refusal = new JwtSvidLimitError(uid, 'rate', `uid ${uid}: over its rate of JWT-SVIDs (test)`);
    const fetchJwtSvid = cache.fetchJwtSvid.bind(cache);
    cache.fetchJwtSvid = () => Promise.reject(refusal);
    const withDeadline = (ms: number) => {
      const metadata = securityHeader();
      return new Promise<grpc.ServiceError>((resolve) => {
        client['FetchJWTSVID']!(
          { audience: ['a'] },
          metadata,
          { deadline: Date.now() + ms },
          (error: grpc.ServiceError | null) => resolve(error!),
        );
      });
    };
    try {
      await restartWith({ refusalHoldMs: 60_000 });
      // Held: the client's deadline passes first.
      expect(await withDeadline(500)).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
      await restartWith({ refusalHoldMs: 0 });
      expect(await withDeadline(10_000)).toMatchObject({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: refusal.message,
      });
      // Not a refusal over a limit: answered at once, whatever the hold.
      await restartWith({ refusalHoldMs: 60_000 });
      cache.fetchJwtSvid = () => Promise.reject(new Error('server down'));
      expect(await withDeadline(10_000)).toMatchObject({ code: grpc.status.UNAVAILABLE });
    } finally {
      cache.fetchJwtSvid = fetchJwtSvid;
    }
  });

  it('holds more open streams than an AbortSignal warns about without a MaxListenersExceededWarning', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    const open = Array.from({ length: 30 }, () => stream('FetchX509SVID'));
    try {
      for (const s of open) await s.next();
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((line) => line.startsWith('MaxListenersExceededWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      for (const s of open) s.call.cancel();
    }
  });

  it('closes the connection of a uid over its connection cap, and accepts one again once another closes', async () => {
    await restartWith({ maxConnectionsPerUid: 2 });
    const callers = [await spawnRelayCaller(socketPath)];
    try {
      expect(await callers[0]!.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/web'] });
      callers.push(await spawnRelayCaller(socketPath));
      expect(await callers[1]!.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/web'] });
      callers.push(await spawnRelayCaller(socketPath));
      await expect(callers[2]!.fetchX509SvidIds()).rejects.toThrow();
      await callers[0]!.close();
      const again = await spawnRelayCaller(socketPath);
      callers.push(again);
      await servedEventually(() => again.fetchX509SvidIds());
    } finally {
      for (const caller of callers) await caller.close();
    }
  });

  it.skipIf(!isRoot)(
    "accepts another uid's connection while one uid is at its connection cap (root only: runs it as nobody)",
    async () => {
      cache.entries.push(await nobodyEntry());
      await restartWith({ maxConnectionsPerUid: 1 });
      const callers = [await spawnRelayCaller(socketPath)];
      try {
        expect(await callers[0]!.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/web'] });
        callers.push(await spawnRelayCaller(socketPath));
        await expect(callers[1]!.fetchX509SvidIds()).rejects.toThrow();
        callers.push(await spawnRelayCaller(socketPath, { asNobody: true }));
        expect(await callers[2]!.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/nobody'] });
      } finally {
        for (const caller of callers) await caller.close();
      }
    },
  );

  it('closes a connection with no open stream after the idle timeout, but not one with an open stream', async () => {
    await restartWith({ idleTimeoutMs: 200 });
    const idle: ClientHttp2Session = http2Connect('http://localhost', {
      createConnection: () => netConnect(socketPath),
    });
    idle.on('error', () => undefined);
    const idleClosed = once(idle, 'close');
    const busy = stream('FetchX509SVID');
    await busy.next();
    await idleClosed;
    // the busy connection outlived the timeout several times over: it still gets updates
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const db = await identity('/db');
    cache.update((c) => c.entries.push({ selectors: [{ type: 'unix', value: `uid:${uid}` }], identity: db }));
    expect(((await busy.next())['svids'] as Message[]).map((s) => s['spiffe_id'])).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);
    busy.call.cancel();
    // once its last stream is gone, it is idle too and gets closed
    await until(
      () => client.getChannel().getConnectivityState(false) === grpc.connectivityState.IDLE,
      'the idle gRPC connection to be closed',
    );
  });

  it('identifies another process of our uid by the kernel: it gets the identity of our uid', async () => {
    const caller = await spawnRelayCaller(socketPath);
    try {
      expect(await caller.fetchX509SvidIds()).toEqual({ ids: ['spiffe://example.org/web'] });
    } finally {
      await caller.close();
    }
  });

  it.skipIf(!isRoot)(
    'answers PERMISSION_DENIED to a process of another user, which no entry matches (root only: runs it as nobody)',
    async () => {
      const caller = await spawnRelayCaller(socketPath, { asNobody: true });
      try {
        expect(await caller.fetchX509SvidIds()).toEqual({ grpcStatus: 7, message: 'no identity issued' });
      } finally {
        await caller.close();
      }
    },
  );

  it.skipIf(!isRoot)(
    'gives nothing to a connection kept across a setgid exec of the process that opened it (root only: runs it as nobody)',
    async () => {
      const setgidSleep = await makeSetgidSleep(dir, 100);
      // What the attacker is after: the identity of the setgid program (its gid, path and digest).
      cache.entries.push({
        selectors: [{ type: 'unix', value: 'gid:100' }],
        identity: await identity('/setgid-program'),
      });
      const caller = await spawnSetgidExecCaller(socketPath, setgidSleep);
      try {
        expect(await caller.fetchX509SvidIds()).toEqual({
          grpcStatus: 14,
          message: `workload attestation failed: process ${caller.pid}: effective gid 100 differs from the connection's peer gid 65534`,
        });
      } finally {
        await caller.close();
      }
    },
  );

  it("refuses to start when a directory above the socket is not the agent's (squatted /tmp/sigil-agent)", async () => {
    await server.stop();
    const squatted = join(dir, 'squatted');
    await mkdir(join(squatted, 'public'), { recursive: true });
    await chmod(squatted, 0o777);
    const path = join(squatted, 'public', 'api.sock');
    await expect(
      new WorkloadApiServer({ socketPath: path, service: server.service, logger: quiet }).start(),
    ).rejects.toThrow(
      `unsafe socket directory: ${squatted} is writable by group or others (owner uid ${uid}, mode 0777)`,
    );
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    await server.start();
  });

  it.skipIf(uid !== 0)(
    'refuses a socket directory another user created first (root only: gives a directory to another user)',
    async () => {
      const squatted = join(dir, 'squatted-by-nobody');
      await mkdir(join(squatted, 'public'), { recursive: true, mode: 0o755 });
      await chown(squatted, 65534, 65534);
      const path = join(squatted, 'public', 'api.sock');
      await expect(
        new WorkloadApiServer({ socketPath: path, service: server.service, logger: quiet }).start(),
      ).rejects.toThrow(`unsafe socket directory: ${squatted} is owned by another user (owner uid 65534, mode 0755)`);
      await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    },
  );

  it('replaces a stale socket but refuses a live one or a path that is not a socket', async () => {
    await server.stop();
    const stale = createServer();
    await new Promise<void>((resolve) => stale.listen(socketPath, resolve));
    const second = new WorkloadApiServer({ socketPath, service: server.service, logger: quiet });
    await expect(second.start()).rejects.toThrow(`socketPath: another process is already serving ${socketPath}`);
    // close() keeps the file, as a crashed agent leaves it
    await new Promise<void>((resolve) => stale.close(() => resolve()));
    await writeFile(join(dir, 'plain-file'), '');
    await expect(
      new WorkloadApiServer({ socketPath: join(dir, 'plain-file'), service: server.service, logger: quiet }).start(),
    ).rejects.toThrow(`socketPath: ${join(dir, 'plain-file')} exists and is not a socket; refusing to replace it`);
    await server.start();
    expect((await stat(socketPath)).isSocket()).toBe(true);
    expect(() => new WorkloadApiServer({ socketPath: `/${'s'.repeat(107)}`, service: server.service })).toThrow(
      'socketPath: must be at most 107 bytes for a Unix socket, got 108',
    );
  });
});
