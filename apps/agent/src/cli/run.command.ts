import { Command } from 'commander';
import {
  type AgentConfig,
  AgentConfigError,
  type AgentConfigFlags,
  insecureBootstrapWarning,
  loadAgentConfig,
} from '../config.js';
import { WORKLOAD_API_LIMITS as limits } from '../endpoints/workload-api/workload-api.server.js';
import {
  DEFAULT_EXECUTABLE_SIZE_LIMIT,
  DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE,
} from '../attestor/workload/unix/executable-digest.js';
import { JWT_SVID_LIMITS as jwt } from '../manager/jwt-signing-lane.js';
import { knownTypes } from '../attestor/workload/registry.js';
import { DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS } from '../attestor/workload/workload-attestor.js';
import { CliError, collect } from '@sigil/runtime';

const MIB = 1024 * 1024;

export type RunOptions = AgentConfigFlags & { config?: string };

const FLAG_KEYS: readonly (keyof AgentConfigFlags)[] = [
  'sdsDefaultSvidName',
  'sdsDefaultBundleName',
  'sdsDefaultAllBundlesName',
  'sdsDisableSpiffeCertValidation',
  'serverAddress',
  'nodeAttestor',
  'joinToken',
  'x509popCert',
  'x509popKey',
  'trustBundle',
  'insecureBootstrap',
  'trustDomain',
  'socketPath',
  'adminSocketPath',
  'dataDir',
  'logLevel',
  'workloadApiMaxStreamsPerConnection',
  'workloadApiMaxStreamsPerUid',
  'workloadApiMaxConnectionsPerUid',
  'workloadApiStreamRatePerUid',
  'workloadApiStreamBurstPerUid',
  'workloadApiMaxAttestationsPerUid',
  'workloadApiIdleTimeout',
  'workloadApiMaxSessionMemoryMib',
  'unixSha256MaxExecutableMib',
  'unixSha256QuotaMibPerUid',
  'jwtSvidCacheMaxMib',
  'jwtSvidCacheMaxMibPerUid',
  'jwtSvidMissRatePerUid',
  'jwtSvidMissBurstPerUid',
  'jwtSvidMaxPendingPerUid',
  'svidCacheMaxSize',
  'workloadAttestor',
  'workloadAttestationTimeout',
  'jwtSvidMaxConcurrentSigning',
  'logFormat',
  'logFile',
  'metricsAddress',
  'healthAddress',
  'healthLivePath',
  'healthReadyPath',
  'healthReadyMaxSyncAge',
];

/** The agent configuration from `run`'s (and `validate`'s) options, the environment and the config file. */
export function configFromOptions(options: RunOptions): AgentConfig {
  const flags: AgentConfigFlags = {};
  for (const key of FLAG_KEYS) if (options[key] !== undefined) Object.assign(flags, { [key]: options[key] });
  try {
    return loadAgentConfig({ flags, env: process.env, ...(options.config !== undefined && { file: options.config }) });
  } catch (error) {
    if (error instanceof AgentConfigError) throw new CliError(error.message, 1, 'invalid_argument');
    throw error;
  }
}

/**
 * `sigil-agent run`: validates the configuration before anything starts, attests (or resumes from the data dir),
 * serves the Workload API until SIGINT/SIGTERM, and exits non-zero with the reason when the agent cannot go on.
 */
