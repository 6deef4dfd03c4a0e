import { chmod, lstat, unlink } from 'node:fs/promises';
import {
  createServer,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { Code, ConnectError, type ServiceImpl, createContextValues } from '@connectrpc/connect';
import { RateLimitedLog, ContextLogger } from '@sigil/logging';
import {
  MAX_SOCKET_PATH_BYTES,
  prepareSocketDirectory,
  systemClock,
  TokenBucketRateLimiter,
  type Clock,
} from '@sigil/runtime';
import { SpiffeWorkloadAPI } from '@sigil/workload-api/service';
import { SecretDiscoveryService } from '@sigil/workload-api/envoy-sds';
import { type GrpcCall, GrpcRouter, failCall } from './grpc-router.js';
import { PEER_CREDENTIALS, type PeerCredentials, trackPeerCredentials } from '../peer-credentials.js';
import { PidFd } from '../pidfd.js';
import { checkSecurityHeader } from './security-header.js';
import { DEFAULT_WORKLOAD_API_SOCKET } from './default-socket.js';

export { DEFAULT_WORKLOAD_API_SOCKET };

/**
 * What one caller may hold open on the Workload API, so that one local user cannot starve the others (issue 16
 * finding 6: 5,000 streams on one connection grew the agent by 360 MB and delayed everyone's SVIDs by seconds).
 * Callers are counted by the uid the kernel reported for their connection (SO_PEERCRED).
 */
export interface WorkloadApiLimits {
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams past it on one connection are refused (RST_STREAM REFUSED_STREAM). */
  readonly maxStreamsPerConnection: number;
  /** Open calls of one uid over all its connections; the next call gets RESOURCE_EXHAUSTED until one ends. */
  readonly maxStreamsPerUid: number;
  /** Open connections of one uid; the next connection is closed as soon as it is accepted. */
  readonly maxConnectionsPerUid: number;
  /**
   * New calls of one uid per second over all its connections (a token bucket holding {@link streamBurstPerUid}):
   * past it, the call gets RESOURCE_EXHAUSTED before it is attested.
   */
  readonly streamRatePerUid: number;
  /** How many new calls one uid may make at once before {@link streamRatePerUid} applies. */
  readonly streamBurstPerUid: number;
  /**
   * How long a refused call waits for its RESOURCE_EXHAUSTED, in milliseconds, its stream counted in
   * {@link maxStreamsPerUid} meanwhile (a cancelled call ends at once): calls past {@link streamRatePerUid} (their
   * request unread), and unary calls the handler refuses with RESOURCE_EXHAUSTED (JWT-SVID limits, the server
   * rate-limiting the agent). A caller that retries at once, in a loop, then gets about as many answers a second as
   * it keeps calls open, not as many as the agent can refuse: answered at once, 64 `FetchJWTSVID` calls kept in
   * flight by one uid were refused ~900 times a second, and reading, decoding and attesting them took half a core
   * (`bench/dos/jwt-fanout.bench.ts`). Only the open-stream cap answers at once (holding would need the stream).
   */
  readonly refusalHoldMs: number;
  /** Calls of one uid attested at a time (`PerUidAttestationLimit`); its other calls wait their turn. */
  readonly maxAttestationsPerUid: number;
  /** A connection with no open stream for this long is closed (HTTP/2 GOAWAY; clients reconnect), in milliseconds. */
  readonly idleTimeoutMs: number;
  /**
   * Node's `maxSessionMemory` per connection, in MiB (queued output, header tables, streams): past it, new streams
   * of that connection are refused (RST_STREAM ENHANCE_YOUR_CALM).
   */
  readonly maxSessionMemoryMb: number;
  /** Refusals of one kind for one uid are logged at most once per this many milliseconds. */
  readonly refusalLogIntervalMs: number;
}

/**
 * The limits the agent serves with unless configured otherwise (`--workload-api-*`, README). Sized for one uid
 * running many workloads (a Kubernetes node whose pods all run as root: each keeps one connection and at most a few
 * streams, FetchX509SVID, FetchX509Bundles, FetchJWTBundles) and for a load check of 300 clients of one uid at once,
 * which the earlier 128 connections, 256 open calls and 256 new calls at once refused; bounded so that one uid at its
 * caps costs the agent a bounded amount: at most 32 streams per connection reach the handler (nghttp2 refuses the
 * others before any JavaScript runs), 1,024 open calls per uid, and a uid's new calls past 512 at once are refused
 * before any attestation. `bench/dos/workload-streams.bench.ts` measured about 0.1 MiB of agent RSS per open stream
 * (bench/README.md), so a uid at its caps costs up to ~125 MiB (the caps are per uid: k local users, k times that).
 * 1,000 clients of one uid at once need larger caps (`npm run bench:workload` prints the flags it uses).
 */
export const WORKLOAD_API_LIMITS: WorkloadApiLimits = Object.freeze({
  maxStreamsPerConnection: 32,
  maxStreamsPerUid: 1024,
  maxConnectionsPerUid: 512,
  idleTimeoutMs: 60_000,
  maxSessionMemoryMb: 8,
  refusalLogIntervalMs: 60_000,
  streamRatePerUid: 500,
  streamBurstPerUid: 512,
  refusalHoldMs: 1000,
  maxAttestationsPerUid: 8,
});

export interface WorkloadApiServerOptions {
  /** Unix socket path (`--socket-path`), resolved against the working directory; default {@link DEFAULT_WORKLOAD_API_SOCKET}. */
  readonly socketPath?: string;
  /** The five RPCs, e.g. `new WorkloadApiHandler(...).service()`. */
  readonly service: ServiceImpl<typeof SpiffeWorkloadAPI>;
  /**
   * Envoy's SDS v3 (`new SdsHandler(...).service()`), served on the same socket behind the same per-uid limits;
   * absent, its calls are `UNIMPLEMENTED`.
   */
  readonly sds?: ServiceImpl<typeof SecretDiscoveryService>;
  /** How long `stop()` lets open connections drain before destroying them, in milliseconds (default 2000). */
  readonly drainTimeoutMs?: number;
  /** Overrides of {@link WORKLOAD_API_LIMITS} (tests use small ones). */
  readonly limits?: Partial<WorkloadApiLimits>;
  readonly logger?: Pick<ContextLogger, 'log' | 'warn'>;
  /** Time for the per-uid call rate (tests pass a fake). */
  readonly clock?: Clock;
  /**
   * Told once when each call routed to a method ends, with `OK`, the code it failed with (the security header check's
   * refusals included) or `CANCELED` when the client left first: the agent's call metrics.
   */
  readonly onCallEnd?: (call: GrpcCall, code: Code | 'OK') => void;
}

// Requests are tiny (the largest is a JWT-SVID to validate); anything bigger is a local client trying to make the
// agent buffer it, and is refused with RESOURCE_EXHAUSTED.
export const MAX_REQUEST_BYTES = 1024 * 1024;

/**
 * Connections the kernel holds for the agent before it accepts them. Node's default (511) refused with EAGAIN the
 * connections of 1,000 workloads connecting at once (`npm run bench:workload -- --clients 1000`) while the agent
 * was busy accepting the first ones. Linux caps the value at `net.core.somaxconn` (4096 by default since 5.4), so
 * this asks for the system's maximum, as Go's listener (SPIRE's) does. A pending connection costs the kernel a
 * socket, no agent memory; the per-uid connection cap applies once accepted.
 */
const LISTEN_BACKLOG = 65_535;

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}

