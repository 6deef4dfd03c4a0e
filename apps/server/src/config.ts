import 'reflect-metadata';
import { availableParallelism } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '@sigil/logging';
import { JOIN_TOKEN_ATTESTOR, X509POP_ATTESTOR } from '@sigil/agent-api';
import { TrustDomain } from '@sigil/spiffe';
import { BUNDLE_ENDPOINT_PROFILES, type BundleEndpointProfile } from './federation/bundle-endpoint-profiles.js';
import {
  ConfigRule,
  IsBooleanLike,
  IsCountFrom,
  IsDurationSeconds,
  IsNonEmptyString,
  IsNumberFrom,
  IsOneOf,
  IsTrustDomainName,
  LISTEN_ADDRESS_RULE,
  PLUGIN_NAME,
  isListenAddress,
  listenAddress,
  type HostPort,
  SOCKET_PATH_RULE,
  isSocketPath,
  layerConfig,
  parseHostPort,
  parsePluginSpec,
  parseDurationSeconds,
  readJsonConfigFile,
  showConfigValue,
  toConfigBoolean,
  type ConfigSource,
} from '@sigil/runtime';
import {
  DEFAULT_AGENT_JWT_SIGN_BURST,
  DEFAULT_AGENT_JWT_SIGN_RATE,
  DEFAULT_AGENT_RENEW_BURST,
  DEFAULT_AGENT_RENEW_RATE,
  DEFAULT_AGENT_SIGN_BURST,
  DEFAULT_AGENT_SIGN_MAX_IN_FLIGHT,
  DEFAULT_AGENT_SIGN_RATE,
  DEFAULT_SIGNING_QUEUE_MAX_ITEMS,
  defaultSigningWorkers,
  MAX_SIGNING_WORKERS,
  MAX_CSR_BATCH,
} from './agent-api/signing-limits.js';
import { IsOptional, ValidateBy, validateSync } from 'class-validator';

/**
 * Server configuration: raw input (flags > `SIGIL_*` env / `DATABASE_URL` > JSON config file > defaults) validated
 * once with class-validator, converted to domain types and frozen, before Nest boots (SPIRE `run.go`:
 * validateConfig, checkForUnknownConfig, NewServerConfig).
 */

/** Key types the CA can use; EC P-256 is SPIRE's default. */
export type CaKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';
export const CA_KEY_TYPES: readonly CaKeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048'];

export { BUNDLE_ENDPOINT_PROFILES, type BundleEndpointProfile } from './federation/bundle-endpoint-profiles.js';

/** `--bundle-endpoint-*`: where the bundle endpoint listens and what certificate it presents. */
export type BundleEndpointConfig =
  | { readonly address: HostPort; readonly profile: 'https_spiffe' }
  | { readonly address: HostPort; readonly profile: 'https_web'; readonly certFile: string; readonly keyFile: string };

const HTTPS_URL_RULE = 'must be an absolute https URL without credentials, query or fragment';
const HTTP_URL_RULE = 'must be an absolute http or https URL without credentials, query or fragment';

export { LOG_LEVELS, type LogLevel };

/** One enabled node attestor. */
export interface NodeAttestorSetting {
  /** The attestor's type, SPIRE's plug-in name (`join_token`, `x509pop`). */
  readonly type: string;
  readonly options: Readonly<Record<string, string>>;
  /** Where it was set (`--node-attestor`, `SIGIL_NODE_ATTESTORS`, `node_attestors`), for error messages. */
  readonly source: string;
}

