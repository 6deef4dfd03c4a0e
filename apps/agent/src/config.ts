import 'reflect-metadata';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '@sigil/logging';
import { JOIN_TOKEN_ATTESTOR, JOIN_TOKEN_MAX_LENGTH, K8S_PSAT_ATTESTOR, X509POP_ATTESTOR } from '@sigil/agent-api';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import {
  ConfigRule,
  IsBooleanLike,
  toConfigBoolean,
  IsCountFrom,
  IsDurationSeconds,
  IsOneOf,
  IsTrustDomainName,
  LISTEN_ADDRESS_RULE,
  SOCKET_PATH_RULE,
  isListenAddress,
  listenAddress,
  type HostPort,
  isNonEmptyString,
  isSocketPath,
  layerConfig,
  PLUGIN_NAME,
  parsePluginSpec,
  parseCount,
  parseDurationSeconds,
  readJsonConfigFile,
  showConfigValue,
  sigilServerId,
  type ConfigSource,
} from '@sigil/runtime';
import { IsOptional, ValidateBy, validateSync, type ValidationArguments } from 'class-validator';
import {
  DEFAULT_WORKLOAD_API_SOCKET,
  WORKLOAD_API_LIMITS,
  type WorkloadApiLimits,
} from './endpoints/workload-api/workload-api.server.js';
import {
  DEFAULT_EXECUTABLE_SIZE_LIMIT,
  DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE,
} from './attestor/workload/unix/executable-digest.js';
import { JWT_SVID_LIMITS, type JwtSvidLimits } from './manager/jwt-signing-lane.js';
import { NODE_ATTESTORS } from './attestor/node/node-attestors.js';
import { WORKLOAD_ATTESTORS, knownTypes, unknownOptionProblem } from './attestor/workload/registry.js';
import { DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS } from './attestor/workload/workload-attestor.js';
import { parseServerAddress, type ServerAddress } from './client/server-address.js';
import { SDS_DEFAULTS, type SdsSettings } from './endpoints/sds/sds-secrets.js';
import { checkX509popFiles, parseTrustBundleFile, readNamedFile } from './config-files.js';

/**
 * Agent configuration: raw input (flags > `SIGIL_AGENT_*` env > JSON config file > defaults) validated once with
 * class-validator, converted to domain types and frozen before anything starts (SPIRE `cmd/spire-agent/cli/run`:
 * validateConfig, checkForUnknownConfig, NewAgentConfig). Files named by the configuration (trust bundle, x509pop
 * certificate and key) are read and parsed here too, so a bad file stops the agent before it contacts the server.
 */

export { LOG_LEVELS, type LogLevel };

/**
 * How the agent proves its node's identity when it has no valid stored SVID: the node attestor's type and its
 * options (attestor/node/, e.g. `{ type: 'x509pop', options: { cert_file, key_file } }`).
 */
export interface NodeAttestationConfig {
  readonly type: string;
  readonly options: Readonly<Record<string, string>>;
}

/** One enabled workload attestor: its type (SPIRE's plug-in name) and its options, as `--workload-attestor` set them. */
export interface WorkloadAttestorSetting {
  readonly type: string;
  readonly options: Readonly<Record<string, string>>;
}

/** How the agent authenticates the server before it holds a bundle of its own. */
export type BootstrapTrust =
  { readonly kind: 'bundle'; readonly file: string; readonly bundle: TrustBundle } | { readonly kind: 'insecure' };

export interface AgentConfig {
  /** Servers to talk to, in order of preference; the agent fails over between them. */
  readonly serverAddresses: readonly ServerAddress[];
  /** Absent when the agent must resume from its data dir (no join token or x509pop key configured). */
  readonly attestation: NodeAttestationConfig | undefined;
  readonly bootstrapTrust: BootstrapTrust;
  /** Set by `--trust-domain` (required with insecure bootstrap), or learnt from the trust bundle. */
  readonly trustDomain: TrustDomain | undefined;
  /** Absolute path of the Workload API socket. */
  readonly socketPath: string;
  /**
   * Absolute path of the admin socket (`logger get|set|reset`), 0600 in a 0700 directory; absent: none (SPIRE's
   * `admin_socket_path`, off by default). Never in the Workload API socket's directory or below it.
   */
  readonly adminSocketPath?: string;
  /** Absolute path of the data dir (agent SVID, key, bundle). */
  readonly dataDir: string;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** Absent: log lines go to stdout. */
  readonly logFile?: string;
  /** Where `/metrics` is served (plain HTTP); absent: nowhere (SPIRE's telemetry Prometheus host and port). */
  readonly metricsAddress?: HostPort;
  /** Where `/live` and `/ready` are served (plain HTTP); absent: nowhere (SPIRE's health_checks listener). */
  readonly health?: {
    readonly address: HostPort;
    readonly livePath: string;
    readonly readyPath: string;
    /** `/ready` fails when the last successful entry sync is older than this. */
    readonly readyMaxSyncAgeMs: number;
  };
  /** What one caller uid may hold open on, and ask of, the Workload API (README, Workload API limits). */
  readonly workloadApiLimits: WorkloadApiLimits;
  /** How much hashing `unix:sha256` may cost: the largest executable hashed and the bytes per uid and minute. */
  readonly unixSha256: UnixSha256Limits;
  /** What JWT-SVIDs may cost per uid and in all (cache bytes, misses sent to the server). */
  readonly jwtSvidLimits: JwtSvidLimits;
  /**
   * Lazy signing with at most this many X509-SVIDs held (a soft limit: a live caller's are kept); absent: every entry
   * is signed as it arrives.
   */
  readonly svidCacheMaxSize?: number;
  /** The workload attestors every Workload API call runs, in order, with their options (default `unix` alone). */
  readonly workloadAttestors: readonly WorkloadAttestorSetting[];
  /** How long one call may wait for its workload attestors together. */
  readonly workloadAttestationTimeoutMs: number;
  /** Envoy SDS: the default secret names and the SPIFFE validator switch (SPIRE's `sds` settings). */
  readonly sds: SdsSettings;
}

