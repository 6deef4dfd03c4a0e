import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer, type Http2Server, type Http2Session } from 'node:http2';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { Code, ConnectError, type ConnectRouter, type ServiceImpl, createContextValues } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { Logger } from '@nestjs/common';
import { prepareSocketDirectory } from '@sigil/runtime';
import { SpiffeWorkloadAPI } from '@sigil/workload-api';
import { useSpecGrpcMessageEncoding } from './grpc-message.js';
import { PEER_CREDENTIALS, trackPeerCredentials } from './peer-credentials.js';
import { PidFd } from './pidfd.js';
import { securityHeaderInterceptor } from './security-header.js';

/** Where the agent serves the Workload API unless told otherwise (DESIGN.md §3, as SPIRE's default). */
export const DEFAULT_WORKLOAD_API_SOCKET = '/tmp/sigil-agent/public/api.sock';

export interface WorkloadApiServerOptions {
  /** Unix socket path (`--socket-path`), resolved against the working directory; default {@link DEFAULT_WORKLOAD_API_SOCKET}. */
  readonly socketPath?: string;
  /** The five RPCs, e.g. `new WorkloadApiHandler(...).service()`. */
  readonly service: ServiceImpl<typeof SpiffeWorkloadAPI>;
  /** How long `stop()` lets open connections drain before destroying them, in milliseconds (default 2000). */
  readonly drainTimeoutMs?: number;
  readonly logger?: Pick<Logger, 'log'>;
}

// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES = 107;

// Requests are tiny (the largest is a JWT-SVID to validate); anything bigger is a local client trying to make the
// agent buffer it, and is refused with RESOURCE_EXHAUSTED.
const MAX_REQUEST_BYTES = 1024 * 1024;

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
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

/**
 * The SPIFFE Workload API endpoint: gRPC (HTTP/2 cleartext) on a Unix socket, served by connect-node on our own
 * `http2` server so that each connection's socket, and through it the caller's SO_PEERCRED, stays within reach.
 * Only the gRPC protocol is enabled, as the standard requires nothing else.
 */
export class WorkloadApiServer {
  readonly socketPath: string;
  readonly service: ServiceImpl<typeof SpiffeWorkloadAPI>;
  private readonly drainTimeoutMs: number;
  private readonly logger: Pick<Logger, 'log'>;
  private readonly sessions = new Set<Http2Session>();
  private server: Http2Server | undefined;
  private shutdown: AbortController | undefined;

  constructor(options: WorkloadApiServerOptions) {
    this.socketPath = resolve(options.socketPath ?? DEFAULT_WORKLOAD_API_SOCKET);
    const length = Buffer.byteLength(this.socketPath);
    if (length > MAX_SOCKET_PATH_BYTES) {
      throw new Error(`socketPath: must be at most ${MAX_SOCKET_PATH_BYTES} bytes for a Unix socket, got ${length}`);
    }
    this.service = options.service;
    this.drainTimeoutMs = options.drainTimeoutMs ?? 2000;
    this.logger = options.logger ?? new Logger(WorkloadApiServer.name);
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

    const shutdown = new AbortController();
    const server = createServer();
    const credentialsOf = trackPeerCredentials(server);
    server.on('session', (session: Http2Session) => {
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
    });
    const adapter = connectNodeAdapter({
      routes: (router: ConnectRouter) => router.service(SpiffeWorkloadAPI, this.service),
      grpc: true,
      grpcWeb: false,
      connect: false,
      interceptors: [securityHeaderInterceptor],
      readMaxBytes: MAX_REQUEST_BYTES,
      shutdownSignal: shutdown.signal,
      contextValues: (request) =>
        createContextValues().set(PEER_CREDENTIALS, 'stream' in request ? credentialsOf(request) : undefined),
    });
    server.on('request', (request, response) => {
      useSpecGrpcMessageEncoding(response);
      adapter(request, response);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.shutdown = shutdown;
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
    this.shutdown?.abort(new ConnectError('the agent is shutting down', Code.Unavailable));
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
