import { Command, Option } from 'commander';
import {
  BUNDLE_ENDPOINT_PROFILES,
  ConfigError,
  loadServerConfig,
  type ServerConfig,
  type ServerConfigFlags,
} from '../config.js';
import { CliError } from './admin-client.js';

/**
 * How often `sigil-server run` gives glibc's free pages back to the system, on a worker thread (the first time once it
 * listens): what V8's compiler threads free again stays resident in the allocator's arenas otherwise. Measured when
 * the embedded database's WebAssembly still tiered up to optimised code for tens of seconds after a start: ~50-70 MiB
 * (bench/README.md, issue 13); it no longer does (EMBEDDED_WASM_FLAGS), and what is left to release then was not
 * measured again. A call takes ~20 ms when it releases that much, microseconds when there is nothing.
 */
export const NATIVE_MEMORY_RELEASE_INTERVAL_MS = 10_000;

/**
 * The first minute after `sigil-server run` listens, the same release every second instead: the tier-up was at its
 * busiest then, and what it freed since the last call was still resident 5 s after `listening` on a resume of the
 * embedded database (median 264.5 MiB against 236 with a call every second; bench/README.md, issue 13; measured
 * before the embedded database stopped tiering up). The ordinary interval after it keeps the steady state (and the
 * signing path) as it was.
 */
export const NATIVE_MEMORY_RELEASE_WARM_UP = { intervalMs: 1_000, forMs: 60_000 } as const;

export type RunOptions = ServerConfigFlags & { config?: string };

const FLAG_KEYS: readonly (keyof ServerConfigFlags)[] = [
  'trustDomain',
  'dataDir',
  'bindAddress',
  'port',
  'databaseUrl',
  'adminSocket',
  'caKeyType',
  'caTtl',
  'x509SvidTtl',
  'jwtSvidTtl',
  'joinTokenTtl',
  'upstreamCaCert',
  'upstreamCaKey',
  'upstreamAuthority',
  'upstreamAgentSocket',
  'upstreamServerAddress',
  'downstreamCaMaxTtl',
  'kekFile',
  'logLevel',
  'logFormat',
  'logFile',
  'metricsAddress',
  'bundleEndpointAddress',
  'bundleEndpointProfile',
  'bundleEndpointCertFile',
  'bundleEndpointKeyFile',
  'jwtIssuer',
  'oidcDiscoveryAddress',
  'oidcJwksUri',
  'x509popCaBundle',
  'nodeAttestor',
  'agentSignRate',
  'agentSignBurst',
  'attestationRate',
  'attestationBurst',
  'publicReadRate',
  'publicReadBurst',
  'maxConnections',
  'maxConnectionsPerAddress',
  'tlsHandshakeRate',
  'tlsHandshakeBurst',
  'tlsHandshakeTimeout',
  'httpHeadersTimeout',
  'httpRequestTimeout',
  'httpIdleTimeout',
  'agentSyncRate',
  'agentSyncBurst',
  'agentStatusCacheTtl',
  'authorityCheckInterval',
  'pruneAttestedNodesExpiredFor',
  'agentJwtSignRate',
  'agentJwtSignBurst',
  'agentSignMaxInFlight',
  'agentMaxLongPolls',
  'agentMaxConnections',
  'databasePoolTimeout',
  'databasePoolSize',
  'skipMigrations',
  'signingQueueMaxItems',
  'signingWorkers',
  'agentRenewRate',
  'agentRenewBurst',
  'listenBacklog',
];

/** The server configuration from `run`'s (and `validate`'s) options, the environment and the config file. */
export function configFromOptions(options: RunOptions): ServerConfig {
  const flags: ServerConfigFlags = {};
  for (const key of FLAG_KEYS) if (options[key] !== undefined) Object.assign(flags, { [key]: options[key] });
  try {
    return loadServerConfig({ flags, env: process.env, ...(options.config !== undefined && { file: options.config }) });
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(error.message, 1, 'invalid_argument');
    throw error;
  }
}