export interface UnixSha256Limits {
  readonly maxExecutableBytes: number;
  readonly quotaBytesPerUidPerMinute: number;
}

export const DEFAULT_DATA_DIR = '.sigil/agent';

/**
 * What `--insecure-bootstrap` gives up, said on every start (SPIRE's agent warns the same way): the first connection
 * checks only the SPIFFE ID the server's certificate claims, so whoever answers on the server address can pose as
 * the server and hand the agent a bundle of its choosing, which a resuming start then trusts from the data dir.
 */
export function insecureBootstrapWarning(
  config: Pick<AgentConfig, 'bootstrapTrust' | 'trustDomain'> & Partial<Pick<AgentConfig, 'attestation'>>,
): string | undefined {
  if (config.bootstrapTrust.kind !== 'insecure') return undefined;
  const serverId = config.trustDomain
    ? sigilServerId(config.trustDomain).toString()
    : 'spiffe://<trust domain>/sigil/server';
  return (
    `insecure bootstrap: the server is authenticated only by the SPIFFE ID its certificate claims (${serverId}), ` +
    'not by a trust bundle, until the first attestation returns the bundle; whoever can answer on the server ' +
    'address with a self-made certificate naming that ID can pose as the server and hand this agent a bundle (and ' +
    'through it workload identities) of its choosing, and a start that resumes from the data dir trusts the bundle ' +
    'stored then. Use --trust-bundle outside of tests' +
    (config.attestation?.type === K8S_PSAT_ATTESTOR.type
      ? "; with k8s_psat the impostor also gets this node's service account token, which it can replay at the " +
        "real server (within the token's lifetime) to take this node's agent identity"
      : '')
  );
}

/** Flags as commander hands them over (camelCase of the `--kebab-case` flag). */
export interface AgentConfigFlags {
  serverAddress?: string[];
  nodeAttestor?: string;
  joinToken?: string;
  x509popCert?: string;
  x509popKey?: string;
  trustBundle?: string;
  insecureBootstrap?: boolean;
  trustDomain?: string;
  socketPath?: string;
  adminSocketPath?: string;
  dataDir?: string;
  logLevel?: string;
  workloadApiMaxStreamsPerConnection?: string;
  workloadApiMaxStreamsPerUid?: string;
  workloadApiMaxConnectionsPerUid?: string;
  workloadApiStreamRatePerUid?: string;
  workloadApiStreamBurstPerUid?: string;
  workloadApiMaxAttestationsPerUid?: string;
  workloadApiIdleTimeout?: string;
  workloadApiMaxSessionMemoryMib?: string;
  unixSha256MaxExecutableMib?: string;
  unixSha256QuotaMibPerUid?: string;
  jwtSvidCacheMaxMib?: string;
  jwtSvidCacheMaxMibPerUid?: string;
  jwtSvidMissRatePerUid?: string;
  jwtSvidMissBurstPerUid?: string;
  jwtSvidMaxPendingPerUid?: string;
  svidCacheMaxSize?: string;
  workloadAttestor?: string[];
  workloadAttestationTimeout?: string;
  jwtSvidMaxConcurrentSigning?: string;
  sdsDefaultSvidName?: string;
  sdsDefaultBundleName?: string;
  sdsDefaultAllBundlesName?: string;
  sdsDisableSpiffeCertValidation?: boolean;
  logFormat?: string;
  logFile?: string;
  metricsAddress?: string;
  healthAddress?: string;
  healthLivePath?: string;
  healthReadyPath?: string;
  healthReadyMaxSyncAge?: string;
}

export interface LoadAgentConfigInput {
  flags?: AgentConfigFlags;
  env?: Readonly<Record<string, string | undefined>>;
  /** Path of a JSON config file (`--config`, else `SIGIL_AGENT_CONFIG`). */
  file?: string;
  /** Directory relative paths are resolved against; defaults to `process.cwd()`. */
  cwd?: string;
}

/** Every problem found in the configuration, each naming its key as the operator wrote it. */
export class AgentConfigError extends Error {
  override readonly name = 'AgentConfigError';

  constructor(readonly problems: readonly string[]) {
    super(`invalid agent configuration: ${problems.join('; ')}`);
  }
}

// The server reads no longer token.
const MAX_JOIN_TOKEN_LENGTH = JOIN_TOKEN_MAX_LENGTH;

const MIB = 1024 * 1024;

/**
 * A list key (`server_address`): one item, a comma list of them, or (in the file and from repeated
 * flags) an array of either.
 */
function commaList(value: unknown): string[] | undefined {
  const items = typeof value === 'string' ? [value] : Array.isArray(value) ? value : undefined;
  if (items === undefined || items.length === 0 || !items.every((item) => typeof item === 'string')) return undefined;
  return (items as string[]).flatMap((item) => item.split(',')).map((item) => item.trim());
}

