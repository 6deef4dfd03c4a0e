import { type ContextLogger } from '@sigil/logging';
import { attestationChallengePath, attestationPath, type AttestationRequestBody } from '@sigil/agent-api';
import { type TrustDomain } from '@sigil/spiffe';
import {
  AGENT_API_ROUTES,
  type AgentSvidResponse,
  type AttestationResponse,
  type JwtSvidResponse,
  type SyncQuery,
  type SyncResponse,
  type X509SignResult,
  parseAgentSvidResponse,
  parseAttestationResponse,
  parseErrorBody,
  parseJwtSvidResponse,
  parseSyncResponse,
  parseX509SignResults,
  serializeJwtSvidRequest,
  serializeRenewRequest,
  serializeX509SvidBatchRequest,
  syncPath,
} from '@sigil/agent-api';
import { type AgentApi } from './agent-api.js';
import { type ServerAddress } from './server-address.js';
import {
  type ClientCredentials,
  type ServerLane,
  type ServerTrust,
  type TransportRequest,
  type TransportResponse,
  ServerConnectionPool,
  ServerNotTrustedError,
  ServerUnavailableError,
} from './tls-transport.js';

/** The server answered with an error (`{ error, message }`); `kind` is its `error` field. */
export class AgentApiError extends Error {
  override readonly name = 'AgentApiError';

  constructor(
    readonly status: number,
    readonly kind: string,
    message: string,
    /** The server's `Retry-After` (a 429 over a limit): wait at least this long before asking again. */
    readonly retryAfterMs?: number,
    sentWith?: ClientCredentials,
  ) {
    super(message);
    // Not enumerable: the credentials hold the private key, which util.inspect (an unhandled rejection) and the
    // logger's error serializer would otherwise print with the error.
    Object.defineProperty(this, 'sentWith', { value: sentWith, enumerable: false });
  }

  /** The agent SVID the request was made with (mTLS routes): a refusal is a verdict on that SVID only. */
  declare readonly sentWith: ClientCredentials | undefined;

