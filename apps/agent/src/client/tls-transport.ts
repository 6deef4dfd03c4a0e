import { Agent, type ClientRequest, type ClientRequestArgs, request as httpRequest } from 'node:http';
import { type Duplex } from 'node:stream';
import { isIP } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { sigilServerId } from '@sigil/runtime';
import {
  type SpiffeId,
  type TrustBundle,
  type TrustDomain,
  idFromCertificate,
  peerCertificateChain,
  verifyX509Svid,
} from '@sigil/spiffe';
import { type ServerAddress } from './server-address.js';

/** The agent's client certificate for mTLS (its X509-SVID). */
export interface ClientCredentials {
  readonly certificateChainPem: string;
  readonly privateKeyPem: string;
}

/**
 * How the server is authenticated: by the bundle of our trust domain (the normal case), or, with insecure
 * bootstrap and no bundle yet, only by the SPIFFE ID its certificate claims.
 */
export type ServerTrust =
  | { readonly kind: 'bundle'; readonly bundle: TrustBundle }
  | { readonly kind: 'insecure'; readonly trustDomain: TrustDomain | undefined };

export interface TransportRequest {
  readonly method: 'GET' | 'POST';
  /** Path and query, e.g. `/agent/v1/sync?revision=3`. */
  readonly path: string;
  readonly body?: unknown;
  readonly trust: ServerTrust;
  readonly credentials?: ClientCredentials | undefined;
  /** Gives up (as unavailable) when no answer arrived within this many milliseconds (connecting included). */
  readonly timeoutMs: number;
  /**
   * False: the connection is closed after the answer instead of kept for the next request (a long poll, which would
   * otherwise keep its connection busy for good and so hold off a server that is shutting down).
   */
  readonly keepAlive?: boolean | undefined;
  /** Whose connections carry it (default `control`); see {@link ServerConnectionPool}. */
  readonly lane?: ServerLane | undefined;
  /**
   * `attestation`: a node attestation's request, on connections of its own (they may trust more than the session's
   * bundle and present the SVID the attestation replaces), so that it never retires the session's connections.
   */
  readonly purpose?: 'attestation' | 'session' | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface TransportResponse {
  readonly status: number;
  readonly body: unknown;
  /** From a `Retry-After` header in seconds (429, 503): how long the server asks us to wait. */
  readonly retryAfterMs?: number;
  /** The SPIFFE ID the server's certificate carried. */
  readonly serverId: SpiffeId;
}

/** Longest `Retry-After` the agent honours: a wrong or hostile value must not park it for hours. */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** A `Retry-After` of delay-seconds, in milliseconds (at most {@link MAX_RETRY_AFTER_MS}); undefined otherwise. */
export function parseRetryAfter(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string' || !/^\s*\d{1,9}\s*$/.test(header)) return undefined;
  return Math.min(Number(header) * 1000, MAX_RETRY_AFTER_MS);
}

/** The server could not be reached or authenticated, or answered that it cannot serve now: try another one. */
export class ServerUnavailableError extends Error {
  override readonly name: string = 'ServerUnavailableError';
}

/**
 * The server answered, but its certificate does not chain to the bundle the agent authenticates servers with: a CA
 * rotation the agent missed while offline, or someone else on the server's address. Never a reason to trust less.
 */
export class ServerNotTrustedError extends ServerUnavailableError {
  override readonly name = 'ServerNotTrustedError';
}

/**
 * The agent's traffic to a server goes in two lanes with connections of their own, so that its own renewal, entry
 * sync and X.509-SVID rotation never wait behind JWT-SVID requests, which local callers cause at will (issue 16
 * finding 5): `control` for everything but JWT-SVIDs, `jwt` for those.
 */
export type ServerLane = 'control' | 'jwt';

/**
 * Connections kept open per server and lane. `control` carries the long-poll sync (one connection held all the
 * time), renewal, X.509-SVID batches (one at a time) and attestation; `jwt` as many requests as the agent's JWT-SVID
 * lane sends at once (`JwtSvidLimits.maxConcurrentSigning`), which takes its default from here.
 */
export const SERVER_LANE_CONNECTIONS: Readonly<Record<ServerLane, number>> = Object.freeze({ control: 4, jwt: 8 });

/**
 * How long an idle kept-alive connection stays open. Below the 5 s Node servers keep idle connections by default, so
 * the agent rarely picks a connection the server is closing (and retries once when it did).
 */
const IDLE_CONNECTION_MS = 4_000;

/** Largest answer read (a full sync of many entries); anything bigger is refused. */
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

/**
 * Authenticates the server the SPIFFE way, not by host name: its certificate must be an X509-SVID that chains to
 * our bundle and carries `spiffe://<td>/sigil/server` (SPIRE's agent checks its server the same way). With insecure
 * bootstrap only the ID is checked, which is why it is allowed just for the first attestation.
 */
export async function authenticateServer(chain: readonly Uint8Array[], trust: ServerTrust): Promise<SpiffeId> {
  if (chain.length === 0) throw new ServerUnavailableError('server presented no certificate');
  let id: SpiffeId;
  if (trust.kind === 'bundle') {
    try {
      id = (await verifyX509Svid([...chain], trust.bundle)).spiffeId;
    } catch (error) {
      throw new ServerNotTrustedError(`server certificate is not trusted: ${(error as Error).message}`);
    }
  } else {
    try {
      id = idFromCertificate(chain[0] as Uint8Array);
    } catch (error) {
      throw new ServerUnavailableError(`server certificate is not an X509-SVID: ${(error as Error).message}`);
    }
  }
  const trustDomain = trust.kind === 'bundle' ? trust.bundle.trustDomain : (trust.trustDomain ?? id.trustDomain);
  const expected = sigilServerId(trustDomain);
  if (!id.equals(expected)) {
    throw new ServerUnavailableError(
      `server certificate has SPIFFE ID ${id.toString()}, expected ${expected.toString()}`,
    );
  }
  return id;
}

interface TlsOptions {
  readonly trust: ServerTrust;
  readonly credentials?: ClientCredentials | undefined;
  readonly timeoutMs: number;
}

/** Opens a TLS 1.3 connection and authenticates the server before it is used for anything. */
function openTls(address: ServerAddress, options: TlsOptions): Promise<{ socket: TLSSocket; serverId: SpiffeId }> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: address.host,
      port: address.port,
      ...(isIP(address.host) === 0 && { servername: address.host }),
      minVersion: 'TLSv1.3',
      // Verified below with the SPIFFE rules (bundle + server ID), not OpenSSL's host name checks.
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      ...(options.credentials && {
        cert: options.credentials.certificateChainPem,
        key: options.credentials.privateKeyPem,
      }),
    });
    const onError = (error: Error): void => {
      socket.destroy();
      reject(new ServerUnavailableError(`cannot connect to ${address.text}: ${error.message}`));
    };
    socket.once('error', onError);
    socket.setTimeout(options.timeoutMs, () => onError(new Error('TLS handshake timed out')));
    socket.once('secureConnect', () => {
      authenticateServer(peerCertificateChain(socket.getPeerCertificate(true)), options.trust).then(
        (serverId) => {
          socket.off('error', onError);
          socket.setTimeout(0);
          resolve({ socket, serverId });
        },
        (error: Error) => {
          socket.destroy();
          const Failure = error instanceof ServerNotTrustedError ? ServerNotTrustedError : ServerUnavailableError;
          reject(new Failure(`${address.text}: ${error.message}`));
        },
      );
    });
  });
}