const SDS_NAME_RULE = 'must be 1 to 256 printable ASCII characters without spaces';
function isSdsName(value: unknown): boolean {
  return typeof value === 'string' && /^[\x21-\x7e]{1,256}$/.test(value);
}

const HTTP_PATH_RULE = "must be an absolute URL path such as '/ready' (letters, digits, '.', '_', '-', '/')";
function isHttpPath(value: unknown): boolean {
  return typeof value === 'string' && /^\/[A-Za-z0-9._/-]{0,255}$/.test(value);
}

class RawAgentConfig {
  @ValidateBy({
    name: 'isServerAddressList',
    validator: {
      validate: (value: unknown) => {
        const list = commaList(value);
        return list !== undefined && list.every((item) => typeof parseServerAddress(item) !== 'string');
      },
      defaultMessage: (args?: ValidationArguments) => {
        const list = commaList(args?.value);
        const bad = list?.map(parseServerAddress).find((parsed) => typeof parsed === 'string');
        return bad ?? `must be HOST:PORT or a comma-separated list of them, got '${showConfigValue(args?.value)}'`;
      },
    },
  })
  server_address?: unknown;

  // The token is a secret: never echoed in a message.
  @IsOptional()
  @ValidateBy({
    name: 'isJoinToken',
    validator: {
      validate: (value: unknown) =>
        typeof value === 'string' && /^[\x21-\x7e]+$/.test(value) && value.length <= MAX_JOIN_TOKEN_LENGTH,
      defaultMessage: () => `must be 1 to ${MAX_JOIN_TOKEN_LENGTH} printable characters without spaces`,
    },
  })
  join_token?: unknown;

  @IsOptional()
  @ConfigRule('isPluginSpec', isNonEmptyString, 'must be <type>[:<option>=<value>,…]')
  node_attestor?: unknown;

  @IsOptional() @ConfigRule('isNonEmptyString', isNonEmptyString, 'must be a file path') x509pop_cert_file?: unknown;
  @IsOptional() @ConfigRule('isNonEmptyString', isNonEmptyString, 'must be a file path') x509pop_key_file?: unknown;
  @IsOptional() @ConfigRule('isNonEmptyString', isNonEmptyString, 'must be a file path') trust_bundle_file?: unknown;

  @IsOptional()
  @IsBooleanLike()
  insecure_bootstrap?: unknown;

  @IsOptional()
  @IsTrustDomainName()
  trust_domain?: unknown;

  @IsOptional()
  @ConfigRule('isSocketPath', isSocketPath, SOCKET_PATH_RULE)
  socket_path?: unknown;

  @IsOptional()
  @ConfigRule('isSocketPath', isSocketPath, SOCKET_PATH_RULE)
  admin_socket_path?: unknown;

  @IsOptional() @ConfigRule('isNonEmptyString', isNonEmptyString, 'must be a directory path') data_dir?: unknown;

  @IsOptional()
  @ConfigRule(
    'isLogLevel',
    (value) => LOG_LEVELS.includes(value as LogLevel),
    `must be one of ${LOG_LEVELS.join(', ')}`,
  )
  log_level?: unknown;

  // The Workload API's limits per caller uid (WorkloadApiLimits): upper bounds only keep a typo from disabling one.
  @IsOptional() @IsCountFrom(1, 10_000) workload_api_max_streams_per_connection?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) workload_api_max_streams_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 100_000) workload_api_max_connections_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) workload_api_stream_rate_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) workload_api_stream_burst_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 10_000) workload_api_max_attestations_per_uid?: unknown;
  @IsOptional() @IsDurationSeconds(1, 86_400) workload_api_idle_timeout?: unknown;
  @IsOptional() @IsCountFrom(1, 1024) workload_api_max_session_memory_mib?: unknown;
  // 0 turns unix:sha256 off (nothing is hashed, so entries that pin a digest match nobody).
  @IsOptional() @IsCountFrom(0, 64 * 1024) unix_sha256_max_executable_mib?: unknown;
  @IsOptional() @IsCountFrom(0, 1024 * 1024) unix_sha256_quota_mib_per_uid?: unknown;
  // JWT-SVIDs (JwtSvidLimits): the cache's bytes, and the misses one uid may send to the server.
  @IsOptional() @IsCountFrom(1, 64 * 1024) jwt_svid_cache_max_mib?: unknown;
  @IsOptional() @IsCountFrom(1, 64 * 1024) jwt_svid_cache_max_mib_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) jwt_svid_miss_rate_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) jwt_svid_miss_burst_per_uid?: unknown;
  @IsOptional() @IsCountFrom(1, 1_000_000) jwt_svid_max_pending_per_uid?: unknown;
  // Lazy X509-SVID signing with an LRU cap (SPIRE's x509_svid_cache_max_size); absent: every entry signed at once.
  @IsOptional() @IsCountFrom(1, 10_000_000) svid_cache_max_size?: unknown;

  // Checked by workloadAttestorSettings: bare types or specs with options (flag, env, file), or an object (file).
  @IsOptional() workload_attestor?: unknown;

  @IsOptional() @IsDurationSeconds(1, 300) workload_attestation_timeout?: unknown;
  @IsOptional() @IsCountFrom(1, 256) jwt_svid_max_concurrent_signing?: unknown;

  // Envoy SDS (SPIRE's agent `sds` block, flattened with an `sds_` prefix like every other key here).
  @IsOptional() @ConfigRule('isSdsName', isSdsName, SDS_NAME_RULE) sds_default_svid_name?: unknown;
  @IsOptional() @ConfigRule('isSdsName', isSdsName, SDS_NAME_RULE) sds_default_bundle_name?: unknown;
  @IsOptional() @ConfigRule('isSdsName', isSdsName, SDS_NAME_RULE) sds_default_all_bundles_name?: unknown;
  @IsOptional()
  @IsBooleanLike()
  sds_disable_spiffe_cert_validation?: unknown;
  @IsOptional() @IsOneOf(LOG_FORMATS) log_format?: unknown;
  @IsOptional() @ConfigRule('isNonEmptyString', isNonEmptyString, 'must be a file path') log_file?: unknown;
  @IsOptional() @ConfigRule('isListenAddress', isListenAddress, LISTEN_ADDRESS_RULE) metrics_address?: unknown;
  @IsOptional() @ConfigRule('isListenAddress', isListenAddress, LISTEN_ADDRESS_RULE) health_address?: unknown;
  @IsOptional() @ConfigRule('isHttpPath', isHttpPath, HTTP_PATH_RULE) health_live_path?: unknown;
  @IsOptional() @ConfigRule('isHttpPath', isHttpPath, HTTP_PATH_RULE) health_ready_path?: unknown;
  @IsOptional() @IsDurationSeconds(1, 86_400) health_ready_max_sync_age?: unknown;
}