export interface ServerConfig {
  readonly trustDomain: TrustDomain;
  /** True when no source set the trust domain and the `example.org` default applies. */
  readonly trustDomainIsDefault: boolean;
  /** Absolute path; the embedded database lives in `<dataDir>/db`. */
  readonly dataDir: string;
  readonly bindAddress: string;
  /** TCP port of the agent + admin API (TLS); 0 picks a free port. */
  readonly port: number;
  /** Absent: the embedded database in the data dir. */
  readonly databaseUrl?: string;
  /** Absolute path of the local admin Unix socket. */
  readonly adminSocket: string;
  readonly caKeyType: CaKeyType;
  readonly caTtlSeconds: number;
  readonly x509SvidTtlSeconds: number;
  readonly jwtSvidTtlSeconds: number;
  readonly joinTokenTtlSeconds: number;
  /** When set, the CA is an intermediate signed by this upstream CA (PEM files). */
  readonly upstreamCa?: { readonly certFile: string; readonly keyFile: string };
  /**
   * When set (`upstream_authority: sigil`, SPIRE's `spire` upstream authority), each CA key is an intermediate signed by
   * an upstream Sigil server of the same trust domain, asked with the X509-SVID of a downstream entry that the local
   * agent's Workload API hands this server.
   */
  readonly upstreamSigil?: { readonly agentSocket: string; readonly serverAddress: HostPort };
  /** The longest lifetime of a downstream CA this server signs for a downstream entry (default: the CA TTL). */
  readonly downstreamCaMaxTtlSeconds: number;
  /** File holding the key-encryption key; absent: `<dataDir>/kek.key` (generated 0600 at first start) unless `kek` is set. */
  readonly kekFile?: string;
  /** Key-encryption key from the environment (`SIGIL_KEK`, base64 of 32 bytes); never accepted as a flag or file key. */
  readonly kek?: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** Absent: log lines go to stdout. */
  readonly logFile?: string;
  /**
   * When set, `/metrics` and `/docs` are served on this plain-HTTP listener (meant for localhost) and no longer on
   * the TLS port.
   */
  readonly metricsAddress?: HostPort;
  /**
   * When set, the SPIFFE federation bundle endpoint (our bundle as SPIFFE JWKS at `/`) is served on this separate
   * HTTPS listener, in the `https_spiffe` profile (the server's own X509-SVID) or `https_web` (a WebPKI certificate
   * from files).
   */
  readonly bundleEndpoint?: BundleEndpointConfig;
  /** `iss` of every JWT-SVID and the OIDC discovery document's `issuer` (SPIRE's `jwt_issuer`); an https URL. */
  readonly jwtIssuer?: string;
  /**
   * When set, OIDC discovery (`/.well-known/openid-configuration` and `/keys`) is served on this plain-HTTP listener,
   * meant behind an HTTPS reverse proxy at the issuer's host (SPIRE's oidc-discovery-provider `insecure_addr`).
   */
  readonly oidcDiscovery?: OidcDiscoveryConfig;
  /**
   * PEM CA certificates trusted, in addition to the system roots, for the `https_web` bundle endpoints this server
   * fetches foreign bundles from (a private WebPKI, or tests).
   */
  readonly federationWebCaFile?: string;
  /**
   * The node attestors enabled, with their options, in the order given (`--node-attestor`). Default: `join_token`,
   * and `x509pop` when `--x509pop-ca-bundle` is set. The node-attestation registry checks the names and options.
   */
  readonly nodeAttestors: readonly NodeAttestorSetting[];
  /** Per-agent token bucket of X.509-SVID signing, in CSRs (each CSR of a batch counts): refill per second. */
  readonly agentSignRatePerSecond: number;
  /** Size of that bucket: how many CSRs an agent may have signed at once after a quiet spell (≥ a full batch). */
  readonly agentSignBurst: number;
  /**
   * Per-source-address token bucket of the attestation routes (`/agent/v1/attest/…`, unauthenticated): refill per
   * second. A refused attestation costs {@link ATTESTATION_REFUSAL_COST} tokens.
   */
  readonly attestationRatePerSecond: number;
  readonly attestationBurst: number;
  /** Per-source-address token bucket of the other unauthenticated routes (bundle, health, metrics): refill per second. */
  readonly publicReadRatePerSecond: number;
  readonly publicReadBurst: number;
  /** Open connections on the TLS port in total; further ones are closed at accept. */
  readonly maxConnections: number;
  /** Open connections on the TLS port from one address (IPv6: one /64). */
  readonly maxConnectionsPerAddress: number;
  /** New connections (TLS handshakes) per second one address may open, after its burst. */
  readonly tlsHandshakeRatePerSecond: number;
  /** New connections one address may open at once after a quiet spell. */
  readonly tlsHandshakeBurst: number;
  /** From TCP accept to the end of the TLS handshake. */
  readonly tlsHandshakeTimeoutSeconds: number;
  /** From a request's first byte to the end of its headers. */
  readonly httpHeadersTimeoutSeconds: number;
  /** From a request's first byte to the end of its body (the answer, e.g. a long-poll's wait, is not counted). */
  readonly httpRequestTimeoutSeconds: number;
  /** A connection with no request in flight (before the first one, between keep-alive requests) is closed after this. */
  readonly httpIdleTimeoutSeconds: number;
  /** Per-agent token bucket of the agent API's sync route: refill per second. */
  readonly agentSyncRatePerSecond: number;
  /** Size of that bucket: how many syncs an agent may make at once after a quiet spell. */
  readonly agentSyncBurst: number;
  /**
   * Longest an agent's status (banned, evicted, current SVID serial) is used from memory after it was read: the bound
   * on how long another replica may still serve an evicted or banned agent when a change notification is lost.
   */
  readonly agentStatusCacheTtlSeconds: number;
  /**
   * How often each replica checks the CA key journal: the rotation leader's schedule, and the fallback by which a
   * replica reloads keys and bundle when a change notification was lost (changes are otherwise heard at once).
   */
  readonly authorityCheckIntervalSeconds: number;
  /**
   * Agents that can re-attest and are not banned are removed once their SVID has been expired this long (SPIRE's
   * `prune_attested_nodes_expired_for`); 0 turns the pruning off.
   */
  readonly pruneAttestedNodesExpiredForSeconds: number;
  /** Per-agent token bucket of JWT-SVID signing, in JWT-SVIDs: refill per second. */
  readonly agentJwtSignRatePerSecond: number;
  /** Size of that bucket. */
  readonly agentJwtSignBurst: number;
  /** X.509-SVID batches one agent may have in progress at once. */
  readonly agentSignMaxInFlight: number;
  /** Long-polls one agent may hold open at once; a further one answers the oldest at once. */
  readonly agentMaxLongPolls: number;
  /** TLS connections one agent (by SPIFFE ID) may hold open at once; a request on a further one gets 429. */
  readonly agentMaxConnections: number;
  /** Longest a query waits for a pooled database connection (and for a new connection) before it fails with 503. */
  readonly databasePoolTimeoutSeconds: number;
  /** Connections in the pool to PostgreSQL (the embedded database always gets one). */
  readonly databasePoolSize: number;
  /** Do not migrate at start: refuse to start while a migration is pending (`sigil-server migrate` applies them). */
  readonly skipMigrations: boolean;
  /** CSRs and JWT requests waiting in the signing queue over every agent; past it, signing answers 503. */
  readonly signingQueueMaxItems: number;
  /** Worker threads signing X.509-SVIDs for agents; 0: on the event loop. */
  readonly signingWorkers: number;
  /** Per-agent token bucket of the agent's own SVID renewals: refill per second (may be below 1). */
  readonly agentRenewRatePerSecond: number;
  /** Size of that bucket. */
  readonly agentRenewBurst: number;
  /** Accept queue length of the TLS listener (the kernel caps it at `net.core.somaxconn`). */
  readonly listenBacklog: number;
}

/** `upstream_authority`: `disk` (the upstream CA's PEM files) or `sigil` (an upstream Sigil server). */
export const UPSTREAM_AUTHORITIES = ['disk', 'sigil'] as const;

/** Nest injection token of the frozen {@link ServerConfig}. */
export const SERVER_CONFIG = Symbol('SERVER_CONFIG');

export const DEFAULT_TRUST_DOMAIN = 'example.org';
export const DEFAULT_DATA_DIR = '.sigil/server';
export const DEFAULT_ADMIN_SOCKET = '/tmp/sigil-server/private/api.sock';
/** SPIRE's default bind address and port: agents on other hosts must reach the server. */
export const DEFAULT_BIND_ADDRESS = '0.0.0.0';
export const DEFAULT_PORT = 8081;
/**
 * Attestations per second per source address, and the burst: SPIRE allows 1 per second per IP; ours is higher so a
 * fleet behind one NAT address that restarts at once (x509pop: 2 requests per agent) drains in seconds, not minutes.
 */
export const DEFAULT_ATTESTATION_RATE = 10;
export const DEFAULT_ATTESTATION_BURST = 100;
/** What a refused attestation (403: unknown join token, chain or signature that does not verify) costs in tokens. */
export const ATTESTATION_REFUSAL_COST = 10;
/** Bundle, health and metrics requests per second per source address (probes, scrapers, federated peers). */
export const DEFAULT_PUBLIC_READ_RATE = 20;
export const DEFAULT_PUBLIC_READ_BURST = 200;
/**
 * TLS port connection defaults (README, "sigil-server" Limits). An agent holds one connection for its sync long-poll
 * and opens one per other request (renewal, signing), so about 2 at a time: 16384 in total leaves room for 8000
 * agents on one replica. Per address, 1024 lets 512 agents share one NAT address. A new connection costs a TLS
 * handshake (~1 ms of CPU): 100 per second per address with a burst of 1000 covers those 512 agents reconnecting at
 * once (a long-poll every 25 s each is 20 per second) and holds one address to about a tenth of a core.
 */