/** The server each pooled connection authenticated. */
const serverIds = new WeakMap<Duplex, SpiffeId>();

/**
 * The kept-alive connections of one server and lane, all made with one set of credentials and one trust: a new
 * agent SVID (renewal, attestation) or a new bundle makes a new pool, and the old one is retired (its idle
 * connections closed at once, the busy ones when their request ends), so a connection never presents an SVID the
 * server no longer takes.
 */
class LanePool extends Agent {
  private retired = false;
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly address: ServerAddress,
    readonly tls: TlsOptions,
    private readonly size: number,
  ) {
    const maxSockets = size;
    super({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, timeout: IDLE_CONNECTION_MS, scheduling: 'lifo' });
  }

  /** Whether connections made with these credentials and this trust would be the same as this pool's. */
  fits(trust: ServerTrust, credentials: ClientCredentials | undefined): boolean {
    return this.tls.credentials === credentials && sameTrust(this.tls.trust, trust);
  }

  override createConnection(
    _options: ClientRequestArgs,
    callback?: (error: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    openTls(this.address, this.tls).then(
      ({ socket, serverId }) => {
        serverIds.set(socket, serverId);
        callback?.(null, socket);
      },
      (error: Error) => callback?.(error, undefined as unknown as Duplex),
    );
    return undefined;
  }

  override keepSocketAlive(socket: Duplex): boolean {
    if (this.retired) return false;
    return super.keepSocketAlive(socket) as unknown as boolean;
  }

  /**
   * Runs `send` when fewer than the pool's size of requests are running. Node's Agent counts a connection against
   * `maxSockets` only once it exists, and ours exist only after the server is authenticated: without this, a burst
   * would open a connection per request.
   */
  async run<T>(send: () => Promise<T>): Promise<T> {
    if (this.active >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await send();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next();
      else this.active--;
    }
  }

  /** No new requests; idle connections close now, busy ones after their request. */
  retire(): void {
    this.retired = true;
    for (const sockets of Object.values(this.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  }
}

function sameTrust(a: ServerTrust, b: ServerTrust): boolean {
  if (a.kind === 'bundle') return b.kind === 'bundle' && a.bundle === b.bundle;
  return b.kind === 'insecure' && a.trustDomain?.name === b.trustDomain?.name;
}

/**
 * The agent's HTTPS connections to its servers over TLS 1.3, kept alive and bounded per server and
 * {@link ServerLane} ({@link SERVER_LANE_CONNECTIONS}): a JWT-SVID miss costs a request on an open connection, not a
 * TLS handshake on each side (issue 16 finding 5 counted one new connection per miss). Each new connection
 * authenticates the server before anything is sent, and presents the agent SVID when given.
 */
export class ServerConnectionPool {
  private readonly pools = new Map<string, LanePool>();
  private readonly connections: Readonly<Record<ServerLane, number>>;
  private closed = false;

  constructor(connections: Partial<Record<ServerLane, number>> = {}) {
    this.connections = { ...SERVER_LANE_CONNECTIONS, ...connections };
  }

  /** One request; a request that found its kept-alive connection closed by the server is sent once more. */
  async send(address: ServerAddress, request: TransportRequest): Promise<TransportResponse> {
    request.signal?.throwIfAborted();
    try {
      return await this.sendOnce(address, request);
    } catch (error) {
      if (!(error instanceof StaleConnectionError)) throw error;
      return this.sendOnce(address, request);
    }
  }

  /** Closes every connection; requests after it fail. */
  close(): void {
    this.closed = true;
    for (const pool of this.pools.values()) {
      pool.retire();
      pool.destroy();
    }
    this.pools.clear();
  }

  private poolFor(address: ServerAddress, request: TransportRequest): LanePool {
    if (this.closed) throw new ServerUnavailableError('the agent is stopping: its server connections are closed');
    const lane = request.lane ?? 'control';
    const purpose = request.purpose ?? 'session';
    const key = `${lane} ${purpose} ${request.credentials === undefined ? 'anonymous' : 'mtls'} ${address.text}`;
    const current = this.pools.get(key);
    if (current?.fits(request.trust, request.credentials)) return current;
    current?.retire();
    // A long poll's timeout is no handshake timeout.
    const tls = {
      trust: request.trust,
      credentials: request.credentials,
      timeoutMs: Math.min(request.timeoutMs, 15_000),
    };
    const pool = new LanePool(address, tls, this.connections[lane]);
    this.pools.set(key, pool);
    return pool;
  }

  private sendOnce(address: ServerAddress, request: TransportRequest): Promise<TransportResponse> {
    const pool = this.poolFor(address, request);
    return pool.run(() => this.sendOn(pool, address, request));
  }

  private sendOn(pool: LanePool, address: ServerAddress, request: TransportRequest): Promise<TransportResponse> {
    if (request.signal?.aborted) return Promise.reject(request.signal.reason);
    const payload = request.body === undefined ? undefined : Buffer.from(JSON.stringify(request.body));
    return new Promise<TransportResponse>((resolve, reject) => {
      // Why the request was cut short by us, when it was (http reports only "socket hang up").
      let failure: string | undefined;
      let settled = false;
      const finish = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.signal?.removeEventListener('abort', onAbort);
        outcome();
      };
      const onAbort = (): void => {
        finish(() => reject(request.signal?.reason));
        outgoing.destroy();
      };
      const outgoing: ClientRequest = httpRequest(
        {
          agent: pool,
          method: request.method,
          path: request.path,
          headers: {
            host: address.text,
            accept: 'application/json',
            ...(request.keepAlive === false && { connection: 'close' }),
            ...(payload && { 'content-type': 'application/json', 'content-length': String(payload.length) }),
          },
        },
        (response) => {
          // Read now: the connection is detached from the answer once it has been read.
          const serverId = serverIds.get(response.socket);
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              failure = `answer larger than ${MAX_RESPONSE_BYTES} bytes`;
              outgoing.destroy();
              return;
            }
            chunks.push(chunk);
          });
          response.once('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown = undefined;
            try {
              body = text === '' ? undefined : JSON.parse(text);
            } catch {
              body = { error: 'invalid_response', message: `not JSON: ${text.slice(0, 200)}` };
            }
            if (serverId === undefined) {
              finish(() =>
                reject(new ServerUnavailableError(`${address.text}: answer on an unauthenticated connection`)),
              );
              return;
            }
            const retryAfterMs = parseRetryAfter(response.headers['retry-after']);
            finish(() =>
              resolve({
                status: response.statusCode ?? 0,
                body,
                serverId,
                ...(retryAfterMs !== undefined && { retryAfterMs }),
              }),
            );
          });
          response.once('error', (error) =>
            finish(() => reject(new ServerUnavailableError(`${address.text}: ${failure ?? error.message}`))),
          );
        },
      );
      // Connecting (or waiting for a kept connection) and the answer count; waiting for a turn in the pool does not.
      const timer = setTimeout(() => {
        failure = `no answer within ${request.timeoutMs} ms`;
        outgoing.destroy();
      }, request.timeoutMs);
      outgoing.once('error', (error: NodeJS.ErrnoException) => {
        if (error instanceof ServerUnavailableError) return finish(() => reject(error));
        // The server closed a kept-alive connection just as it was reused: nothing reached it.
        if (outgoing.reusedSocket && failure === undefined && error.code === 'ECONNRESET') {
          return finish(() => reject(new StaleConnectionError(error.message)));
        }
        const reason = failure ?? error.message;
        finish(() => reject(new ServerUnavailableError(`${address.text}: ${reason}`)));
      });
      request.signal?.addEventListener('abort', onAbort, { once: true });
      outgoing.end(payload);
    });
  }
}

class StaleConnectionError extends Error {}