/**
 * Default longest time since the last successful entry sync for `/ready`: a sync answers at least every 25 s (the
 * long-poll) while the server is reachable, so 90 s is three missed polls.
 */
export const DEFAULT_READY_MAX_SYNC_AGE_SECONDS = 90;

type RawKey = keyof RawAgentConfig;

/** Where each key can come from. */
const SOURCES: Record<RawKey, ConfigSource<keyof AgentConfigFlags>> = {
  server_address: { flag: 'serverAddress', env: 'SIGIL_AGENT_SERVER_ADDRESS' },
  node_attestor: { flag: 'nodeAttestor', env: 'SIGIL_AGENT_NODE_ATTESTOR' },
  join_token: { flag: 'joinToken', env: 'SIGIL_AGENT_JOIN_TOKEN' },
  x509pop_cert_file: { flag: 'x509popCert', env: 'SIGIL_AGENT_X509POP_CERT' },
  x509pop_key_file: { flag: 'x509popKey', env: 'SIGIL_AGENT_X509POP_KEY' },
  trust_bundle_file: { flag: 'trustBundle', env: 'SIGIL_AGENT_TRUST_BUNDLE' },
  insecure_bootstrap: { flag: 'insecureBootstrap', env: 'SIGIL_AGENT_INSECURE_BOOTSTRAP' },
  trust_domain: { flag: 'trustDomain', env: 'SIGIL_AGENT_TRUST_DOMAIN' },
  socket_path: { flag: 'socketPath', env: 'SIGIL_AGENT_SOCKET_PATH' },
  admin_socket_path: { flag: 'adminSocketPath', env: 'SIGIL_AGENT_ADMIN_SOCKET_PATH' },
  data_dir: { flag: 'dataDir', env: 'SIGIL_AGENT_DATA_DIR' },
  log_level: { flag: 'logLevel', env: 'SIGIL_AGENT_LOG_LEVEL' },
  workload_api_max_streams_per_connection: {
    flag: 'workloadApiMaxStreamsPerConnection',
    env: 'SIGIL_AGENT_WORKLOAD_API_MAX_STREAMS_PER_CONNECTION',
  },
  workload_api_max_streams_per_uid: {
    flag: 'workloadApiMaxStreamsPerUid',
    env: 'SIGIL_AGENT_WORKLOAD_API_MAX_STREAMS_PER_UID',
  },
  workload_api_max_connections_per_uid: {
    flag: 'workloadApiMaxConnectionsPerUid',
    env: 'SIGIL_AGENT_WORKLOAD_API_MAX_CONNECTIONS_PER_UID',
  },
  workload_api_stream_rate_per_uid: {
    flag: 'workloadApiStreamRatePerUid',
    env: 'SIGIL_AGENT_WORKLOAD_API_STREAM_RATE_PER_UID',
  },
  workload_api_stream_burst_per_uid: {
    flag: 'workloadApiStreamBurstPerUid',
    env: 'SIGIL_AGENT_WORKLOAD_API_STREAM_BURST_PER_UID',
  },
  workload_api_max_attestations_per_uid: {
    flag: 'workloadApiMaxAttestationsPerUid',
    env: 'SIGIL_AGENT_WORKLOAD_API_MAX_ATTESTATIONS_PER_UID',
  },
  workload_api_idle_timeout: { flag: 'workloadApiIdleTimeout', env: 'SIGIL_AGENT_WORKLOAD_API_IDLE_TIMEOUT' },
  workload_api_max_session_memory_mib: {
    flag: 'workloadApiMaxSessionMemoryMib',
    env: 'SIGIL_AGENT_WORKLOAD_API_MAX_SESSION_MEMORY_MIB',
  },
  unix_sha256_max_executable_mib: {
    flag: 'unixSha256MaxExecutableMib',
    env: 'SIGIL_AGENT_UNIX_SHA256_MAX_EXECUTABLE_MIB',
  },
  unix_sha256_quota_mib_per_uid: { flag: 'unixSha256QuotaMibPerUid', env: 'SIGIL_AGENT_UNIX_SHA256_QUOTA_MIB_PER_UID' },
  jwt_svid_cache_max_mib: { flag: 'jwtSvidCacheMaxMib', env: 'SIGIL_AGENT_JWT_SVID_CACHE_MAX_MIB' },
  jwt_svid_cache_max_mib_per_uid: {
    flag: 'jwtSvidCacheMaxMibPerUid',
    env: 'SIGIL_AGENT_JWT_SVID_CACHE_MAX_MIB_PER_UID',
  },
  jwt_svid_miss_rate_per_uid: { flag: 'jwtSvidMissRatePerUid', env: 'SIGIL_AGENT_JWT_SVID_MISS_RATE_PER_UID' },
  jwt_svid_miss_burst_per_uid: { flag: 'jwtSvidMissBurstPerUid', env: 'SIGIL_AGENT_JWT_SVID_MISS_BURST_PER_UID' },
  jwt_svid_max_pending_per_uid: { flag: 'jwtSvidMaxPendingPerUid', env: 'SIGIL_AGENT_JWT_SVID_MAX_PENDING_PER_UID' },
  svid_cache_max_size: { flag: 'svidCacheMaxSize', env: 'SIGIL_AGENT_SVID_CACHE_MAX_SIZE' },
  workload_attestor: { flag: 'workloadAttestor', env: 'SIGIL_AGENT_WORKLOAD_ATTESTOR' },
  workload_attestation_timeout: {
    flag: 'workloadAttestationTimeout',
    env: 'SIGIL_AGENT_WORKLOAD_ATTESTATION_TIMEOUT',
  },
  jwt_svid_max_concurrent_signing: {
    flag: 'jwtSvidMaxConcurrentSigning',
    env: 'SIGIL_AGENT_JWT_SVID_MAX_CONCURRENT_SIGNING',
  },
  sds_default_svid_name: { flag: 'sdsDefaultSvidName', env: 'SIGIL_AGENT_SDS_DEFAULT_SVID_NAME' },
  sds_default_bundle_name: { flag: 'sdsDefaultBundleName', env: 'SIGIL_AGENT_SDS_DEFAULT_BUNDLE_NAME' },
  sds_default_all_bundles_name: { flag: 'sdsDefaultAllBundlesName', env: 'SIGIL_AGENT_SDS_DEFAULT_ALL_BUNDLES_NAME' },
  sds_disable_spiffe_cert_validation: {
    flag: 'sdsDisableSpiffeCertValidation',
    env: 'SIGIL_AGENT_SDS_DISABLE_SPIFFE_CERT_VALIDATION',
  },
  log_format: { flag: 'logFormat', env: 'SIGIL_AGENT_LOG_FORMAT' },
  log_file: { flag: 'logFile', env: 'SIGIL_AGENT_LOG_FILE' },
  metrics_address: { flag: 'metricsAddress', env: 'SIGIL_AGENT_METRICS_ADDRESS' },
  health_address: { flag: 'healthAddress', env: 'SIGIL_AGENT_HEALTH_ADDRESS' },
  health_live_path: { flag: 'healthLivePath', env: 'SIGIL_AGENT_HEALTH_LIVE_PATH' },
  health_ready_path: { flag: 'healthReadyPath', env: 'SIGIL_AGENT_HEALTH_READY_PATH' },
  health_ready_max_sync_age: { flag: 'healthReadyMaxSyncAge', env: 'SIGIL_AGENT_HEALTH_READY_MAX_SYNC_AGE' },
};