  /**
   * True when the server no longer accepts this agent's SVID (unknown, evicted, banned, or an SVID it did not
   * issue last): the agent must attest again, or stop.
   */
  isAgentRefused(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

export interface ServerClientOptions {
  readonly addresses: readonly ServerAddress[];
  /**
   * The current way to authenticate servers (the bundle changes as the CA rotates); `attestation` for the requests
   * of a node attestation, which may trust more than the session's bundle (AgentIdentity.attestationTrust).
   */
  readonly trust: (purpose: TrustPurpose) => ServerTrust;
  /** The agent SVID for mTLS; undefined before attestation. */
  readonly credentials: () => ClientCredentials | undefined;
  /**
   * The client certificate of the requests of a node attestation: the agent SVID while it is valid (the server
   * charges an attestation that presents an active agent's SVID to that agent's attestation budget, not to its
   * source address's), else undefined (none; also when not given). It never decides who the agent attests as.
   */
  readonly attestationCredentials?: () => ClientCredentials | undefined;
  /** Timeout of ordinary requests (default 15 s); long polls add their wait to it. */
  readonly timeoutMs?: number;
  readonly logger?: Pick<ContextLogger, 'warn' | 'log'>;
  /** Connections kept per server and lane (defaults: SERVER_LANE_CONNECTIONS). */
  readonly connections?: Partial<Record<ServerLane, number>>;
  /** The transport; tests may wrap it. By default the client's own {@link ServerConnectionPool}. */
  readonly send?: (address: ServerAddress, request: TransportRequest) => Promise<TransportResponse>;
}

/**
 * What a connection is for: attesting the node (presenting the agent SVID only while it is valid, see
 * `attestationCredentials`), or anything else.
 */
export type TrustPurpose = 'attestation' | 'session';

type Call = Omit<TransportRequest, 'trust' | 'credentials' | 'timeoutMs'> & {
  timeoutMs?: number;
  mtls: boolean;
  purpose?: TrustPurpose;
};
// Every call but JWT-SVID signing goes in the control lane (the default).

/**
 * The client of the servers' agent API, failing over between `--server-address` values: a request that cannot
 * reach or authenticate one server, or that a server answers with 503, goes to the next one at once; the one that
 * answered stays current for the following requests. Only when every server failed does the caller see
 * {@link ServerUnavailableError}, and backs off.
 */
export class ServerClient implements AgentApi {
  private current = 0;
  private readonly timeoutMs: number;
  private readonly send: NonNullable<ServerClientOptions['send']>;
  private readonly pool: ServerConnectionPool;

  constructor(private readonly options: ServerClientOptions) {
    if (options.addresses.length === 0) throw new Error('server client: at least one server address is required');
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.pool = new ServerConnectionPool(options.connections);
    this.send = options.send ?? ((address, request) => this.pool.send(address, request));
  }

  /** Closes the connections kept to the servers (the agent is stopping). */
  close(): void {
    this.pool.close();
  }

  /** The address requests currently go to. */
  get currentAddress(): ServerAddress {
    return this.options.addresses[this.current] as ServerAddress;
  }

  /**
   * `POST /agent/v1/attest/<route>`: the attestation request of the node attestor at `route` (its evidence and the
   * agent's CSR); every attestor's last step.
   */
  async attest(route: string, body: AttestationRequestBody): Promise<AttestationResponse> {
    return parseAttestationResponse(
      await this.call({ method: 'POST', path: attestationPath(route), body, mtls: false, purpose: 'attestation' }),
    );
  }

  /** `POST /agent/v1/attest/<route>/challenge`: the challenge of the node attestor at `route`, which parses it. */
  async attestationChallenge(route: string, body: object): Promise<unknown> {
    return this.call({
      method: 'POST',
      path: attestationChallengePath(route),
      body,
      mtls: false,
      purpose: 'attestation',
    });
  }

  async renew(csrPem: string): Promise<AgentSvidResponse> {
    return parseAgentSvidResponse(
      await this.call({ ...AGENT_API_ROUTES.renew, body: serializeRenewRequest(csrPem), mtls: true }),
    );
  }

  async sync(query: SyncQuery, signal?: AbortSignal): Promise<SyncResponse> {
    const body = await this.call({
      method: AGENT_API_ROUTES.sync.method,
      path: syncPath(query),
      mtls: true,
      timeoutMs: this.timeoutMs + query.waitMs,
      signal,
      // A new connection per poll (one per change or per wait, 25 s by default): a connection reused poll after poll
      // would never let a stopping server finish (Node's server.close() waits for busy connections).
      keepAlive: false,
    });
    return parseSyncResponse(body, this.trustDomain());
  }

  async signX509Svids(csrs: readonly { entryId: string; csrPem: string }[]): Promise<X509SignResult[]> {
    const body = await this.call({
      ...AGENT_API_ROUTES.signX509Svids,
      body: serializeX509SvidBatchRequest(csrs),
      mtls: true,
    });
    return parseX509SignResults(body);
  }

  async signJwtSvid(entryId: string, audience: readonly string[]): Promise<JwtSvidResponse> {
    const body = await this.call({
      ...AGENT_API_ROUTES.signJwtSvid,
      body: serializeJwtSvidRequest(entryId, audience),
      mtls: true,
      lane: 'jwt',
    });
    return parseJwtSvidResponse(body);
  }

  private trustDomain(): TrustDomain {
    const trust = this.options.trust('session');
    const trustDomain = trust.kind === 'bundle' ? trust.bundle.trustDomain : trust.trustDomain;
    if (trustDomain === undefined) throw new Error('server client: the trust domain is not known yet');
    return trustDomain;
  }

  private async call(call: Call): Promise<unknown> {
    const credentials = call.mtls
      ? this.options.credentials()
      : call.purpose === 'attestation'
        ? this.options.attestationCredentials?.()
        : undefined;
    if (call.mtls && credentials === undefined) throw new Error(`${call.path}: the agent has no SVID yet`);
    const addresses = this.options.addresses;
    let lastError: ServerUnavailableError | undefined;
    // The most telling failure: a server that answered with a certificate we do not trust says more than a refused
    // connection to another address.
    let untrusted: ServerNotTrustedError | undefined;
    for (let attempt = 0; attempt < addresses.length; attempt++) {
      const index = (this.current + attempt) % addresses.length;
      const address = addresses[index] as ServerAddress;
      try {
        const response = await this.send(address, {
          method: call.method,
          path: call.path,
          body: call.body,
          signal: call.signal,
          trust: this.options.trust(call.purpose ?? 'session'),
          credentials,
          timeoutMs: call.timeoutMs ?? this.timeoutMs,
          lane: call.lane,
          keepAlive: call.keepAlive,
          purpose: call.purpose,
        });
        if (response.status === 503 || response.status === 502) {
          throw new ServerUnavailableError(`${address.text}: ${errorOf(response).message}`);
        }
        if (index !== this.current) {
          this.options.logger?.log({ msg: 'failed over to another server', server: address.text });
          this.current = index;
        }
        if (response.status >= 200 && response.status < 300) return response.body;
        // An attestation's refusal judges its evidence, never the SVID it may have presented.
        throw errorOf(response, call.mtls ? credentials : undefined);
      } catch (error) {
        if (!(error instanceof ServerUnavailableError)) throw error;
        // With one address the caller reports the failure; with several, each one tried is worth a line.
        if (addresses.length > 1) {
          this.options.logger?.warn({ msg: 'server unavailable', server: address.text, reason: error.message });
        }
        lastError = error;
        if (error instanceof ServerNotTrustedError) untrusted = error;
      }
    }
    throw untrusted ?? lastError ?? new ServerUnavailableError('no server address');
  }
}

function errorOf(response: TransportResponse, sentWith?: ClientCredentials): AgentApiError {
  const { kind, message } = parseErrorBody(response.status, response.body);
  return new AgentApiError(response.status, kind, message, response.retryAfterMs, sentWith);
}

/** How long to wait after `error`: the backoff's next delay, or longer when the server asked for it. */
export function retryDelayMs(error: unknown, backoffMs: number): number {
  return error instanceof AgentApiError && error.retryAfterMs !== undefined
    ? Math.max(backoffMs, error.retryAfterMs)
    : backoffMs;
}