export const DEFAULT_MAX_CONNECTIONS = 16_384;
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1024;
export const DEFAULT_TLS_HANDSHAKE_RATE = 100;
export const DEFAULT_TLS_HANDSHAKE_BURST = 1000;
export const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECONDS = 10;
export const DEFAULT_HTTP_HEADERS_TIMEOUT_SECONDS = 10;
/** A request body is at most 1 MiB (request-body.ts): 30 s is 35 KB/s. */
export const DEFAULT_HTTP_REQUEST_TIMEOUT_SECONDS = 30;
export const DEFAULT_HTTP_IDLE_TIMEOUT_SECONDS = 10;
/** An agent syncs once per change, or every 25 s when idle: 5 per second is far above a working agent's need. */
export const DEFAULT_AGENT_SYNC_RATE = 5;
export const DEFAULT_AGENT_SYNC_BURST = 20;
export const DEFAULT_AGENT_STATUS_CACHE_TTL_SECONDS = 30;
/** SPIRE's CA manager checks its keys every 10 s as well. */
export const DEFAULT_AUTHORITY_CHECK_INTERVAL_SECONDS = 10;
/** 30 days, the default of SPIRE's `agent purge -expiredFor` (SPIRE's automatic pruning is off unless configured). */
export const DEFAULT_PRUNE_ATTESTED_NODES_EXPIRED_FOR_SECONDS = 30 * 24 * 3600;
/**
 * Long-polls per agent: one for the agent's current poll, one for a poll of its previous connection or process that
 * the server has not noticed is gone yet.
 */
export const DEFAULT_AGENT_MAX_LONG_POLLS = 2;
/**
 * Connections per agent: an agent keeps ~12 (4 for its renewal, sync and X.509 signing, 8 for JWT-SVIDs), and as many
 * again for a moment after it restarts, until the server's idle timeout closes the old ones. One agent holding 1,000
 * (each new one a mTLS handshake and a chain read, each kept-alive one a request a second) kept two cores busy
 * between itself and the server (`bench/dos/agent-db.bench.ts`).
 */
export const DEFAULT_AGENT_MAX_CONNECTIONS = 64;
/** How long a query waits for a pooled database connection (pg-pool `connectionTimeoutMillis`). */
export const DEFAULT_DATABASE_POOL_TIMEOUT_SECONDS = 10;
/** Connections each server holds in its pool to PostgreSQL (pg-pool `max`), besides the one that listens. */
export const DEFAULT_DATABASE_POOL_SIZE = 10;
/**
 * The TLS listener's accept queue. Node's default is 511: a burst of connections beyond it (an attacker's, or a fleet
 * reconnecting) makes the kernel drop everyone's SYNs, which costs a legitimate client a 1 s retransmit before the
 * per-address caps can refuse anything. The kernel caps it at net.core.somaxconn (4096 on current kernels).
 */
export const DEFAULT_LISTEN_BACKLOG = 4096;

const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

/** Flags as commander hands them over (camelCase of the `--kebab-case` flag). */
export interface ServerConfigFlags {
  trustDomain?: string;
  dataDir?: string;
  bindAddress?: string;
  port?: string;
  databaseUrl?: string;
  adminSocket?: string;
  caKeyType?: string;
  caTtl?: string;
  x509SvidTtl?: string;
  jwtSvidTtl?: string;
  joinTokenTtl?: string;
  upstreamCaCert?: string;
  upstreamCaKey?: string;
  upstreamAuthority?: string;
  upstreamAgentSocket?: string;
  upstreamServerAddress?: string;
  downstreamCaMaxTtl?: string;
  kekFile?: string;
  logLevel?: string;
  logFormat?: string;
  logFile?: string;
  metricsAddress?: string;
  bundleEndpointAddress?: string;
  bundleEndpointProfile?: string;
  bundleEndpointCertFile?: string;
  bundleEndpointKeyFile?: string;
  jwtIssuer?: string;
  oidcDiscoveryAddress?: string;
  oidcJwksUri?: string;
  federationWebCaFile?: string;
  x509popCaBundle?: string;
  /** Repeatable: `<type>[:<option>=<value>,…]`. */
  nodeAttestor?: string[];
  agentSignRate?: string;
  agentSignBurst?: string;
  attestationRate?: string;
  attestationBurst?: string;
  publicReadRate?: string;
  publicReadBurst?: string;
  maxConnections?: string;
  maxConnectionsPerAddress?: string;
  tlsHandshakeRate?: string;
  tlsHandshakeBurst?: string;
  tlsHandshakeTimeout?: string;
  httpHeadersTimeout?: string;
  httpRequestTimeout?: string;
  httpIdleTimeout?: string;
  agentSyncRate?: string;
  agentSyncBurst?: string;
  agentStatusCacheTtl?: string;
  authorityCheckInterval?: string;
  pruneAttestedNodesExpiredFor?: string;
  agentJwtSignRate?: string;
  agentJwtSignBurst?: string;
  agentSignMaxInFlight?: string;
  agentMaxLongPolls?: string;
  agentMaxConnections?: string;
  databasePoolTimeout?: string;
  databasePoolSize?: string;
  skipMigrations?: boolean;
  signingQueueMaxItems?: string;
  signingWorkers?: string;
  agentRenewRate?: string;
  agentRenewBurst?: string;
  listenBacklog?: string;
}

export interface LoadServerConfigInput {
  flags?: ServerConfigFlags;
  env?: Readonly<Record<string, string | undefined>>;
  /** Path of a JSON config file (`--config`, else `SIGIL_CONFIG`). */
  file?: string;
  /** Directory relative paths are resolved against; defaults to `process.cwd()`. */
  cwd?: string;
}