/**
 * `--node-attestor <type>[:<option>=<value>,…]`: any node attestor of the agent's registry with its options, checked
 * by building it (the same spec syntax as the server's `--node-attestor`). Returns the problem when it is not one.
 */
function nodeAttestorSpec(text: string): NodeAttestationConfig | string {
  const spec = parsePluginSpec(text);
  if (typeof spec === 'string') return spec;
  const factory = Object.hasOwn(NODE_ATTESTORS, spec.type) ? NODE_ATTESTORS[spec.type] : undefined;
  if (factory === undefined) {
    return `unknown node attestor ${JSON.stringify(spec.type)} (known: ${Object.keys(NODE_ATTESTORS).join(', ')})`;
  }
  try {
    factory(spec.options);
  } catch (error) {
    return (error as Error).message;
  }
  return { type: spec.type, options: Object.freeze({ ...spec.options }) };
}

/**
 * The enabled workload attestors and their options: `--workload-attestor` (repeatable), `SIGIL_AGENT_WORKLOAD_ATTESTOR`
 * (items separated by whitespace) or the file's `workload_attestor` (a string or an array of items like those, or an
 * object `{"unix": {}, "docker": {"docker_socket_path": "…"}}`); `unix` alone by default. An item is a comma list of
 * types (`unix,docker`), the last of which may carry its options after a `:`
 * (`unix,docker:docker_socket_path=unix:///var/run/docker.sock,env_allow_list=A;B`): everything after the first `:`
 * is that attestor's options. Each attestor is checked against its
 * registration: a known type, named once, only options it declares, values its `checkOptions` accepts.
 */