export function runCommand(): Command {
  return new Command('run')
    .option('--config <file>', 'JSON config file with snake_case keys (env SIGIL_AGENT_CONFIG)')
    .option(
      '--server-address <host:port>',
      'server agent API address; repeatable or comma-separated, for failover',
      collect,
    )
    .option(
      '--node-attestor <type[:option=value,...]>',
      'node attestor and its options, e.g. x509pop:cert_file=F,key_file=K (env SIGIL_AGENT_NODE_ATTESTOR)',
    )
    .option('--join-token <token>', 'single-use join token to attest with (env SIGIL_AGENT_JOIN_TOKEN)')
    .option('--x509pop-cert <file>', 'PEM certificate chain (leaf first) to attest with x509pop')
    .option('--x509pop-key <file>', 'PEM private key of the x509pop certificate')
    .option('--trust-bundle <file>', "the server's CA certificates (PEM, or a SPIFFE bundle) to authenticate it")
    .option('--insecure-bootstrap', 'trust the first server reached without checking its certificate (tests only)')
    .option('--trust-domain <name>', 'trust domain (default: the one the trust bundle names)')
    .option('--socket-path <path>', 'Workload API socket (default /tmp/sigil-agent/public/api.sock)')
    .option(
      '--admin-socket-path <path>',
      'serve logger get|set|reset on this Unix socket, 0600 in a 0700 directory, e.g. ' +
        '/tmp/sigil-agent/private/admin.sock (default off)',
    )
    .option('--data-dir <dir>', 'data directory for the agent SVID, key and bundle (default .sigil/agent)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace (default info)')
    .option('--log-format <format>', 'json or text (default json)')
    .option('--log-file <file>', 'append log lines to this file, created 0600 (default stdout)')
    .option('--metrics-address <host:port>', 'serve Prometheus /metrics here, e.g. 127.0.0.1:9988 (default off)')
    .option('--health-address <host:port>', 'serve /live and /ready probes here, e.g. 127.0.0.1:8080 (default off)')
    .option('--health-live-path <path>', 'path of the liveness probe (default /live)')
    .option('--health-ready-path <path>', 'path of the readiness probe (default /ready)')
    .option(
      '--health-ready-max-sync-age <duration>',
      'the readiness probe fails when the last entry sync is older than this (default 90s)',
    )
    .option(
      '--workload-attestor <types|type:option=value,...>',
      `workload attestors every Workload API call runs (${knownTypes()}), e.g. unix,docker or ` +
        'docker:docker_socket_path=unix:///var/run/docker.sock; repeatable (default unix)',
      collect,
    )
    .option(
      '--workload-attestation-timeout <duration>',
      `how long one Workload API call waits for its workload attestors (${DEFAULT_WORKLOAD_ATTESTATION_TIMEOUT_MS / 1000}s)`,
    )
    .option(
      '--workload-api-max-streams-per-connection <n>',
      `Workload API: concurrent streams per connection (${limits.maxStreamsPerConnection})`,
    )
    .option(
      '--workload-api-max-streams-per-uid <n>',
      `Workload API: open calls per caller uid (${limits.maxStreamsPerUid})`,
    )
    .option(
      '--workload-api-max-connections-per-uid <n>',
      `Workload API: open connections per caller uid (${limits.maxConnectionsPerUid})`,
    )
    .option(
      '--workload-api-stream-rate-per-uid <n>',
      `Workload API: new calls per second per caller uid (${limits.streamRatePerUid})`,
    )
    .option(
      '--workload-api-stream-burst-per-uid <n>',
      `Workload API: new calls at once per caller uid (${limits.streamBurstPerUid})`,
    )
    .option(
      '--workload-api-max-attestations-per-uid <n>',
      `Workload API: calls of one caller uid attested at a time (${limits.maxAttestationsPerUid})`,
    )
    .option(
      '--workload-api-idle-timeout <duration>',
      `Workload API: close a connection with no open stream after this long (${limits.idleTimeoutMs / 1000}s)`,
    )
    .option(
      '--workload-api-max-session-memory-mib <n>',
      `Workload API: HTTP/2 memory per connection in MiB (${limits.maxSessionMemoryMb})`,
    )
    .option(
      '--unix-sha256-max-executable-mib <n>',
      `largest executable hashed for unix:sha256, in MiB (${DEFAULT_EXECUTABLE_SIZE_LIMIT / MIB})`,
    )
    .option(
      '--unix-sha256-quota-mib-per-uid <n>',
      `MiB of executables hashed for unix:sha256 per caller uid and minute (${DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE / MIB})`,
    )
    .option(
      '--svid-cache-max-size <n>',
      'sign X509-SVIDs lazily, only for entries a caller asks for, and hold at most this many (least recently used ' +
        "dropped; a live caller's are kept); default: every entry signed at once",
    )
    .option('--jwt-svid-cache-max-mib <n>', `MiB of cached JWT-SVIDs (${jwt.cacheMaxBytes / MIB})`)
    .option(
      '--jwt-svid-cache-max-mib-per-uid <n>',
      `MiB of cached JWT-SVIDs signed for one caller uid (${jwt.cacheMaxBytesPerUid / MIB})`,
    )
    .option(
      '--jwt-svid-miss-rate-per-uid <n>',
      `JWT-SVIDs not in the cache one caller uid may have signed per second (${jwt.missRatePerSecond})`,
    )
    .option(
      '--jwt-svid-miss-burst-per-uid <n>',
      `JWT-SVIDs not in the cache one caller uid may have signed at once (${jwt.missBurst})`,
    )
    .option(
      '--jwt-svid-max-pending-per-uid <n>',
      `JWT-SVID requests of one caller uid waiting for the server (${jwt.maxPendingMissesPerUid})`,
    )
    .option(
      '--jwt-svid-max-concurrent-signing <n>',
      `JWT-SVID requests at the server at once, and connections kept for them; one uid gets half (${jwt.maxConcurrentSigning})`,
    )
    .option('--sds-default-svid-name <name>', `Envoy SDS: name of the caller's default X509-SVID secret (default)`)
    .option('--sds-default-bundle-name <name>', 'Envoy SDS: name of the own trust domain bundle secret (ROOTCA)')
    .option('--sds-default-all-bundles-name <name>', 'Envoy SDS: name of the secret with every bundle (ALL)')
    .option(
      '--sds-disable-spiffe-cert-validation',
      "Envoy SDS: plain trusted_ca validation contexts instead of Envoy's SPIFFE certificate validator",
    )
    .action(async (options: RunOptions) => {
      const config = configFromOptions(options);
      // On stderr as well as in the log: no log level or log pipeline may hide it, on any start.
      const warning = insecureBootstrapWarning(config);
      if (warning !== undefined) process.stderr.write(`sigil-agent: WARNING: ${warning}\n`);
      // Loaded here, not at the top: the api and healthcheck subcommands must start fast.
      const { startAgent } = await import('../agent.js');
      const { AgentFatalError, exitCodeOf } = await import('../manager/agent-manager.js');
      let agent;
      try {
        agent = await startAgent(config);
      } catch (error) {
        if (error instanceof AgentFatalError) throw new CliError(error.message, exitCodeOf(error));
        throw error;
      }
      const running = agent;
      await new Promise<void>((resolve, reject) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals): void => {
          if (stopping) process.exit(130);
          stopping = true;
          process.stderr.write(`sigil-agent: ${signal} received, stopping\n`);
          running.stop().then(resolve, reject);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
        void running.fatal.then((error) => {
          if (stopping) return;
          stopping = true;
          running.stop().then(
            () => reject(new CliError(error.message, exitCodeOf(error))),
            () => reject(new CliError(error.message, exitCodeOf(error))),
          );
        });
      });
    });
}