/** Every problem found in the configuration, each naming its key as the operator wrote it. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';

  constructor(readonly problems: readonly string[]) {
    super(`invalid server configuration: ${problems.join('; ')}`);
  }
}

class RawServerConfig {
  @IsOptional()
  @IsTrustDomainName()
  trust_domain?: unknown;

  @IsOptional() @IsNonEmptyString() data_dir?: unknown;

  @IsOptional()
  @ConfigRule(
    'isBindAddress',
    (value) => typeof value === 'string' && /^[A-Za-z0-9.:[\]-]{1,253}$/.test(value),
    'must be an IP address or host name',
  )
  bind_address?: unknown;

  @IsOptional()
  @ConfigRule(
    'isPort',
    (value) => {
      const port = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : value;
      return typeof port === 'number' && Number.isInteger(port) && port >= 0 && port <= 65535;
    },
    'must be a port number from 0 to 65535',
  )
  port?: unknown;

  // The value is never echoed: a database URL may carry a password.
  @IsOptional()
  @ValidateBy({
    name: 'isPostgresUrl',
    validator: {
      validate: (value: unknown) => {
        if (typeof value !== 'string') return false;
        try {
          const url = new URL(value);
          return (url.protocol === 'postgres:' || url.protocol === 'postgresql:') && url.hostname !== '';
        } catch {
          return false;
        }
      },
      defaultMessage: () => 'must be a postgres:// or postgresql:// URL with a host',
    },
  })
  database_url?: unknown;

  @IsOptional()
  @ConfigRule('isSocketPath', isSocketPath, SOCKET_PATH_RULE)
  admin_socket?: unknown;

  @IsOptional() @IsOneOf(CA_KEY_TYPES) ca_key_type?: unknown;
  @IsOptional() @IsDurationSeconds(60, MAX_TTL_SECONDS) ca_ttl?: unknown;
  @IsOptional() @IsDurationSeconds(1, MAX_TTL_SECONDS) x509_svid_ttl?: unknown;
  @IsOptional() @IsDurationSeconds(1, 86400) jwt_svid_ttl?: unknown;
  @IsOptional() @IsDurationSeconds(1, 7 * 86400) join_token_ttl?: unknown;
  @IsOptional() @IsNonEmptyString() upstream_ca_cert_file?: unknown;
  @IsOptional() @IsNonEmptyString() upstream_ca_key_file?: unknown;
  @IsOptional() @IsOneOf(UPSTREAM_AUTHORITIES) upstream_authority?: unknown;
  @IsOptional() @ConfigRule('isSocketPath', isSocketPath, SOCKET_PATH_RULE) upstream_agent_socket?: unknown;
  @IsOptional()
  @ConfigRule(
    'isServerAddress',
    (value) => typeof value === 'string' && typeof parseHostPort(value) !== 'string',
    'must be HOST:PORT of the upstream Sigil server, e.g. sigil.example.org:8081',
  )
  upstream_server_address?: unknown;
  @IsOptional() @IsDurationSeconds(60, MAX_TTL_SECONDS) downstream_ca_max_ttl?: unknown;
  @IsOptional() @IsNonEmptyString() kek_file?: unknown;

  @IsOptional()
  @ValidateBy({
    name: 'isKek',
    validator: {
      validate: (value: unknown) =>
        typeof value === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(value) && Buffer.from(value, 'base64').length === 32,
      defaultMessage: () => 'must be the base64 encoding of exactly 32 bytes',
    },
  })
  kek?: unknown;

  @IsOptional() @IsOneOf(LOG_LEVELS) log_level?: unknown;
  @IsOptional() @IsOneOf(LOG_FORMATS) log_format?: unknown;
  @IsOptional() @IsNonEmptyString() log_file?: unknown;
  @IsOptional() @ConfigRule('isListenAddress', isListenAddress, LISTEN_ADDRESS_RULE) metrics_address?: unknown;
  @IsOptional()
  @ConfigRule('isListenAddress', isListenAddress, LISTEN_ADDRESS_RULE)
  bundle_endpoint_address?: unknown;
  @IsOptional() @IsOneOf(BUNDLE_ENDPOINT_PROFILES) bundle_endpoint_profile?: unknown;
  @IsOptional() @IsNonEmptyString() bundle_endpoint_cert_file?: unknown;
  @IsOptional() @IsNonEmptyString() bundle_endpoint_key_file?: unknown;
  @IsOptional()
  @ConfigRule('isHttpsUrl', (value) => urlProblem(value, ['https:']) === undefined, HTTPS_URL_RULE)
  jwt_issuer?: unknown;
  @IsOptional()
  @ConfigRule('isListenAddress', isListenAddress, LISTEN_ADDRESS_RULE)
  oidc_discovery_address?: unknown;
  @IsOptional()
  @ConfigRule('isHttpUrl', (value) => urlProblem(value, ['https:', 'http:']) === undefined, HTTP_URL_RULE)
  oidc_jwks_uri?: unknown;
  @IsOptional() @IsNonEmptyString() federation_web_ca_file?: unknown;
  @IsOptional() @IsNonEmptyString() x509pop_ca_bundle?: unknown;
  // Checked by nodeAttestorSettings: a list of `<type>[:<option>=<value>,…]` (flag, env) or an object (file).
  @IsOptional() node_attestors?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_sign_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_sign_burst?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) attestation_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) attestation_burst?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) public_read_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) public_read_burst?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) max_connections?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) max_connections_per_address?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) tls_handshake_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) tls_handshake_burst?: unknown;
  @IsOptional() @IsDurationSeconds(1, 300) tls_handshake_timeout?: unknown;
  @IsOptional() @IsDurationSeconds(1, 300) http_headers_timeout?: unknown;
  @IsOptional() @IsDurationSeconds(1, 3600) http_request_timeout?: unknown;
  @IsOptional() @IsDurationSeconds(1, 3600) http_idle_timeout?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_sync_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_sync_burst?: unknown;
  @IsOptional() @IsDurationSeconds(1, 3600) agent_status_cache_ttl?: unknown;
  @IsOptional() @IsDurationSeconds(1, 3600) authority_check_interval?: unknown;
  @IsOptional() @IsDurationSeconds(0, 10 * 365 * 24 * 3600) prune_attested_nodes_expired_for?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_jwt_sign_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) agent_jwt_sign_burst?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000) agent_sign_max_in_flight?: unknown;
  @IsOptional() @IsCountFrom(1, 100) agent_max_long_polls?: unknown;
  @IsOptional() @IsCountFrom(1, 100_000) agent_max_connections?: unknown;
  @IsOptional() @IsDurationSeconds(1, 300) database_pool_timeout?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000) database_pool_size?: unknown;
  @IsOptional() @IsBooleanLike() skip_migrations?: unknown;
  @IsOptional() @IsCountFrom(MAX_CSR_BATCH, 10_000_000) signing_queue_max_items?: unknown;
  @IsOptional() @IsCountFrom(0, MAX_SIGNING_WORKERS) signing_workers?: unknown;
  @IsOptional() @IsNumberFrom(0.001, 1_000) agent_renew_rate?: unknown;
  @IsOptional() @IsCountFrom(1, 10_000) agent_renew_burst?: unknown;
  @IsOptional() @IsCountFrom(1, 65_535) listen_backlog?: unknown;
}

type RawKey = Exclude<keyof RawServerConfig, never>;

/** Where each key can come from; `null` means not from that source. */
const SOURCES: Record<RawKey, ConfigSource<keyof ServerConfigFlags>> = {
  trust_domain: { flag: 'trustDomain', env: 'SIGIL_TRUST_DOMAIN', file: true },
  data_dir: { flag: 'dataDir', env: 'SIGIL_DATA_DIR', file: true },
  bind_address: { flag: 'bindAddress', env: 'SIGIL_BIND_ADDRESS', file: true },
  port: { flag: 'port', env: 'SIGIL_PORT', file: true },
  database_url: { flag: 'databaseUrl', env: 'DATABASE_URL', file: true },
  admin_socket: { flag: 'adminSocket', env: 'SIGIL_ADMIN_SOCKET', file: true },
  ca_key_type: { flag: 'caKeyType', env: 'SIGIL_CA_KEY_TYPE', file: true },
  ca_ttl: { flag: 'caTtl', env: 'SIGIL_CA_TTL', file: true },
  x509_svid_ttl: { flag: 'x509SvidTtl', env: 'SIGIL_X509_SVID_TTL', file: true },
  jwt_svid_ttl: { flag: 'jwtSvidTtl', env: 'SIGIL_JWT_SVID_TTL', file: true },
  join_token_ttl: { flag: 'joinTokenTtl', env: 'SIGIL_JOIN_TOKEN_TTL', file: true },
  upstream_ca_cert_file: { flag: 'upstreamCaCert', env: 'SIGIL_UPSTREAM_CA_CERT_FILE', file: true },
  upstream_ca_key_file: { flag: 'upstreamCaKey', env: 'SIGIL_UPSTREAM_CA_KEY_FILE', file: true },
  upstream_authority: { flag: 'upstreamAuthority', env: 'SIGIL_UPSTREAM_AUTHORITY', file: true },
  upstream_agent_socket: { flag: 'upstreamAgentSocket', env: 'SIGIL_UPSTREAM_AGENT_SOCKET', file: true },
  upstream_server_address: { flag: 'upstreamServerAddress', env: 'SIGIL_UPSTREAM_SERVER_ADDRESS', file: true },
  downstream_ca_max_ttl: { flag: 'downstreamCaMaxTtl', env: 'SIGIL_DOWNSTREAM_CA_MAX_TTL', file: true },
  kek_file: { flag: 'kekFile', env: 'SIGIL_KEK_FILE', file: true },
  // A secret never travels in argv (visible in ps) or in a config file that gets copied around.
  kek: { flag: null, env: 'SIGIL_KEK', file: false },
  log_level: { flag: 'logLevel', env: 'SIGIL_LOG_LEVEL', file: true },
  log_format: { flag: 'logFormat', env: 'SIGIL_LOG_FORMAT', file: true },
  log_file: { flag: 'logFile', env: 'SIGIL_LOG_FILE', file: true },
  metrics_address: { flag: 'metricsAddress', env: 'SIGIL_METRICS_ADDRESS', file: true },
  bundle_endpoint_address: { flag: 'bundleEndpointAddress', env: 'SIGIL_BUNDLE_ENDPOINT_ADDRESS', file: true },
  bundle_endpoint_profile: { flag: 'bundleEndpointProfile', env: 'SIGIL_BUNDLE_ENDPOINT_PROFILE', file: true },
  bundle_endpoint_cert_file: { flag: 'bundleEndpointCertFile', env: 'SIGIL_BUNDLE_ENDPOINT_CERT_FILE', file: true },
  bundle_endpoint_key_file: { flag: 'bundleEndpointKeyFile', env: 'SIGIL_BUNDLE_ENDPOINT_KEY_FILE', file: true },
  jwt_issuer: { flag: 'jwtIssuer', env: 'SIGIL_JWT_ISSUER', file: true },
  oidc_discovery_address: { flag: 'oidcDiscoveryAddress', env: 'SIGIL_OIDC_DISCOVERY_ADDRESS', file: true },
  oidc_jwks_uri: { flag: 'oidcJwksUri', env: 'SIGIL_OIDC_JWKS_URI', file: true },
  federation_web_ca_file: { flag: 'federationWebCaFile', env: 'SIGIL_FEDERATION_WEB_CA_FILE', file: true },
  x509pop_ca_bundle: { flag: 'x509popCaBundle', env: 'SIGIL_X509POP_CA_BUNDLE', file: true },
  node_attestors: { flag: 'nodeAttestor', env: 'SIGIL_NODE_ATTESTORS', file: true },
  agent_sign_rate: { flag: 'agentSignRate', env: 'SIGIL_AGENT_SIGN_RATE', file: true },
  agent_sign_burst: { flag: 'agentSignBurst', env: 'SIGIL_AGENT_SIGN_BURST', file: true },
  attestation_rate: { flag: 'attestationRate', env: 'SIGIL_ATTESTATION_RATE', file: true },
  attestation_burst: { flag: 'attestationBurst', env: 'SIGIL_ATTESTATION_BURST', file: true },
  public_read_rate: { flag: 'publicReadRate', env: 'SIGIL_PUBLIC_READ_RATE', file: true },
  public_read_burst: { flag: 'publicReadBurst', env: 'SIGIL_PUBLIC_READ_BURST', file: true },
  max_connections: { flag: 'maxConnections', env: 'SIGIL_MAX_CONNECTIONS', file: true },
  max_connections_per_address: {
    flag: 'maxConnectionsPerAddress',
    env: 'SIGIL_MAX_CONNECTIONS_PER_ADDRESS',
    file: true,
  },
  tls_handshake_rate: { flag: 'tlsHandshakeRate', env: 'SIGIL_TLS_HANDSHAKE_RATE', file: true },
  tls_handshake_burst: { flag: 'tlsHandshakeBurst', env: 'SIGIL_TLS_HANDSHAKE_BURST', file: true },
  tls_handshake_timeout: { flag: 'tlsHandshakeTimeout', env: 'SIGIL_TLS_HANDSHAKE_TIMEOUT', file: true },
  http_headers_timeout: { flag: 'httpHeadersTimeout', env: 'SIGIL_HTTP_HEADERS_TIMEOUT', file: true },
  http_request_timeout: { flag: 'httpRequestTimeout', env: 'SIGIL_HTTP_REQUEST_TIMEOUT', file: true },
  http_idle_timeout: { flag: 'httpIdleTimeout', env: 'SIGIL_HTTP_IDLE_TIMEOUT', file: true },
  agent_sync_rate: { flag: 'agentSyncRate', env: 'SIGIL_AGENT_SYNC_RATE', file: true },
  agent_sync_burst: { flag: 'agentSyncBurst', env: 'SIGIL_AGENT_SYNC_BURST', file: true },
  agent_status_cache_ttl: { flag: 'agentStatusCacheTtl', env: 'SIGIL_AGENT_STATUS_CACHE_TTL', file: true },
  authority_check_interval: { flag: 'authorityCheckInterval', env: 'SIGIL_AUTHORITY_CHECK_INTERVAL', file: true },
  prune_attested_nodes_expired_for: {
    flag: 'pruneAttestedNodesExpiredFor',
    env: 'SIGIL_PRUNE_ATTESTED_NODES_EXPIRED_FOR',
    file: true,
  },
  agent_jwt_sign_rate: { flag: 'agentJwtSignRate', env: 'SIGIL_AGENT_JWT_SIGN_RATE', file: true },
  agent_jwt_sign_burst: { flag: 'agentJwtSignBurst', env: 'SIGIL_AGENT_JWT_SIGN_BURST', file: true },
  agent_sign_max_in_flight: { flag: 'agentSignMaxInFlight', env: 'SIGIL_AGENT_SIGN_MAX_IN_FLIGHT', file: true },
  agent_max_long_polls: { flag: 'agentMaxLongPolls', env: 'SIGIL_AGENT_MAX_LONG_POLLS', file: true },
  agent_max_connections: { flag: 'agentMaxConnections', env: 'SIGIL_AGENT_MAX_CONNECTIONS', file: true },
  database_pool_timeout: { flag: 'databasePoolTimeout', env: 'SIGIL_DATABASE_POOL_TIMEOUT', file: true },
  database_pool_size: { flag: 'databasePoolSize', env: 'SIGIL_DATABASE_POOL_SIZE', file: true },
  skip_migrations: { flag: 'skipMigrations', env: 'SIGIL_SKIP_MIGRATIONS', file: true },
  signing_queue_max_items: { flag: 'signingQueueMaxItems', env: 'SIGIL_SIGNING_QUEUE_MAX_ITEMS', file: true },
  signing_workers: { flag: 'signingWorkers', env: 'SIGIL_SIGNING_WORKERS', file: true },
  agent_renew_rate: { flag: 'agentRenewRate', env: 'SIGIL_AGENT_RENEW_RATE', file: true },
  agent_renew_burst: { flag: 'agentRenewBurst', env: 'SIGIL_AGENT_RENEW_BURST', file: true },
  listen_backlog: { flag: 'listenBacklog', env: 'SIGIL_LISTEN_BACKLOG', file: true },
};