function workloadAttestorSettings(value: unknown, source: string, problems: string[]): WorkloadAttestorSetting[] {
  const settings: WorkloadAttestorSetting[] = [];
  const add = (type: string, options: Record<string, string>, where = source): void => {
    const plugin = Object.hasOwn(WORKLOAD_ATTESTORS, type) ? WORKLOAD_ATTESTORS[type] : undefined;
    if (plugin === undefined) {
      problems.push(`${where}: unknown workload attestor '${type}' (known: ${knownTypes()})`);
    } else if (settings.some((setting) => setting.type === type)) {
      problems.push(`${where}: workload attestor '${type}' is named twice`);
    } else {
      const unknown = Object.keys(options).filter((option) => !plugin.optionNames.includes(option));
      for (const option of unknown) problems.push(`${where}: ${type}: ${unknownOptionProblem(plugin, option)}`);
      if (unknown.length === 0) {
        for (const problem of plugin.checkOptions?.(options) ?? []) problems.push(`${where}: ${type}: ${problem}`);
      }
      settings.push({ type, options: Object.freeze({ ...options }) });
    }
  };
  const listProblem = (item: unknown): string =>
    `${source}: must name workload attestors: a comma-separated list of types (${knownTypes()}), the last ` +
    `with its options after a colon (<type>:<option>=<value>,…), got '${showConfigValue(item)}'`;
  if (value === undefined) {
    add('unix', {});
  } else if (typeof value === 'string' || Array.isArray(value)) {
    const items: unknown[] = typeof value === 'string' ? value.split(/\s+/).filter(Boolean) : value;
    if (items.length === 0) problems.push(listProblem(value));
    for (const item of items) {
      if (typeof item !== 'string') {
        problems.push(listProblem(item));
      } else {
        // `unix,docker:docker_socket_path=…`: bare types, the last of which may carry options after a `:` (types
        // hold neither `,` nor `:`, so the first `:` ends the list of types).
        const colon = item.indexOf(':');
        const types = (colon < 0 ? item : item.slice(0, colon)).split(',').map((type) => type.trim());
        const withOptions = colon < 0 ? undefined : types.pop();
        if (types.some((type) => !PLUGIN_NAME.test(type))) {
          problems.push(listProblem(item));
          continue;
        }
        for (const type of types) add(type, {});
        if (withOptions !== undefined) {
          const spec = parsePluginSpec(`${withOptions}${item.slice(colon).trimEnd()}`);
          if (typeof spec === 'string') problems.push(`${source}: ${spec}`);
          else add(spec.type, spec.options);
        }
      }
    }
  } else if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 0) problems.push(listProblem(value));
    for (const [type, options] of entries) {
      if (typeof options !== 'object' || options === null || Array.isArray(options)) {
        problems.push(`${source}.${type}: must be an object of options, e.g. {}`);
        continue;
      }
      const bad = Object.entries(options).filter(([, option]) => typeof option !== 'string');
      for (const [option] of bad) problems.push(`${source}.${type}.${option}: must be a string`);
      if (bad.length === 0) add(type, { ...(options as Record<string, string>) });
    }
  } else {
    problems.push(listProblem(value));
  }
  return settings;
}

/**
 * Loads and validates the agent configuration. Throws {@link AgentConfigError} listing every bad key, named as the
 * operator wrote it (`--server-address`, `SIGIL_AGENT_SERVER_ADDRESS` or the file's `server_address`).
 */