/**
 * Closes `session` (GOAWAY, so clients reconnect when they next need it) once it has had no open stream for
 * `timeoutMs`. Not Node's session timeout, which counts frames: a watch stream rightly stays silent for hours.
 */
function closeWhenIdle(session: Http2Session, timeoutMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), timeoutMs);
    timer.unref();
  };
  arm();
  session.on('stream', (stream) => {
    open++;
    clearTimeout(timer);
    stream.once('close', () => {
      if (--open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once('close', () => clearTimeout(timer));
}

/** Resolves true when something accepts connections on the socket at `path`. */
function isSocketServed(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/** How many of something each uid holds open. */
class PerUidCount {
  private readonly counts = new Map<number, number>();

  /** Counts one more for `uid` unless it already holds `max`; says whether it did. */
  tryAcquire(uid: number, max: number): boolean {
    const count = this.counts.get(uid) ?? 0;
    if (count >= max) return false;
    this.counts.set(uid, count + 1);
    return true;
  }

  release(uid: number): void {
    const count = (this.counts.get(uid) ?? 0) - 1;
    if (count > 0) this.counts.set(uid, count);
    else this.counts.delete(uid);
  }
}

/** Answers a gRPC call with RESOURCE_EXHAUSTED in a trailers-only response; its request is dropped undecoded. */
function refuseCall(stream: ServerHttp2Stream, message: string): void {
  failCall(stream, new ConnectError(message, Code.ResourceExhausted));
}

/**
 * The SPIFFE Workload API endpoint: gRPC (HTTP/2 cleartext) on a Unix socket, served by {@link GrpcRouter} on our own
 * `http2` server so that each connection's socket, and through it the caller's SO_PEERCRED, stays within reach.
 * Only the gRPC protocol is served, as the standard requires nothing else.
 */
export class WorkloadApiServer {
  readonly socketPath: string;
  readonly service: ServiceImpl<typeof SpiffeWorkloadAPI>;
  private readonly sds: ServiceImpl<typeof SecretDiscoveryService> | undefined;
  private readonly drainTimeoutMs: number;
  private readonly limits: WorkloadApiLimits;
  private readonly logger: Pick<ContextLogger, 'log' | 'warn'>;
  private readonly clock: Clock;
  private readonly sessions = new Set<Http2Session>();
  private server: Http2Server | undefined;
  private router: GrpcRouter | undefined;
  private refusals: RateLimitedLog | undefined;
  private readonly onCallEnd: ((call: GrpcCall, code: Code | 'OK') => void) | undefined;

  constructor(options: WorkloadApiServerOptions) {
    this.socketPath = resolve(options.socketPath ?? DEFAULT_WORKLOAD_API_SOCKET);
    const length = Buffer.byteLength(this.socketPath);
    if (length > MAX_SOCKET_PATH_BYTES) {
      throw new Error(`socketPath: must be at most ${MAX_SOCKET_PATH_BYTES} bytes for a Unix socket, got ${length}`);
    }
    this.service = options.service;
    this.sds = options.sds;
    this.drainTimeoutMs = options.drainTimeoutMs ?? 2000;
    this.limits = Object.freeze({ ...WORKLOAD_API_LIMITS, ...options.limits });
    this.logger = options.logger ?? new ContextLogger(WorkloadApiServer.name);
    this.clock = options.clock ?? systemClock;
    this.onCallEnd = options.onCallEnd;
  }

  /** True while the socket is listening (the agent's readiness). */
  get isListening(): boolean {
    return this.server?.listening ?? false;
  }

  /**
   * Creates the socket's directory (0755) and checks that nobody but root and the agent's uid can change it or any
   * directory above it (refusing to start otherwise: whoever can, could swap the socket for their own), removes a
   * stale socket left by a previous run (refusing to touch a path that is not a socket or that another process
   * still serves), listens, and opens the socket to every local user (mode 0777, as SPIRE): callers are told apart
   * by their peer credentials, not by file permissions.
   */
  async start(): Promise<void> {
    if (this.server !== undefined) throw new Error('workload api server: already started');
    await this.prepare();
    await this.removeStaleSocket();

    const limits = this.limits;
    const server = createServer({
      maxSessionMemory: limits.maxSessionMemoryMb,
      settings: { maxConcurrentStreams: limits.maxStreamsPerConnection },
    });
    // A caller hammering a limit must not turn into a log flood: one line per uid and kind per interval, then a count.
    const warn = (fields: object): void => this.logger.warn(fields);
    const refusals = new RateLimitedLog(
      { warn, error: warn, log: warn },
      { linesPerInterval: 1, intervalMs: limits.refusalLogIntervalMs },
    );
    this.refusals = refusals;
    const connections = new PerUidCount();
    const streams = new PerUidCount();
    const newCalls = new TokenBucketRateLimiter(
      { ratePerSecond: limits.streamRatePerUid, burst: limits.streamBurstPerUid },
      this.clock,
    );
    server.on('session', (session: Http2Session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      closeWhenIdle(session, limits.idleTimeoutMs);
    });
    const credentialsOf = trackPeerCredentials(server, refusals, (session, { uid }) => {
      if (!connections.tryAcquire(uid, limits.maxConnectionsPerUid)) {
        const reason = `too many open Workload API connections for uid ${uid} (at most ${limits.maxConnectionsPerUid})`;
        refusals.warn(`connections:${uid}`, { msg: `refusing Workload API connections of uid ${uid}: ${reason}`, uid });
        session.destroy();
        return;
      }
      session.once('close', () => connections.release(uid));
    });
    /** Counts the call against its caller's uid, or refuses it; says whether it may go on. */
    const admit = (stream: ServerHttp2Stream, caller?: PeerCredentials): boolean => {
      // A connection without credentials was destroyed already; the handler refuses whatever it still sends.
      if (caller === undefined) return true;
      const { uid } = caller;
      if (!streams.tryAcquire(uid, limits.maxStreamsPerUid)) {
        const reason = `too many open Workload API streams for uid ${uid} (at most ${limits.maxStreamsPerUid})`;
        refusals.warn(`streams:${uid}`, { msg: `refusing Workload API streams of uid ${uid}: ${reason}`, uid });
        refuseCall(stream, reason);
        return false;
      }
      stream.once('close', () => streams.release(uid));
      if (!newCalls.tryTake(String(uid))) {
        const reason =
          `too many new Workload API calls for uid ${uid} (at most ${limits.streamRatePerUid} per second, ` +
          `${limits.streamBurstPerUid} at once); retry later`;
        refusals.warn(`rate:${uid}`, { msg: `refusing Workload API calls of uid ${uid}: ${reason}`, uid });
        // Held (see refusalHoldMs): the stream stays counted until the refusal ends it or the caller cancels.
        const held = setTimeout(() => refuseCall(stream, reason), limits.refusalHoldMs);
        stream.once('close', () => clearTimeout(held));
        return false;
      }
      return true;
    };
    const router = new GrpcRouter({
      readMaxBytes: MAX_REQUEST_BYTES,
      checkCall: (call) => checkSecurityHeader(call.service, call.headers, call.values.get(PEER_CREDENTIALS)),
      unaryRefusalHoldMs: limits.refusalHoldMs,
      // A bug of the agent's, not the caller's: logged (rate limited, one line per method a minute), never sent.
      onUnexpectedError: (call, error) =>
        refusals.warn(`internal:${call.method.name}`, {
          msg: `Workload API ${call.method.name} failed inside the agent: ${(error as Error)?.message ?? String(error)}`,
          uid: call.values.get(PEER_CREDENTIALS)?.uid,
        }),
      ...(this.onCallEnd && { onCallEnd: this.onCallEnd }),
    });
    router.service(SpiffeWorkloadAPI, this.service);
    if (this.sds !== undefined) router.service(SecretDiscoveryService, this.sds);
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      // First: a stream refused or held below never reaches the router, and a client resetting it (RST_STREAM with
      // an error code) makes node:http2 emit 'error', which without a listener would bring the agent down. 'close'
      // follows and releases what the stream held.
      stream.on('error', () => undefined);
      const caller = credentialsOf(stream);
      if (admit(stream, caller)) router.handle(stream, headers, createContextValues().set(PEER_CREDENTIALS, caller));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: this.socketPath, backlog: LISTEN_BACKLOG }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.router = router;
    await chmod(this.socketPath, 0o777);
    this.logger.log(`Workload API listening on unix://${this.socketPath}`);
  }

  /**
   * What `start()` checks first, callable on its own so that the agent fails before attesting (and spending a join
   * token) when it could not serve: pidfd support, and the socket's directory chain (created when missing).
   */
  async prepare(): Promise<void> {
    // Every caller is pinned with a pidfd: fail here, with the reason, on a kernel without them (Linux < 5.3).
    PidFd.open(process.pid).close();
    await prepareSocketDirectory(this.socketPath, { directoryMode: 0o755 });
  }

  /**
   * Ends every open stream with `UNAVAILABLE` (clients reconnect, per the standard), closes the connections, and
   * removes the socket file.
   */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    this.refusals?.close();
    this.refusals = undefined;
    this.router?.abortAll(new ConnectError('the agent is shutting down', Code.Unavailable));
    this.router = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const session of this.sessions) session.close();
    const timer = setTimeout(() => {
      for (const session of this.sessions) session.destroy();
    }, this.drainTimeoutMs);
    await closed;
    clearTimeout(timer);
    await unlink(this.socketPath).catch((error: unknown) => {
      if (errorCode(error) !== 'ENOENT') throw error;
    });
  }

  private async removeStaleSocket(): Promise<void> {
    let isSocket: boolean;
    try {
      isSocket = (await lstat(this.socketPath)).isSocket();
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return;
      throw error;
    }
    if (!isSocket) {
      throw new Error(`socketPath: ${this.socketPath} exists and is not a socket; refusing to replace it`);
    }
    if (await isSocketServed(this.socketPath)) {
      throw new Error(`socketPath: another process is already serving ${this.socketPath}`);
    }
    this.logger.log(`removing stale Workload API socket ${this.socketPath}`);
    await unlink(this.socketPath);
  }
}