/**
 * Loads and validates the server configuration. Throws {@link ConfigError} listing every bad key, named as the
 * operator wrote it (`--port`, `SIGIL_PORT` or the file's `port`).
 */
export function loadServerConfig(input: LoadServerConfigInput = {}): ServerConfig {
  const { flags = {}, env = {}, cwd = process.cwd() } = input;
  const problems: string[] = [];
  const filePath = input.file ?? env['SIGIL_CONFIG'];
  const fileValues = filePath ? readJsonConfigFile(resolve(cwd, filePath), SOURCES, problems) : {};

  const { values, label } = layerConfig(SOURCES, flags, env, fileValues);
  const raw = Object.assign(new RawServerConfig(), values);

  for (const error of validateSync(raw)) {
    for (const message of Object.values(error.constraints ?? {})) {
      problems.push(`${label.get(error.property as RawKey) ?? error.property}: ${message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const str = (key: RawKey, fallback: string): string => (raw[key] as string | undefined) ?? fallback;
  const seconds = (key: RawKey, fallback: number): number =>
    raw[key] === undefined ? fallback : (parseDurationSeconds(raw[key]) as number);
  const path = (value: string): string => (isAbsolute(value) ? value : resolve(cwd, value));
  const count = (key: RawKey, fallback: number): number => (raw[key] === undefined ? fallback : Number(raw[key]));

  const caTtlSeconds = seconds('ca_ttl', 24 * 3600);
  const x509SvidTtlSeconds = seconds('x509_svid_ttl', 3600);
  const jwtSvidTtlSeconds = seconds('jwt_svid_ttl', 300);
  // A leaf never outlives its CA (the CA cuts it short), so a TTL beyond the CA's would silently be cut short. The key
  // blamed is the one the operator set: the SVID TTL if explicit, else the CA TTL that went below its default.
  for (const [key, ttl] of [
    ['x509_svid_ttl', x509SvidTtlSeconds],
    ['jwt_svid_ttl', jwtSvidTtlSeconds],
  ] as const) {
    if (ttl <= caTtlSeconds) continue;
    problems.push(
      raw[key] !== undefined
        ? `${label.get(key)}: must not exceed the CA TTL (${caTtlSeconds}s)`
        : `${label.get('ca_ttl')}: must be at least the default ${key} (${ttl}s), or set ${key} lower`,
    );
  }
  const upstreamCert = raw.upstream_ca_cert_file as string | undefined;
  const upstreamKey = raw.upstream_ca_key_file as string | undefined;
  if ((upstreamCert === undefined) !== (upstreamKey === undefined)) {
    const missing = upstreamCert === undefined ? 'upstream_ca_cert_file' : 'upstream_ca_key_file';
    problems.push(`${missing}: required when the other upstream CA file is set`);
  }
  const upstreamSigil = upstreamSigilConfig(raw, label, path, problems);
  if (raw.kek !== undefined && raw.kek_file !== undefined) {
    problems.push(`${label.get('kek_file')}: set either SIGIL_KEK or the KEK file, not both`);
  }
  const httpHeadersTimeoutSeconds = seconds('http_headers_timeout', DEFAULT_HTTP_HEADERS_TIMEOUT_SECONDS);
  const httpRequestTimeoutSeconds = seconds('http_request_timeout', DEFAULT_HTTP_REQUEST_TIMEOUT_SECONDS);
  // Node refuses a headers timeout longer than the request timeout (the headers are part of the request).
  if (httpHeadersTimeoutSeconds > httpRequestTimeoutSeconds) {
    const key = raw.http_headers_timeout !== undefined ? 'http_headers_timeout' : 'http_request_timeout';
    problems.push(
      `${label.get(key)}: the headers timeout (${httpHeadersTimeoutSeconds}s) must not exceed the request timeout ` +
        `(${httpRequestTimeoutSeconds}s)`,
    );
  }
  if (raw.agent_sign_burst !== undefined && Number(raw.agent_sign_burst) < MAX_CSR_BATCH) {
    // Counted in CSRs since issue 16 (it was requests): a smaller bucket could never pass a full batch.
    problems.push(
      `${label.get('agent_sign_burst')}: must be at least ${MAX_CSR_BATCH}, the CSRs of one full batch (the burst ` +
        `counts CSRs, not requests), got '${showConfigValue(raw.agent_sign_burst)}'`,
    );
  }
  if (raw.attestation_burst !== undefined && Number(raw.attestation_burst) < ATTESTATION_REFUSAL_COST) {
    // A smaller bucket could never pay for one refused attestation, and its address would stay refused.
    problems.push(
      `${label.get('attestation_burst')}: must be at least ${ATTESTATION_REFUSAL_COST}, what one refused ` +
        `attestation costs, got '${showConfigValue(raw.attestation_burst)}'`,
    );
  }
  const bundleEndpoint = bundleEndpointConfig(raw, label, path, problems);
  const oidcDiscovery = oidcDiscoveryConfig(raw, label, problems);
  const nodeAttestors = nodeAttestorSettings(
    raw.node_attestors,
    label.get('node_attestors') as string,
    raw.x509pop_ca_bundle === undefined ? undefined : path(raw.x509pop_ca_bundle as string),
    problems,
  );
  if (problems.length > 0) throw new ConfigError(problems);

  const port = raw.port === undefined ? DEFAULT_PORT : Number(raw.port);
  const config: ServerConfig = {
    trustDomain: TrustDomain.parse(str('trust_domain', DEFAULT_TRUST_DOMAIN)),
    trustDomainIsDefault: raw.trust_domain === undefined,
    dataDir: path(str('data_dir', DEFAULT_DATA_DIR)),
    bindAddress: str('bind_address', DEFAULT_BIND_ADDRESS),
    port,
    adminSocket: path(str('admin_socket', DEFAULT_ADMIN_SOCKET)),
    caKeyType: str('ca_key_type', 'ec-p256') as CaKeyType,
    caTtlSeconds,
    x509SvidTtlSeconds,
    jwtSvidTtlSeconds,
    joinTokenTtlSeconds: seconds('join_token_ttl', 600),
    logLevel: str('log_level', 'info') as LogLevel,
    logFormat: str('log_format', 'json') as LogFormat,
    ...(raw.log_file !== undefined && { logFile: path(raw.log_file as string) }),
    ...(raw.metrics_address !== undefined && { metricsAddress: listenAddress(raw.metrics_address as string) }),
    ...(bundleEndpoint !== undefined && { bundleEndpoint }),
    ...(raw.jwt_issuer !== undefined && { jwtIssuer: raw.jwt_issuer as string }),
    ...(oidcDiscovery !== undefined && { oidcDiscovery }),
    ...(raw.federation_web_ca_file !== undefined && {
      federationWebCaFile: path(raw.federation_web_ca_file as string),
    }),
    agentSignRatePerSecond: raw.agent_sign_rate === undefined ? DEFAULT_AGENT_SIGN_RATE : Number(raw.agent_sign_rate),
    agentSignBurst: raw.agent_sign_burst === undefined ? DEFAULT_AGENT_SIGN_BURST : Number(raw.agent_sign_burst),
    attestationRatePerSecond: count('attestation_rate', DEFAULT_ATTESTATION_RATE),
    attestationBurst: count('attestation_burst', DEFAULT_ATTESTATION_BURST),
    publicReadRatePerSecond: count('public_read_rate', DEFAULT_PUBLIC_READ_RATE),
    publicReadBurst: count('public_read_burst', DEFAULT_PUBLIC_READ_BURST),
    maxConnections: count('max_connections', DEFAULT_MAX_CONNECTIONS),
    maxConnectionsPerAddress: count('max_connections_per_address', DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
    tlsHandshakeRatePerSecond: count('tls_handshake_rate', DEFAULT_TLS_HANDSHAKE_RATE),
    tlsHandshakeBurst: count('tls_handshake_burst', DEFAULT_TLS_HANDSHAKE_BURST),
    tlsHandshakeTimeoutSeconds: seconds('tls_handshake_timeout', DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECONDS),
    httpHeadersTimeoutSeconds,
    httpRequestTimeoutSeconds,
    httpIdleTimeoutSeconds: seconds('http_idle_timeout', DEFAULT_HTTP_IDLE_TIMEOUT_SECONDS),
    agentSyncRatePerSecond: count('agent_sync_rate', DEFAULT_AGENT_SYNC_RATE),
    agentSyncBurst: count('agent_sync_burst', DEFAULT_AGENT_SYNC_BURST),
    agentStatusCacheTtlSeconds: seconds('agent_status_cache_ttl', DEFAULT_AGENT_STATUS_CACHE_TTL_SECONDS),
    authorityCheckIntervalSeconds: seconds('authority_check_interval', DEFAULT_AUTHORITY_CHECK_INTERVAL_SECONDS),
    pruneAttestedNodesExpiredForSeconds: seconds(
      'prune_attested_nodes_expired_for',
      DEFAULT_PRUNE_ATTESTED_NODES_EXPIRED_FOR_SECONDS,
    ),
    agentJwtSignRatePerSecond:
      raw.agent_jwt_sign_rate === undefined ? DEFAULT_AGENT_JWT_SIGN_RATE : Number(raw.agent_jwt_sign_rate),
    agentJwtSignBurst:
      raw.agent_jwt_sign_burst === undefined ? DEFAULT_AGENT_JWT_SIGN_BURST : Number(raw.agent_jwt_sign_burst),
    agentSignMaxInFlight:
      raw.agent_sign_max_in_flight === undefined
        ? DEFAULT_AGENT_SIGN_MAX_IN_FLIGHT
        : Number(raw.agent_sign_max_in_flight),
    agentMaxLongPolls: count('agent_max_long_polls', DEFAULT_AGENT_MAX_LONG_POLLS),
    agentMaxConnections: count('agent_max_connections', DEFAULT_AGENT_MAX_CONNECTIONS),
    databasePoolTimeoutSeconds: seconds('database_pool_timeout', DEFAULT_DATABASE_POOL_TIMEOUT_SECONDS),
    databasePoolSize: count('database_pool_size', DEFAULT_DATABASE_POOL_SIZE),
    skipMigrations: toConfigBoolean(raw.skip_migrations) ?? false,
    signingQueueMaxItems: count('signing_queue_max_items', DEFAULT_SIGNING_QUEUE_MAX_ITEMS),
    signingWorkers: count('signing_workers', defaultSigningWorkers(availableParallelism())),
    agentRenewRatePerSecond: count('agent_renew_rate', DEFAULT_AGENT_RENEW_RATE),
    agentRenewBurst: count('agent_renew_burst', DEFAULT_AGENT_RENEW_BURST),
    listenBacklog: count('listen_backlog', DEFAULT_LISTEN_BACKLOG),
    downstreamCaMaxTtlSeconds: seconds('downstream_ca_max_ttl', caTtlSeconds),
    ...(upstreamSigil !== undefined && { upstreamSigil: Object.freeze(upstreamSigil) }),
    ...(raw.database_url !== undefined && { databaseUrl: raw.database_url as string }),
    ...(upstreamCert !== undefined &&
      upstreamKey !== undefined && {
        upstreamCa: Object.freeze({ certFile: path(upstreamCert), keyFile: path(upstreamKey) }),
      }),
    ...(raw.kek_file !== undefined && { kekFile: path(raw.kek_file as string) }),
    ...(raw.kek !== undefined && { kek: raw.kek as string }),
    nodeAttestors,
  };
  return Object.freeze(config);
}

/** Where OIDC discovery is served and what its document says (see {@link ServerConfig.oidcDiscovery}). */
export interface OidcDiscoveryConfig {
  readonly address: HostPort;
  /** The `issuer` of the document: `jwt_issuer`. */
  readonly issuer: string;
  /** The document's `jwks_uri`: `oidc_jwks_uri`, else `<issuer>/keys`. */
  readonly jwksUri: string;
}

/** What is wrong with `value` as an issuer-style URL of one of `protocols`, or undefined when nothing is. */
function urlProblem(value: unknown, protocols: readonly string[]): string | undefined {
  if (typeof value !== 'string' || !URL.canParse(value)) return 'not a URL';
  const url = new URL(value);
  if (!protocols.includes(url.protocol)) return `scheme ${url.protocol} not allowed`;
  // OIDC Discovery 1.0 §3: the issuer has no query or fragment; credentials in a URL others fetch would leak.
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '' || value.includes('#')) {
    return 'credentials, query or fragment present';
  }
  return undefined;
}

/** OIDC discovery from `oidc_discovery_address`, `jwt_issuer` and `oidc_jwks_uri`: off unless an address is set. */
function oidcDiscoveryConfig(
  raw: RawServerConfig,
  label: ReadonlyMap<RawKey, string>,
  problems: string[],
): OidcDiscoveryConfig | undefined {
  if (raw.oidc_discovery_address === undefined) {
    if (raw.oidc_jwks_uri !== undefined) problems.push(`${label.get('oidc_jwks_uri')}: needs oidc_discovery_address`);
    return undefined;
  }
  const issuer = raw.jwt_issuer as string | undefined;
  if (issuer === undefined) {
    problems.push(
      `${label.get('oidc_discovery_address')}: needs jwt_issuer, the issuer the discovery document names and ` +
        'JWT-SVIDs carry',
    );
    return undefined;
  }
  return {
    address: listenAddress(raw.oidc_discovery_address as string),
    issuer,
    jwksUri: (raw.oidc_jwks_uri as string | undefined) ?? `${issuer.replace(/\/+$/, '')}/keys`,
  };
}

/**
 * `upstream_authority: sigil` and its two keys: both required with it, neither without it, and not together with
 * the upstream CA files (`disk`, which `upstream_authority` may also name explicitly).
 */
function upstreamSigilConfig(
  raw: RawServerConfig,
  label: ReadonlyMap<RawKey, string>,
  path: (value: string) => string,
  problems: string[],
): ServerConfig['upstreamSigil'] {
  const authority = raw.upstream_authority as (typeof UPSTREAM_AUTHORITIES)[number] | undefined;
  const socket = raw.upstream_agent_socket as string | undefined;
  const address = raw.upstream_server_address as string | undefined;
  if (authority !== 'sigil') {
    for (const key of ['upstream_agent_socket', 'upstream_server_address'] as const) {
      if (raw[key] !== undefined) problems.push(`${label.get(key)}: needs upstream_authority sigil`);
    }
    if (authority === 'disk' && raw.upstream_ca_cert_file === undefined && raw.upstream_ca_key_file === undefined) {
      problems.push(`${label.get('upstream_authority')}: disk needs upstream_ca_cert_file and upstream_ca_key_file`);
    }
    return undefined;
  }
  for (const key of ['upstream_ca_cert_file', 'upstream_ca_key_file'] as const) {
    if (raw[key] !== undefined) {
      problems.push(`${label.get(key)}: only for upstream_authority disk, not sigil (the upstream server signs)`);
    }
  }
  if (socket === undefined || address === undefined) {
    const missing = socket === undefined ? 'upstream_agent_socket' : 'upstream_server_address';
    problems.push(`${missing}: required by upstream_authority sigil`);
    return undefined;
  }
  return { agentSocket: path(socket), serverAddress: parseHostPort(address) as HostPort };
}

/**
 * The bundle endpoint from `bundle_endpoint_*`: off unless an address is set; `https_spiffe` by default (SPIRE's
 * default too), `https_web` needs both a certificate and a key file, which `https_spiffe` does not take.
 */
function bundleEndpointConfig(
  raw: RawServerConfig,
  label: ReadonlyMap<RawKey, string>,
  path: (value: string) => string,
  problems: string[],
): BundleEndpointConfig | undefined {
  const certFile = raw.bundle_endpoint_cert_file as string | undefined;
  const keyFile = raw.bundle_endpoint_key_file as string | undefined;
  const profile = (raw.bundle_endpoint_profile as BundleEndpointProfile | undefined) ?? 'https_spiffe';
  if (raw.bundle_endpoint_address === undefined) {
    for (const key of ['bundle_endpoint_profile', 'bundle_endpoint_cert_file', 'bundle_endpoint_key_file'] as const) {
      if (raw[key] !== undefined) problems.push(`${label.get(key)}: needs bundle_endpoint_address`);
    }
    return undefined;
  }
  const address = listenAddress(raw.bundle_endpoint_address as string);
  if (profile === 'https_spiffe') {
    for (const key of ['bundle_endpoint_cert_file', 'bundle_endpoint_key_file'] as const) {
      if (raw[key] !== undefined) {
        problems.push(`${label.get(key)}: only for the https_web profile (https_spiffe presents the server's SVID)`);
      }
    }
    return { address, profile };
  }
  if (certFile === undefined || keyFile === undefined) {
    const missing = certFile === undefined ? 'bundle_endpoint_cert_file' : 'bundle_endpoint_key_file';
    problems.push(`${label.get(missing)}: required by the https_web bundle endpoint profile`);
    return undefined;
  }
  return { address, profile, certFile: path(certFile), keyFile: path(keyFile) };
}

/**
 * The enabled node attestors: those of `--node-attestor` (repeatable), `SIGIL_NODE_ATTESTORS` (the same, separated
 * by spaces) or the file's `node_attestors` object (`{"x509pop": {"ca_bundle": "…"}}`, or an array of option
 * objects for an attestor enabled once per instance: `{"k8s_psat": [{"cluster": "a", …}, {"cluster": "b", …}]}`);
 * by default `join_token` alone. An attestor listed twice is the registry's to refuse (node-attestors.ts). `--x509pop-ca-bundle` (older than `--node-attestor`) enables x509pop with that bundle, or gives it to an
 * x509pop listed without one.
 */
function nodeAttestorSettings(
  value: unknown,
  source: string,
  x509popCaBundle: string | undefined,
  problems: string[],
): NodeAttestorSetting[] {
  const settings: NodeAttestorSetting[] = [];
  // An attestor listed twice is refused by the node-attestation registry, which knows the attestors that may be
  // enabled once per value of an option (k8s_psat: once per cluster).
  const add = (type: string, options: Record<string, string>): void => {
    settings.push({ type, options: Object.freeze(options), source });
  };
  const addObject = (type: string, where: string, options: unknown): void => {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) {
      problems.push(`${where}: must be an object of options, e.g. {}`);
      return;
    }
    const bad = Object.entries(options).filter(([, option]) => typeof option !== 'string');
    for (const [name] of bad) problems.push(`${where}.${name}: must be a string`);
    if (bad.length === 0) add(type, { ...(options as Record<string, string>) });
  };
  if (value === undefined) {
    add(JOIN_TOKEN_ATTESTOR.type, {});
  } else if (typeof value === 'string' || Array.isArray(value)) {
    const specs = typeof value === 'string' ? value.split(/\s+/).filter(Boolean) : value;
    if (specs.length === 0) problems.push(`${source}: must name at least one node attestor`);
    for (const spec of specs) {
      const parsed = typeof spec === 'string' ? parsePluginSpec(spec) : 'must be a string';
      if (typeof parsed === 'string') problems.push(`${source}: ${parsed}`);
      else add(parsed.type, parsed.options);
    }
  } else if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 0) problems.push(`${source}: must name at least one node attestor`);
    for (const [type, options] of entries) {
      if (!PLUGIN_NAME.test(type)) {
        problems.push(`${source}: ${JSON.stringify(type)} is not a node attestor type (a-z, 0-9 and _)`);
      } else if (Array.isArray(options)) {
        // One object per instance: `{"k8s_psat": [{"cluster": "a", …}, {"cluster": "b", …}]}`.
        if (options.length === 0) problems.push(`${source}.${type}: must hold at least one object of options`);
        options.forEach((each: unknown, index) => addObject(type, `${source}.${type}[${index}]`, each));
      } else {
        addObject(type, `${source}.${type}`, options);
      }
    }
  } else {
    problems.push(`${source}: must be an object of node attestors and their options`);
  }
  if (x509popCaBundle !== undefined) {
    const x509pop = settings.findIndex((setting) => setting.type === X509POP_ATTESTOR.type);
    const listed = settings[x509pop];
    if (listed === undefined) {
      settings.push({
        type: X509POP_ATTESTOR.type,
        options: { ca_bundle: x509popCaBundle },
        source: 'x509pop_ca_bundle',
      });
    } else if (listed.options['ca_bundle'] === undefined) {
      settings[x509pop] = { ...listed, options: Object.freeze({ ...listed.options, ca_bundle: x509popCaBundle }) };
    } else {
      problems.push(`${source}: x509pop has a ca_bundle option and the x509pop CA bundle is set too: set one`);
    }
  }
  return settings;
}