export function loadAgentConfig(input: LoadAgentConfigInput = {}): AgentConfig {
  const { flags = {}, env = {}, cwd = process.cwd() } = input;
  const problems: string[] = [];
  const filePath = input.file ?? env['SIGIL_AGENT_CONFIG'];
  const fileValues = filePath ? readJsonConfigFile(resolve(cwd, filePath), SOURCES, problems) : {};

  const layers = layerConfig(SOURCES, flags, env, fileValues);
  const raw = Object.assign(new RawAgentConfig(), layers.values);
  const label = layers.label;

  for (const error of validateSync(raw)) {
    for (const message of Object.values(error.constraints ?? {})) {
      const key = error.property as RawKey;
      const what = key === 'server_address' && raw.server_address === undefined ? 'is required' : message;
      problems.push(`${label.get(key)}: ${what}`);
    }
  }
  const workloadAttestors = workloadAttestorSettings(
    raw.workload_attestor,
    label.get('workload_attestor') as string,
    problems,
  );
  if (problems.length > 0) throw new AgentConfigError(problems);

  const name = (key: RawKey): string => label.get(key) as string;
  const path = (value: unknown): string =>
    isAbsolute(value as string) ? (value as string) : resolve(cwd, value as string);

  const certFile = raw.x509pop_cert_file as string | undefined;
  const keyFile = raw.x509pop_key_file as string | undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    const [missing, other] = certFile === undefined ? ['x509pop_cert_file', 'key'] : ['x509pop_key_file', 'cert'];
    problems.push(`${name(missing as RawKey)}: required when the x509pop ${other} file is set`);
  }
  if (raw.join_token !== undefined && certFile !== undefined) {
    problems.push(`${name('join_token')}: use either a join token or x509pop, not both`);
  }
  if (raw.node_attestor !== undefined && (raw.join_token !== undefined || certFile !== undefined)) {
    const other = raw.join_token !== undefined ? name('join_token') : name('x509pop_cert_file');
    problems.push(`${name('node_attestor')}: use either it or ${other}, not both`);
  }
  const insecure = toConfigBoolean(raw.insecure_bootstrap) ?? false;
  const bundleFile = raw.trust_bundle_file as string | undefined;
  if (insecure && bundleFile !== undefined) {
    problems.push(`${name('trust_bundle_file')}: set either a trust bundle or insecure bootstrap, not both`);
  } else if (!insecure && bundleFile === undefined) {
    problems.push(`${name('trust_bundle_file')}: required (the server's CA certificates), unless --insecure-bootstrap`);
  } else if (insecure && raw.trust_domain === undefined) {
    // The server's SPIFFE ID is all that is checked then: without a trust domain, any server's claim would pass.
    problems.push(
      `${name('trust_domain')}: required with insecure bootstrap (the server must be spiffe://<it>/sigil/server)`,
    );
  }
  if (problems.length > 0) throw new AgentConfigError(problems);

  let trustDomain = raw.trust_domain === undefined ? undefined : TrustDomain.parse(raw.trust_domain as string);
  let bootstrapTrust: BootstrapTrust = { kind: 'insecure' };
  if (bundleFile !== undefined) {
    const file = path(bundleFile);
    const text = readNamedFile(name('trust_bundle_file'), file, problems);
    if (text !== undefined) {
      const parsed = parseTrustBundleFile(text, trustDomain);
      if (typeof parsed === 'string') problems.push(`${name('trust_bundle_file')}: ${file} ${parsed}`);
      else {
        bootstrapTrust = { kind: 'bundle', file, bundle: parsed.bundle };
        trustDomain = parsed.trustDomain;
      }
    }
  }
  let attestation: NodeAttestationConfig | undefined;
  if (raw.join_token !== undefined) {
    attestation = { type: JOIN_TOKEN_ATTESTOR.type, options: Object.freeze({ token: raw.join_token as string }) };
  }
  if (raw.node_attestor !== undefined) {
    const spec = nodeAttestorSpec(raw.node_attestor as string);
    if (typeof spec === 'string') problems.push(`${name('node_attestor')}: ${spec}`);
    else attestation = spec;
  }
  if (certFile !== undefined && keyFile !== undefined) {
    const files = { cert_file: path(certFile), key_file: path(keyFile) };
    const labels = { cert: name('x509pop_cert_file'), key: name('x509pop_key_file') };
    problems.push(...checkX509popFiles(labels, files.cert_file, files.key_file));
    attestation = { type: X509POP_ATTESTOR.type, options: Object.freeze(files) };
  }
  if (problems.length > 0) throw new AgentConfigError(problems);

  const count = (key: RawKey, fallback: number): number =>
    raw[key] === undefined ? fallback : (parseCount(raw[key]) as number);
  const workloadApiLimits: WorkloadApiLimits = {
    ...WORKLOAD_API_LIMITS,
    maxStreamsPerConnection: count(
      'workload_api_max_streams_per_connection',
      WORKLOAD_API_LIMITS.maxStreamsPerConnection,
    ),
    maxStreamsPerUid: count('workload_api_max_streams_per_uid', WORKLOAD_API_LIMITS.maxStreamsPerUid),
    maxConnectionsPerUid: count('workload_api_max_connections_per_uid', WORKLOAD_API_LIMITS.maxConnectionsPerUid),
    streamRatePerUid: count('workload_api_stream_rate_per_uid', WORKLOAD_API_LIMITS.streamRatePerUid),
    streamBurstPerUid: count('workload_api_stream_burst_per_uid', WORKLOAD_API_LIMITS.streamBurstPerUid),
    maxAttestationsPerUid: count('workload_api_max_attestations_per_uid', WORKLOAD_API_LIMITS.maxAttestationsPerUid),
    idleTimeoutMs:
      raw.workload_api_idle_timeout === undefined
        ? WORKLOAD_API_LIMITS.idleTimeoutMs
        : (parseDurationSeconds(raw.workload_api_idle_timeout) as number) * 1000,
    maxSessionMemoryMb: count('workload_api_max_session_memory_mib', WORKLOAD_API_LIMITS.maxSessionMemoryMb),
  };
  const unixSha256: UnixSha256Limits = {
    maxExecutableBytes: count('unix_sha256_max_executable_mib', DEFAULT_EXECUTABLE_SIZE_LIMIT / MIB) * MIB,
    quotaBytesPerUidPerMinute:
      count('unix_sha256_quota_mib_per_uid', DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE / MIB) * MIB,
  };
  if (unixSha256.quotaBytesPerUidPerMinute < unixSha256.maxExecutableBytes) {
    // An executable between the two sizes would be accepted by the size limit and then never fit in the quota.
    const key =
      raw.unix_sha256_quota_mib_per_uid !== undefined
        ? 'unix_sha256_quota_mib_per_uid'
        : 'unix_sha256_max_executable_mib';
    problems.push(
      `${name(key)}: the hashing quota per uid (${unixSha256.quotaBytesPerUidPerMinute / MIB} MiB) must be at least ` +
        `the largest executable hashed (${unixSha256.maxExecutableBytes / MIB} MiB)`,
    );
  }
  const jwtSvidLimits: JwtSvidLimits = {
    ...JWT_SVID_LIMITS,
    cacheMaxBytes: count('jwt_svid_cache_max_mib', JWT_SVID_LIMITS.cacheMaxBytes / MIB) * MIB,
    cacheMaxBytesPerUid: count('jwt_svid_cache_max_mib_per_uid', JWT_SVID_LIMITS.cacheMaxBytesPerUid / MIB) * MIB,
    missRatePerSecond: count('jwt_svid_miss_rate_per_uid', JWT_SVID_LIMITS.missRatePerSecond),
    missBurst: count('jwt_svid_miss_burst_per_uid', JWT_SVID_LIMITS.missBurst),
    maxPendingMissesPerUid: count('jwt_svid_max_pending_per_uid', JWT_SVID_LIMITS.maxPendingMissesPerUid),
    maxConcurrentSigning: count('jwt_svid_max_concurrent_signing', JWT_SVID_LIMITS.maxConcurrentSigning),
  };
  if (jwtSvidLimits.cacheMaxBytesPerUid > jwtSvidLimits.cacheMaxBytes) {
    problems.push(
      `${name('jwt_svid_cache_max_mib_per_uid')}: must not exceed the whole cache ` +
        `(${name('jwt_svid_cache_max_mib')}, ${jwtSvidLimits.cacheMaxBytes / MIB} MiB), ` +
        `got ${jwtSvidLimits.cacheMaxBytesPerUid / MIB}`,
    );
  }
  const sds: SdsSettings = {
    defaultSvidName: (raw.sds_default_svid_name as string | undefined) ?? SDS_DEFAULTS.defaultSvidName,
    defaultBundleName: (raw.sds_default_bundle_name as string | undefined) ?? SDS_DEFAULTS.defaultBundleName,
    defaultAllBundlesName:
      (raw.sds_default_all_bundles_name as string | undefined) ?? SDS_DEFAULTS.defaultAllBundlesName,
    disableSpiffeCertValidation:
      toConfigBoolean(raw.sds_disable_spiffe_cert_validation) ?? SDS_DEFAULTS.disableSpiffeCertValidation,
  };
  // One name for two secrets would make the second unreachable.
  const sdsNames: Array<[RawKey, string]> = [
    ['sds_default_svid_name', sds.defaultSvidName],
    ['sds_default_bundle_name', sds.defaultBundleName],
    ['sds_default_all_bundles_name', sds.defaultAllBundlesName],
  ];
  for (const [index, [key, value]] of sdsNames.entries()) {
    const earlier = sdsNames.slice(0, index).find(([, other]) => other === value);
    if (earlier !== undefined)
      problems.push(`${name(key)}: must differ from ${name(earlier[0])} (both ${JSON.stringify(value)})`);
  }
  const livePath = (raw.health_live_path as string | undefined) ?? '/live';
  const readyPath = (raw.health_ready_path as string | undefined) ?? '/ready';
  if (livePath === readyPath) {
    problems.push(`${name('health_ready_path')}: must differ from the live path (${livePath})`);
  }
  const socketPath = path((raw.socket_path as string | undefined) ?? DEFAULT_WORKLOAD_API_SOCKET);
  const adminSocketPath = raw.admin_socket_path === undefined ? undefined : path(raw.admin_socket_path as string);
  // SPIRE's rule: whoever may reach the Workload API socket's directory must not find the admin socket there.
  if (adminSocketPath !== undefined && adminSocketPath.startsWith(`${dirname(socketPath)}/`)) {
    problems.push(
      `${name('admin_socket_path')}: must not be in the directory of the Workload API socket (${dirname(socketPath)}) ` +
        'or below it',
    );
  } else if (adminSocketPath !== undefined && `${dirname(socketPath)}/`.startsWith(`${dirname(adminSocketPath)}/`)) {
    // Its directory is made private (0700) at start: above the Workload API socket's, it would lock every workload
    // of another uid out of the Workload API.
    problems.push(
      `${name('admin_socket_path')}: its directory (${dirname(adminSocketPath)}) must not hold the Workload API ` +
        `socket's directory (${dirname(socketPath)}): it is made private at start, and workloads could not reach the socket`,
    );
  }
  if (raw.health_address === undefined) {
    for (const key of ['health_live_path', 'health_ready_path', 'health_ready_max_sync_age'] as const) {
      if (raw[key] !== undefined) problems.push(`${name(key)}: needs ${name('health_address')}`);
    }
  }
  if (problems.length > 0) throw new AgentConfigError(problems);

  const servers = commaList(raw.server_address) as string[];
  const config: AgentConfig = {
    serverAddresses: Object.freeze(servers.map((each) => parseServerAddress(each) as ServerAddress)),
    attestation: attestation && Object.freeze(attestation),
    bootstrapTrust: Object.freeze(bootstrapTrust),
    trustDomain,
    socketPath,
    ...(adminSocketPath !== undefined && { adminSocketPath }),
    dataDir: path((raw.data_dir as string | undefined) ?? DEFAULT_DATA_DIR),
    logLevel: ((raw.log_level as string | undefined) ?? 'info') as LogLevel,
    logFormat: ((raw.log_format as string | undefined) ?? 'json') as LogFormat,
    ...(raw.log_file !== undefined && { logFile: path(raw.log_file as string) }),
    ...(raw.metrics_address !== undefined && { metricsAddress: listenAddress(raw.metrics_address as string) }),
    ...(raw.health_address !== undefined && {
      health: Object.freeze({
        address: listenAddress(raw.health_address as string),
        livePath,
        readyPath,
        readyMaxSyncAgeMs:
          (raw.health_ready_max_sync_age === undefined
            ? DEFAULT_READY_MAX_SYNC_AGE_SECONDS
            : (parseDurationSeconds(raw.health_ready_max_sync_age) as number)) * 1000,
      }),
    }),
    workloadApiLimits: Object.freeze(workloadApiLimits),
    unixSha256: Object.freeze(unixSha256),
    jwtSvidLimits: Object.freeze(jwtSvidLimits),
    ...(raw.svid_cache_max_size !== undefined && { svidCacheMaxSize: parseCount(raw.svid_cache_max_size) as number }),
    workloadAttestors: Object.freeze(workloadAttestors),
    workloadAttestationTimeoutMs:
      raw.workload_attestation_timeout === undefined
        ? DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS
        : (parseDurationSeconds(raw.workload_attestation_timeout) as number) * 1000,
    sds: Object.freeze(sds),
  };
  return Object.freeze(config);
}