/** `sigil-server run`: validates the configuration before anything starts, then serves until SIGINT/SIGTERM. */
export function runCommand(): Command {
  return new Command('run')
    .option('--config <file>', 'JSON config file with snake_case keys (env SIGIL_CONFIG)')
    .option('--trust-domain <name>', 'trust domain (default example.org)')
    .option('--data-dir <dir>', 'data directory (default .sigil/server)')
    .option('--bind-address <address>', 'address of the TLS listener (default 0.0.0.0)')
    .option('--port <port>', 'port of the TLS listener for agents and the admin API (default 8081)')
    .option('--database-url <url>', 'PostgreSQL URL (env DATABASE_URL); absent: the embedded database in the data dir')
    .option('--admin-socket <path>', 'local admin Unix socket (default /tmp/sigil-server/private/api.sock)')
    .addOption(
      new Option('--ca-key-type <type>', 'CA key type (default ec-p256)').choices(['ec-p256', 'ec-p384', 'rsa-2048']),
    )
    .option('--ca-ttl <duration>', 'CA certificate lifetime, e.g. 86400 or 24h (default 24h)')
    .option('--x509-svid-ttl <duration>', 'default X509-SVID lifetime (default 1h)')
    .option('--jwt-svid-ttl <duration>', 'default JWT-SVID lifetime (default 5m)')
    .option('--join-token-ttl <duration>', 'default join token lifetime (default 600)')
    .option('--upstream-ca-cert <file>', 'PEM certificate of an upstream CA (the server CA becomes its intermediate)')
    .option('--upstream-ca-key <file>', 'PEM private key of the upstream CA')
    .option('--upstream-authority <kind>', 'disk (the upstream CA files) or sigil (an upstream Sigil server)')
    .option('--upstream-agent-socket <path>', 'upstream authority sigil: Workload API socket of the local agent')
    .option('--upstream-server-address <host:port>', 'upstream authority sigil: the upstream Sigil server')
    .option(
      '--downstream-ca-max-ttl <duration>',
      'longest lifetime of a CA signed for a downstream entry (default ca TTL)',
    )
    .option('--kek-file <file>', 'key-encryption key file (default <data-dir>/kek.key; or env SIGIL_KEK)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace (default info)')
    .option('--log-format <format>', 'json or text (default json)')
    .option('--log-file <file>', 'append log lines to this file, created 0600 (default stdout)')
    .option(
      '--metrics-address <host:port>',
      'serve /metrics and /docs on this plain-HTTP listener (e.g. 127.0.0.1:9988) instead of the TLS port',
    )
    .option(
      '--bundle-endpoint-address <host:port>',
      'serve the SPIFFE federation bundle endpoint (our bundle at /) on this HTTPS listener (default off)',
    )
    .addOption(
      new Option(
        '--bundle-endpoint-profile <profile>',
        "the bundle endpoint's TLS profile (default https_spiffe)",
      ).choices([...BUNDLE_ENDPOINT_PROFILES]),
    )
    .option('--bundle-endpoint-cert-file <file>', 'PEM certificate chain of the https_web bundle endpoint')
    .option('--bundle-endpoint-key-file <file>', 'PEM private key of the https_web bundle endpoint')
    .option('--jwt-issuer <url>', 'https URL set as iss in every JWT-SVID and as the OIDC discovery issuer')
    .option(
      '--oidc-discovery-address <host:port>',
      'serve /.well-known/openid-configuration and /keys on this plain-HTTP listener, behind an HTTPS proxy ' +
        '(needs --jwt-issuer; default off)',
    )
    .option('--oidc-jwks-uri <url>', 'jwks_uri of the discovery document (default <jwt-issuer>/keys)')
    .option(
      '--federation-web-ca-file <file>',
      'PEM CA certificates trusted, besides the system roots, for https_web bundle endpoints of federated trust domains',
    )
    .option(
      '--node-attestor <type[:option=value,...]>',
      'enable a node attestor with its options, e.g. x509pop:ca_bundle=/etc/sigil/nodes.pem; repeatable ' +
        '(default join_token, and x509pop with --x509pop-ca-bundle)',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option('--x509pop-ca-bundle <file>', 'PEM CA certificates that x509pop agents must chain to (enables x509pop)')
    .option('--attestation-rate <n>', 'attestation requests per second per source address (default 10)')
    .option('--attestation-burst <n>', 'attestation requests a source address may make at once (default 100)')
    .option('--public-read-rate <n>', 'bundle/health/metrics requests per second per source address (default 20)')
    .option('--public-read-burst <n>', 'bundle/health/metrics requests a source address may make at once (default 200)')
    .option('--max-connections <n>', 'open connections on the TLS port in total (default 16384)')
    .option('--max-connections-per-address <n>', 'open TLS port connections per address, IPv6 per /64 (default 1024)')
    .option('--tls-handshake-rate <n>', 'new TLS connections per second per address (default 100)')
    .option('--tls-handshake-burst <n>', 'new TLS connections an address may open at once (default 1000)')
    .option('--tls-handshake-timeout <duration>', 'time a client has to finish its TLS handshake (default 10s)')
    .option('--http-headers-timeout <duration>', "time a client has to send a request's headers (default 10s)")
    .option('--http-request-timeout <duration>', 'time a client has to send a whole request (default 30s)')
    .option('--http-idle-timeout <duration>', 'a connection with no request in flight is closed after (default 10s)')
    .option('--agent-sync-rate <n>', 'sync requests per second each agent may make (default 5)')
    .option('--agent-sync-burst <n>', 'sync requests an agent may make at once (default 20)')
    .option(
      '--agent-status-cache-ttl <duration>',
      'longest an agent status (banned, evicted, SVID serial) is used from memory (default 30s)',
    )
    .option(
      '--authority-check-interval <duration>',
      'how often the CA keys are checked for rotation, and reloaded if a change notification was lost (default 10s)',
    )
    .option(
      '--prune-attested-nodes-expired-for <duration>',
      'remove agents that can re-attest, are not banned and whose SVID expired this long ago; 0: never (default 30d)',
    )
    .option('--agent-sign-rate <n>', 'X.509-SVID CSRs per second each agent may have signed (default 500)')
    .option('--agent-sign-burst <n>', 'X.509-SVID CSRs an agent may have signed at once, at least 500 (default 5000)')
    .option('--agent-jwt-sign-rate <n>', 'JWT-SVIDs per second each agent may have signed (default 100)')
    .option('--agent-jwt-sign-burst <n>', 'JWT-SVIDs an agent may have signed at once (default 1000)')
    .option('--agent-sign-max-in-flight <n>', 'X.509-SVID batches of one agent in progress at once (default 4)')
    .option('--agent-max-long-polls <n>', 'sync long-polls one agent may hold open; more answer the oldest (default 2)')
    .option('--agent-max-connections <n>', 'TLS connections one agent may hold open; more get 429 (default 64)')
    .option(
      '--database-pool-timeout <duration>',
      'longest a query waits for a pooled connection, then 503 (default 10s)',
    )
    .option('--database-pool-size <n>', 'connections to PostgreSQL in the pool, besides the listening one (default 10)')
    .option(
      '--skip-migrations',
      'do not migrate at start; refuse to start while a migration is pending (apply them with sigil-server migrate)',
    )
    .option('--signing-queue-max-items <n>', 'CSRs and JWT requests waiting to be signed, all agents (default 20000)')
    .option(
      '--signing-workers <n>',
      'threads signing X.509-SVIDs; 0: on the event loop (default: 1 per CPU, 0 on 1 CPU)',
    )
    .option('--agent-renew-rate <n>', 'agent SVID renewals per second per agent, fractions allowed (default 0.2)')
    .option('--agent-renew-burst <n>', 'agent SVID renewals an agent may make at once (default 10)')
    .option('--listen-backlog <n>', 'accept queue of the TLS port, capped by net.core.somaxconn (default 4096)')
    .action(async (options: RunOptions) => {
      const config = configFromOptions(options);
      // Loaded here, not at the top: the admin subcommands must start fast, without Nest.
      const [{ startServer }, { Logger }, { releaseFreedNativeMemoryEvery }] = await Promise.all([
        import('../app.js'),
        import('@nestjs/common'),
        import('@sigil/runtime/native-memory'),
      ]);
      const server = await startServer(config);
      const stopReleasing = releaseFreedNativeMemoryEvery(
        NATIVE_MEMORY_RELEASE_INTERVAL_MS,
        NATIVE_MEMORY_RELEASE_WARM_UP,
      );
      const logger = new Logger('SigilServer');
      let stopping = false;
      const stop = (signal: NodeJS.Signals): void => {
        if (stopping) {
          // A second signal while shutting down: stop waiting.
          process.exit(130);
        }
        stopping = true;
        stopReleasing();
        logger.log({ msg: 'shutting down', signal });
        server.close().then(
          () => {
            process.exitCode = 0;
          },
          (error: unknown) => {
            logger.error({ msg: 'shutdown failed', err: error });
            process.exitCode = 1;
          },
        );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
}
