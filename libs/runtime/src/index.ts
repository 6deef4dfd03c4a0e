export {
  UnsafeSocketDirectoryError,
  checkSocketDirectory,
  prepareSocketDirectory,
  type SocketDirectoryOptions,
} from './socket-directory.js';
export {
  PLUGIN_NAME,
  parseOptionBoolean,
  parseOptionDurationMs,
  parseOptionList,
  parsePluginSpec,
  type PluginSpec,
} from './plugin-spec.js';
export {
  nullConfigValueProblem,
  parseCount,
  parseDecimal,
  parseDurationSeconds,
  showConfigValue,
} from './config-value.js';
export {
  ConfigRule,
  IsBooleanLike,
  IsCountFrom,
  IsDurationSeconds,
  IsNonEmptyString,
  IsNumberFrom,
  IsOneOf,
  IsTrustDomainName,
  flagName,
  isNonEmptyString,
  layerConfig,
  readJsonConfigFile,
  toConfigBoolean,
  type ConfigLayers,
  type ConfigSource,
} from './config-layers.js';
export {
  JWT_SVID_MAX_AUDIENCES,
  JWT_SVID_MAX_AUDIENCE_BYTES,
  jwtAudienceProblem,
  singleAudienceProblem,
} from './jwt-audience.js';
export { TokenBucketRateLimiter, type RateLimit } from './token-bucket.js';
export {
  SELECTOR_LIMITS,
  SELECTOR_MATCHES,
  SELECTOR_TYPE_PATTERN,
  SelectorError,
  checkSelector,
  compareSelectors,
  formatSelector,
  matchesAllSelectors,
  requiredSelectorKeys,
  SelectorMatcher,
  selectorSetKey,
  parseSelector,
  selectorKey,
  type Selector,
  type SelectorMatch,
} from './selectors.js';
export { storedTextProblem } from './stored-text.js';
export {
  DURATION_SYNTAX,
  DurationError,
  formatDuration,
  parseDurationMs,
  parseDurationNanoseconds,
  durationSeconds,
  durationSecondsWithin,
} from './duration.js';
export {
  SIGIL_AGENT_PATH_PREFIX,
  SIGIL_RESERVED_PATH_PREFIX,
  isReservedSigilPath,
  isSigilAgentId,
  sigilAgentId,
  sigilServerId,
} from './sigil-ids.js';
export { type Clock, ExpiryDeadline, systemClock } from './clock.js';
export { MAX_SOCKET_PATH_BYTES, SOCKET_PATH_RULE, isSocketPath } from './socket-path.js';
export {
  CliError,
  collect,
  collectSelector,
  durationFlag,
  integerFlag,
  printResult,
  recordTable,
  runCli,
} from './cli.js';
export { LISTEN_ADDRESS_RULE, isListenAddress, listenAddress, parseHostPort, type HostPort } from './host-port.js';
export { SIGIL_VERSION } from './version.js';
export { collectProcessMetrics, PROCESS_METRICS_MIN_INTERVAL_MS } from './process-metrics.js';
export {
  type AtomicFile,
  ensureOwnDir,
  ensurePrivateDir,
  writeFileAtomic,
  writeFilesAtomic,
  type WriteFileAtomicOptions,
} from './atomic-file.js';
export { PrivateSocketError, listenOnPrivateSocket } from './private-socket.js';
export { AdminClient, loggerCommand, type AdminResponse, type LoggerCommandOptions } from './admin-cli.js';
