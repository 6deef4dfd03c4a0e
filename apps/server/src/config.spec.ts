import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultSigningWorkers } from './agent-api/signing-limits.js';
import { ConfigError, loadServerConfig, type LoadServerConfigInput } from './config.js';

const dir = mkdtempSync(join(tmpdir(), 'sigil-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

function problemsOf(input: LoadServerConfigInput): readonly string[] {
  try {
    loadServerConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('loadServerConfig', () => {
  it('gives SPIRE-like defaults with no input at all', () => {
    const config = loadServerConfig({ cwd: '/srv' });
    expect(config.trustDomain.toString()).toBe('example.org');
    expect(config.trustDomainIsDefault).toBe(true);
    expect(config).toMatchObject({
      dataDir: '/srv/.sigil/server',
      bindAddress: '0.0.0.0',
      port: 8081,
      adminSocket: '/tmp/sigil-server/private/api.sock',
      caKeyType: 'ec-p256',
      caTtlSeconds: 86400,
      x509SvidTtlSeconds: 3600,
      jwtSvidTtlSeconds: 300,
      joinTokenTtlSeconds: 600,
      logLevel: 'info',
    });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.upstreamCa).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('takes flags over env over the file', () => {
    const file = writeConfig('layers.json', { trust_domain: 'file.test', port: 9000, data_dir: 'from-file' });
    const config = loadServerConfig({
      file,
      cwd: '/base',
      env: { SIGIL_TRUST_DOMAIN: 'env.test', SIGIL_PORT: '9001' },
      flags: { trustDomain: 'flag.test' },
    });
    expect(config.trustDomain.toString()).toBe('flag.test');
    expect(config.trustDomainIsDefault).toBe(false);
    expect(config.port).toBe(9001);
    expect(config.dataDir).toBe('/base/from-file');
  });

  it('reads DATABASE_URL, durations with units and the upstream CA pair', () => {
    const config = loadServerConfig({
      env: { DATABASE_URL: 'postgres://u:secret@db:5432/sigil', SIGIL_CA_TTL: '48h' },
      flags: { x509SvidTtl: '30m', jwtSvidTtl: '120', upstreamCaCert: '/pki/ca.pem', upstreamCaKey: '/pki/ca.key' },
    });
    expect(config.databaseUrl).toBe('postgres://u:secret@db:5432/sigil');
    expect(config.caTtlSeconds).toBe(172800);
    expect(config.x509SvidTtlSeconds).toBe(1800);
    expect(config.jwtSvidTtlSeconds).toBe(120);
    expect(config.upstreamCa).toEqual({ certFile: '/pki/ca.pem', keyFile: '/pki/ca.key' });
  });

  it('reads upstream authority sigil and the downstream CA TTL cap, from flags, env or file', () => {
    const fromFlags = loadServerConfig({
      flags: {
        upstreamAuthority: 'sigil',
        upstreamAgentSocket: '/run/top-agent/api.sock',
        upstreamServerAddress: 'top.example.org:8081',
        downstreamCaMaxTtl: '6h',
      },
    });
    expect(fromFlags.upstreamSigil).toEqual({
      agentSocket: '/run/top-agent/api.sock',
      serverAddress: { host: 'top.example.org', port: 8081, text: 'top.example.org:8081' },
    });
    expect(fromFlags.upstreamCa).toBeUndefined();
    expect(fromFlags.downstreamCaMaxTtlSeconds).toBe(6 * 3600);
    const fromEnv = loadServerConfig({
      env: {
        SIGIL_UPSTREAM_AUTHORITY: 'sigil',
        SIGIL_UPSTREAM_AGENT_SOCKET: '/s.sock',
        SIGIL_UPSTREAM_SERVER_ADDRESS: '[::1]:8081',
        SIGIL_CA_TTL: '48h',
      },
    });
    expect(fromEnv.upstreamSigil?.serverAddress.text).toBe('[::1]:8081');
    // The cap defaults to the CA TTL.
    expect(fromEnv.downstreamCaMaxTtlSeconds).toBe(48 * 3600);
    expect(loadServerConfig({}).upstreamSigil).toBeUndefined();
    expect(
      loadServerConfig({ flags: { upstreamAuthority: 'disk', upstreamCaCert: '/c.pem', upstreamCaKey: '/c.key' } })
        .upstreamCa,
    ).toEqual({ certFile: '/c.pem', keyFile: '/c.key' });
  });

  it.each<[string, LoadServerConfigInput, string]>([
    [
      'an unknown upstream authority',
      { flags: { upstreamAuthority: 'spire' } },
      "--upstream-authority: must be one of disk, sigil, got 'spire'",
    ],
    [
      'sigil without the agent socket',
      { flags: { upstreamAuthority: 'sigil', upstreamServerAddress: 'top:8081' } },
      'upstream_agent_socket: required by upstream_authority sigil',
    ],
    [
      'sigil without the server address',
      { flags: { upstreamAuthority: 'sigil', upstreamAgentSocket: '/s.sock' } },
      'upstream_server_address: required by upstream_authority sigil',
    ],
    [
      'sigil with the upstream CA files',
      {
        flags: {
          upstreamAuthority: 'sigil',
          upstreamAgentSocket: '/s.sock',
          upstreamServerAddress: 'top:8081',
          upstreamCaCert: '/c.pem',
          upstreamCaKey: '/c.key',
        },
      },
      '--upstream-ca-cert: only for upstream_authority disk, not sigil (the upstream server signs)',
    ],
    [
      'the agent socket without upstream authority sigil',
      { flags: { upstreamAgentSocket: '/s.sock' } },
      '--upstream-agent-socket: needs upstream_authority sigil',
    ],
    [
      'disk without the files',
      { env: { SIGIL_UPSTREAM_AUTHORITY: 'disk' } },
      'SIGIL_UPSTREAM_AUTHORITY: disk needs upstream_ca_cert_file and upstream_ca_key_file',
    ],
    [
      'a server address without a port',
      { flags: { upstreamAuthority: 'sigil', upstreamAgentSocket: '/s.sock', upstreamServerAddress: 'top' } },
      "--upstream-server-address: must be HOST:PORT of the upstream Sigil server, e.g. sigil.example.org:8081, got 'top'",
    ],
  ])('refuses %s, naming the key', (_name, input, message) => {
    expect(() => loadServerConfig(input)).toThrow(message);
  });

  it('reads every duration in the one Go-style syntax, in flags, variables and the file alike', () => {
    const file = writeConfig('durations.json', { join_token_ttl: '1h30m', ca_ttl: 172800 });
    const config = loadServerConfig({
      file,
      env: { SIGIL_JWT_SVID_TTL: '2m30s' },
      flags: { x509SvidTtl: '1h30m' },
    });
    expect(config.x509SvidTtlSeconds).toBe(5400);
    expect(config.jwtSvidTtlSeconds).toBe(150);
    expect(config.joinTokenTtlSeconds).toBe(5400);
    expect(config.caTtlSeconds).toBe(172800);
    expect(() => loadServerConfig({ flags: { jwtSvidTtl: '1.5s' } })).toThrow(
      "--jwt-svid-ttl: must be a duration from 1s to 24h, such as 90s, 15m or 1h30m (a bare number is seconds), got '1.5s'",
    );
  });

  it('reads the agent API settings: the x509pop CA bundle path and the per-agent signing budgets', () => {
    const defaults = loadServerConfig({ cwd: '/srv' });
    expect(defaults).toMatchObject({
      agentSignRatePerSecond: 500,
      agentSignBurst: 5_000,
      agentJwtSignRatePerSecond: 100,
      agentJwtSignBurst: 1_000,
      agentSignMaxInFlight: 4,
    });
    expect(defaults.nodeAttestors.map((setting) => setting.type)).toEqual(['join_token']);
    const config = loadServerConfig({
      cwd: '/srv',
      flags: { x509popCaBundle: 'pki/nodes.pem', agentSignRate: '5', agentJwtSignBurst: '9' },
      env: { SIGIL_AGENT_SIGN_BURST: '700', SIGIL_AGENT_JWT_SIGN_RATE: '3', SIGIL_AGENT_SIGN_MAX_IN_FLIGHT: '2' },
    });
    expect(config.nodeAttestors.find((setting) => setting.type === 'x509pop')?.options).toEqual({
      ca_bundle: '/srv/pki/nodes.pem',
    });
    expect(config).toMatchObject({
      agentSignRatePerSecond: 5,
      agentSignBurst: 700,
      agentJwtSignRatePerSecond: 3,
      agentJwtSignBurst: 9,
      agentSignMaxInFlight: 2,
    });
  });

  it('reads the per-address limits of the unauthenticated routes, each from flag, env or file', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({
      attestationRatePerSecond: 10,
      attestationBurst: 100,
      publicReadRatePerSecond: 20,
      publicReadBurst: 200,
    });
    const config = loadServerConfig({
      cwd: '/srv',
      flags: { attestationRate: '2', publicReadBurst: '9' },
      env: { SIGIL_ATTESTATION_BURST: '30', SIGIL_PUBLIC_READ_RATE: '4' },
    });
    expect(config).toMatchObject({
      attestationRatePerSecond: 2,
      attestationBurst: 30,
      publicReadRatePerSecond: 4,
      publicReadBurst: 9,
    });
    expect(() => loadServerConfig({ cwd: '/srv', flags: { attestationRate: '0' } })).toThrow(
      "--attestation-rate: must be a whole number from 1 to 1000000, got '0'",
    );
  });

  it('reads the TLS port connection limits and timeouts, with defaults that admit a fleet', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({
      maxConnections: 16_384,
      maxConnectionsPerAddress: 1024,
      tlsHandshakeRatePerSecond: 100,
      tlsHandshakeBurst: 1000,
      tlsHandshakeTimeoutSeconds: 10,
      httpHeadersTimeoutSeconds: 10,
      httpRequestTimeoutSeconds: 30,
      httpIdleTimeoutSeconds: 10,
    });
    const file = writeConfig('connections.json', { max_connections: 500, http_request_timeout: '2m' });
    const config = loadServerConfig({
      cwd: '/srv',
      file,
      flags: { maxConnectionsPerAddress: '8', tlsHandshakeTimeout: '5s', httpIdleTimeout: '1m' },
      env: { SIGIL_TLS_HANDSHAKE_RATE: '20', SIGIL_TLS_HANDSHAKE_BURST: '40', SIGIL_HTTP_HEADERS_TIMEOUT: '3' },
    });
    expect(config).toMatchObject({
      maxConnections: 500,
      maxConnectionsPerAddress: 8,
      tlsHandshakeRatePerSecond: 20,
      tlsHandshakeBurst: 40,
      tlsHandshakeTimeoutSeconds: 5,
      httpHeadersTimeoutSeconds: 3,
      httpRequestTimeoutSeconds: 120,
      httpIdleTimeoutSeconds: 60,
    });
  });

  it('reads the agent sync limit and the agent status cache time to live, with their defaults', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({
      agentSyncRatePerSecond: 5,
      agentSyncBurst: 20,
      agentStatusCacheTtlSeconds: 30,
    });
    const config = loadServerConfig({
      cwd: '/srv',
      flags: { agentSyncRate: '2', agentStatusCacheTtl: '5s' },
      env: { SIGIL_AGENT_SYNC_BURST: '9' },
    });
    expect(config).toMatchObject({ agentSyncRatePerSecond: 2, agentSyncBurst: 9, agentStatusCacheTtlSeconds: 5 });
    expect(() => loadServerConfig({ env: { SIGIL_AGENT_STATUS_CACHE_TTL: '2h' } })).toThrow(
      'SIGIL_AGENT_STATUS_CACHE_TTL: must be a duration from 1s to 1h',
    );
  });

  it('reads signing_workers: one per CPU by default (none on one CPU), 0 for the event loop, at most 256', () => {
    expect(loadServerConfig({ cwd: '/srv' }).signingWorkers).toBe(defaultSigningWorkers(availableParallelism()));
    expect(defaultSigningWorkers(1)).toBe(0);
    expect(defaultSigningWorkers(2)).toBe(2);
    expect(defaultSigningWorkers(512)).toBe(256);
    expect(loadServerConfig({ flags: { signingWorkers: '0' } }).signingWorkers).toBe(0);
    expect(loadServerConfig({ env: { SIGIL_SIGNING_WORKERS: '3' } }).signingWorkers).toBe(3);
    expect(loadServerConfig({ file: writeConfig('workers.json', { signing_workers: 8 }) }).signingWorkers).toBe(8);
    expect(problemsOf({ flags: { signingWorkers: '257' } })).toEqual([
      "--signing-workers: must be a whole number from 0 to 256, got '257'",
    ]);
    expect(problemsOf({ env: { SIGIL_SIGNING_WORKERS: '-1' } })).toEqual([
      "SIGIL_SIGNING_WORKERS: must be a whole number from 0 to 256, got '-1'",
    ]);
  });

  it('reads the operational limits of issue 16 (long-polls, pool wait, signing queue, renewals, backlog)', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({
      agentMaxLongPolls: 2,
      databasePoolTimeoutSeconds: 10,
      signingQueueMaxItems: 20_000,
      agentRenewRatePerSecond: 0.2,
      agentRenewBurst: 10,
      listenBacklog: 4096,
    });
    const file = writeConfig('operational.json', { agent_renew_rate: 0.05, listen_backlog: 128 });
    expect(
      loadServerConfig({
        cwd: '/srv',
        file,
        flags: { agentMaxLongPolls: '1', databasePoolTimeout: '2s' },
        env: { SIGIL_SIGNING_QUEUE_MAX_ITEMS: '1000', SIGIL_AGENT_RENEW_BURST: '3' },
      }),
    ).toMatchObject({
      agentMaxLongPolls: 1,
      databasePoolTimeoutSeconds: 2,
      signingQueueMaxItems: 1000,
      agentRenewRatePerSecond: 0.05,
      agentRenewBurst: 3,
      listenBacklog: 128,
    });
    expect(
      loadServerConfig({
        file: writeConfig('operational-2.json', {
          agent_max_long_polls: 4,
          database_pool_timeout: '1m',
          signing_queue_max_items: 600,
          agent_renew_burst: 20,
        }),
        flags: { agentRenewRate: '1.5', listenBacklog: '511' },
        env: { SIGIL_LISTEN_BACKLOG: '9' },
      }),
    ).toMatchObject({
      agentMaxLongPolls: 4,
      databasePoolTimeoutSeconds: 60,
      signingQueueMaxItems: 600,
      agentRenewRatePerSecond: 1.5,
      agentRenewBurst: 20,
      listenBacklog: 511,
    });
    expect(
      loadServerConfig({
        env: {
          SIGIL_AGENT_MAX_LONG_POLLS: '3',
          SIGIL_DATABASE_POOL_TIMEOUT: '30s',
          SIGIL_AGENT_RENEW_RATE: '2',
        },
      }),
    ).toMatchObject({ agentMaxLongPolls: 3, databasePoolTimeoutSeconds: 30, agentRenewRatePerSecond: 2 });
    expect(
      problemsOf({
        flags: { agentMaxLongPolls: '0', signingQueueMaxItems: '499', agentRenewRate: '0', listenBacklog: '70000' },
        env: { SIGIL_DATABASE_POOL_TIMEOUT: '10m', SIGIL_AGENT_RENEW_BURST: '0' },
      }),
    ).toEqual([
      "--agent-max-long-polls: must be a whole number from 1 to 100, got '0'",
      "SIGIL_DATABASE_POOL_TIMEOUT: must be a duration from 1s to 5m, such as 90s, 15m or 1h30m (a bare number is seconds), got '10m'",
      "--signing-queue-max-items: must be a whole number from 500 to 10000000, got '499'",
      "--agent-renew-rate: must be a number from 0.001 to 1000, got '0'",
      "SIGIL_AGENT_RENEW_BURST: must be a whole number from 1 to 10000, got '0'",
      "--listen-backlog: must be a whole number from 1 to 65535, got '70000'",
    ]);
    expect(problemsOf({ file: writeConfig('renew.json', { agent_renew_rate: '1/s' }) })).toEqual([
      "agent_renew_rate: must be a number from 0.001 to 1000, got '1/s'",
    ]);
  });

  it.each<[string, LoadServerConfigInput, string]>([
    [
      'uppercase trust domain in the file',
      { file: 'td.json' },
      "trust_domain: must be a trust domain name, got 'Example.org'",
    ],
    [
      'trust domain flag with a path',
      { flags: { trustDomain: 'spiffe://a/b' } },
      "--trust-domain: must be a trust domain name, got 'spiffe://a/b'",
    ],
    [
      'port out of range',
      { env: { SIGIL_PORT: '70000' } },
      "SIGIL_PORT: must be a port number from 0 to 65535, got '70000'",
    ],
    ['port not a number', { flags: { port: 'http' } }, "--port: must be a port number from 0 to 65535, got 'http'"],
    [
      'unknown key type',
      { flags: { caKeyType: 'ed25519' } },
      "--ca-key-type: must be one of ec-p256, ec-p384, rsa-2048, got 'ed25519'",
    ],
    [
      'bad duration',
      { flags: { x509SvidTtl: '1 hour' } },
      "--x509-svid-ttl: must be a duration from 1s to 87600h, such as 90s, 15m or 1h30m (a bare number is seconds), got '1 hour'",
    ],
    [
      'svid outliving the CA',
      { flags: { caTtl: '600', x509SvidTtl: '3600' } },
      '--x509-svid-ttl: must not exceed the CA TTL (600s)',
    ],
    [
      'a CA TTL below the default SVID TTL',
      { flags: { caTtl: '30m' } },
      '--ca-ttl: must be at least the default x509_svid_ttl (3600s), or set x509_svid_ttl lower',
    ],
    [
      'half an upstream CA',
      { flags: { upstreamCaCert: '/ca.pem' } },
      'upstream_ca_key_file: required when the other upstream CA file is set',
    ],
    [
      'a KEK that is not 32 bytes',
      { env: { SIGIL_KEK: 'c2hvcnQ=' } },
      'SIGIL_KEK: must be the base64 encoding of exactly 32 bytes',
    ],
    [
      'a zero agent signing rate',
      { flags: { agentSignRate: '0' } },
      "--agent-sign-rate: must be a whole number from 1 to 1000000, got '0'",
    ],
    [
      'a zero connection cap',
      { env: { SIGIL_MAX_CONNECTIONS_PER_ADDRESS: '0' } },
      "SIGIL_MAX_CONNECTIONS_PER_ADDRESS: must be a whole number from 1 to 1000000, got '0'",
    ],
    [
      'a handshake timeout of 0',
      { flags: { tlsHandshakeTimeout: '0' } },
      "--tls-handshake-timeout: must be a duration from 1s to 5m, such as 90s, 15m or 1h30m (a bare number is seconds), got '0'",
    ],
    [
      'a headers timeout longer than the request timeout',
      { flags: { httpHeadersTimeout: '1m' } },
      '--http-headers-timeout: the headers timeout (60s) must not exceed the request timeout (30s)',
    ],
    [
      'a request timeout shorter than the default headers timeout',
      { flags: { httpRequestTimeout: '5' } },
      '--http-request-timeout: the headers timeout (10s) must not exceed the request timeout (5s)',
    ],
    [
      'an agent signing burst smaller than one full batch (it counts CSRs, not requests)',
      { env: { SIGIL_AGENT_SIGN_BURST: '100' } },
      'SIGIL_AGENT_SIGN_BURST: must be at least 500, the CSRs of one full batch (the burst counts CSRs, not ' +
        "requests), got '100'",
    ],
    [
      'an attestation burst smaller than what one refused attestation costs',
      { flags: { attestationBurst: '5' } },
      "--attestation-burst: must be at least 10, what one refused attestation costs, got '5'",
    ],
    [
      'bad log level',
      { env: { SIGIL_LOG_LEVEL: 'loud' } },
      "SIGIL_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, got 'loud'",
    ],
  ])('rejects %s', (_name, input, expected) => {
    writeConfig('td.json', { trust_domain: 'Example.org' });
    expect(problemsOf({ cwd: dir, ...input })).toEqual([expected]);
  });

  it('reads the log format and file and the metrics address, naming each bad value', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({ logLevel: 'info', logFormat: 'json' });
    expect(loadServerConfig({ cwd: '/srv' }).metricsAddress).toBeUndefined();
    const config = loadServerConfig({
      flags: { logFormat: 'text', logFile: 'logs/server.log', metricsAddress: '127.0.0.1:9988' },
      cwd: '/srv',
    });
    expect(config).toMatchObject({
      logFormat: 'text',
      logFile: '/srv/logs/server.log',
      metricsAddress: { host: '127.0.0.1', port: 9988, text: '127.0.0.1:9988' },
    });
    expect(
      loadServerConfig({ env: { SIGIL_METRICS_ADDRESS: '[::1]:0', SIGIL_LOG_FORMAT: 'json' } }).metricsAddress,
    ).toEqual({ host: '::1', port: 0, text: '[::1]:0' });
    expect(problemsOf({ flags: { logFormat: 'yaml', metricsAddress: '9988', logLevel: 'INFO' } })).toEqual([
      "--log-level: must be one of fatal, error, warn, info, debug, trace, got 'INFO'",
      "--log-format: must be one of json, text, got 'yaml'",
      "--metrics-address: must be HOST:PORT, e.g. 127.0.0.1:9988 (IPv6 as [::1]:9988), got '9988'",
    ]);
  });

  it('reads the database pool size and skip_migrations from flag, env or file, naming each bad value', () => {
    expect(loadServerConfig({ cwd: '/srv' })).toMatchObject({ databasePoolSize: 10, skipMigrations: false });
    expect(loadServerConfig({ flags: { databasePoolSize: '25', skipMigrations: true } })).toMatchObject({
      databasePoolSize: 25,
      skipMigrations: true,
    });
    expect(loadServerConfig({ env: { SIGIL_DATABASE_POOL_SIZE: '4', SIGIL_SKIP_MIGRATIONS: 'false' } })).toMatchObject({
      databasePoolSize: 4,
      skipMigrations: false,
    });
    const file = writeConfig('database.json', { database_pool_size: 40, skip_migrations: true });
    expect(loadServerConfig({ file })).toMatchObject({ databasePoolSize: 40, skipMigrations: true });
    expect(problemsOf({ env: { SIGIL_DATABASE_POOL_SIZE: '0', SIGIL_SKIP_MIGRATIONS: 'yes' } })).toEqual([
      "SIGIL_DATABASE_POOL_SIZE: must be a whole number from 1 to 1000, got '0'",
      "SIGIL_SKIP_MIGRATIONS: must be true or false, got 'yes'",
    ]);
  });

  it('reads the bundle endpoint: off by default, https_spiffe unless https_web with both files', () => {
    expect(loadServerConfig({ cwd: '/srv' }).bundleEndpoint).toBeUndefined();
    expect(loadServerConfig({ flags: { bundleEndpointAddress: '0.0.0.0:8443' } }).bundleEndpoint).toEqual({
      address: { host: '0.0.0.0', port: 8443, text: '0.0.0.0:8443' },
      profile: 'https_spiffe',
    });
    const web = loadServerConfig({
      cwd: '/srv',
      env: {
        SIGIL_BUNDLE_ENDPOINT_ADDRESS: '127.0.0.1:0',
        SIGIL_BUNDLE_ENDPOINT_PROFILE: 'https_web',
        SIGIL_BUNDLE_ENDPOINT_CERT_FILE: 'tls/cert.pem',
        SIGIL_BUNDLE_ENDPOINT_KEY_FILE: '/etc/tls/key.pem',
      },
    });
    expect(web.bundleEndpoint).toEqual({
      address: { host: '127.0.0.1', port: 0, text: '127.0.0.1:0' },
      profile: 'https_web',
      certFile: '/srv/tls/cert.pem',
      keyFile: '/etc/tls/key.pem',
    });
    expect(problemsOf({ flags: { bundleEndpointProfile: 'https_web', bundleEndpointCertFile: 'c.pem' } })).toEqual([
      '--bundle-endpoint-profile: needs bundle_endpoint_address',
      '--bundle-endpoint-cert-file: needs bundle_endpoint_address',
    ]);
    expect(
      problemsOf({
        flags: {
          bundleEndpointAddress: '127.0.0.1:1',
          bundleEndpointProfile: 'https_web',
          bundleEndpointCertFile: 'c',
        },
      }),
    ).toEqual(['--bundle-endpoint-key-file: required by the https_web bundle endpoint profile']);
    expect(problemsOf({ flags: { bundleEndpointAddress: '127.0.0.1:1', bundleEndpointKeyFile: 'k.pem' } })).toEqual([
      "--bundle-endpoint-key-file: only for the https_web profile (https_spiffe presents the server's SVID)",
    ]);
    expect(problemsOf({ flags: { bundleEndpointAddress: '8443', bundleEndpointProfile: 'acme' } })).toEqual([
      "--bundle-endpoint-address: must be HOST:PORT, e.g. 127.0.0.1:9988 (IPv6 as [::1]:9988), got '8443'",
      "--bundle-endpoint-profile: must be one of https_spiffe, https_web, got 'acme'",
    ]);
  });

  it('reads jwt_issuer (an https URL) and OIDC discovery (needs jwt_issuer; jwks_uri defaults to <issuer>/keys)', () => {
    expect(loadServerConfig({}).jwtIssuer).toBeUndefined();
    expect(loadServerConfig({}).oidcDiscovery).toBeUndefined();
    expect(loadServerConfig({ flags: { jwtIssuer: 'https://oidc.example.org' } }).jwtIssuer).toBe(
      'https://oidc.example.org',
    );
    expect(loadServerConfig({ env: { SIGIL_JWT_ISSUER: 'https://example.org/sigil/' } }).jwtIssuer).toBe(
      'https://example.org/sigil/',
    );
    const file = writeConfig('oidc.json', {
      jwt_issuer: 'https://example.org/sigil/',
      oidc_discovery_address: '127.0.0.1:8080',
    });
    expect(loadServerConfig({ file }).oidcDiscovery).toEqual({
      address: { host: '127.0.0.1', port: 8080, text: '127.0.0.1:8080' },
      issuer: 'https://example.org/sigil/',
      jwksUri: 'https://example.org/sigil/keys',
    });
    expect(
      loadServerConfig({
        env: {
          SIGIL_JWT_ISSUER: 'https://oidc.example.org',
          SIGIL_OIDC_DISCOVERY_ADDRESS: '127.0.0.1:0',
          SIGIL_OIDC_JWKS_URI: 'http://127.0.0.1:8080/keys',
        },
      }).oidcDiscovery?.jwksUri,
    ).toBe('http://127.0.0.1:8080/keys');
    expect(
      problemsOf({
        flags: { jwtIssuer: 'http://oidc.example.org', oidcJwksUri: 'https://oidc.example.org/keys?x=1' },
      }),
    ).toEqual([
      "--jwt-issuer: must be an absolute https URL without credentials, query or fragment, got 'http://oidc.example.org'",
      '--oidc-jwks-uri: must be an absolute http or https URL without credentials, query or fragment, got ' +
        "'https://oidc.example.org/keys?x=1'",
    ]);
    for (const bad of ['oidc.example.org', 'https://user:pw@oidc.example.org', 'https://oidc.example.org/#a', '']) {
      expect(problemsOf({ flags: { jwtIssuer: bad } })[0]).toMatch(/^--jwt-issuer: must be an absolute https URL/);
    }
    expect(problemsOf({ flags: { oidcDiscoveryAddress: '127.0.0.1:0' } })).toEqual([
      '--oidc-discovery-address: needs jwt_issuer, the issuer the discovery document names and JWT-SVIDs carry',
    ]);
    expect(problemsOf({ flags: { jwtIssuer: 'https://a.example', oidcJwksUri: 'https://a.example/keys' } })).toEqual([
      '--oidc-jwks-uri: needs oidc_discovery_address',
    ]);
  });

  it('reads the extra CA file for https_web bundle endpoints of federated trust domains', () => {
    expect(loadServerConfig({ cwd: '/srv' }).federationWebCaFile).toBeUndefined();
    expect(loadServerConfig({ cwd: '/srv', flags: { federationWebCaFile: 'ca.pem' } }).federationWebCaFile).toBe(
      '/srv/ca.pem',
    );
    expect(
      loadServerConfig({ cwd: '/srv', env: { SIGIL_FEDERATION_WEB_CA_FILE: '/etc/pki/ca.pem' } }).federationWebCaFile,
    ).toBe('/etc/pki/ca.pem');
  });

  it('never echoes a database URL, which may carry a password', () => {
    const problems = problemsOf({ env: { DATABASE_URL: 'mysql://root:hunter2@db/x' } });
    expect(problems).toEqual(['DATABASE_URL: must be a postgres:// or postgresql:// URL with a host']);
  });

  it('lists every bad key at once, unknown file keys included', () => {
    const file = writeConfig('many.json', { trust_domain: 'Example.org', port: -1, colour: 'blue', kek: 'x' });
    const problems = problemsOf({ file });
    expect(problems).toEqual([
      `colour: unknown key in config file ${file}`,
      `kek: unknown key in config file ${file}`,
      "trust_domain: must be a trust domain name, got 'Example.org'",
      "port: must be a port number from 0 to 65535, got '-1'",
    ]);
  });

  it('names the config file when it is missing or not JSON', () => {
    expect(problemsOf({ file: join(dir, 'absent.json') })).toEqual([
      `--config: cannot read ${join(dir, 'absent.json')}: ENOENT`,
    ]);
    const bad = writeConfig('bad.json', '{ trust_domain: }');
    expect(problemsOf({ file: bad })[0]).toMatch(/^--config: .*bad\.json is not valid JSON/);
    const array = writeConfig('array.json', '[]');
    expect(problemsOf({ file: array })).toEqual([`--config: ${array} must hold a JSON object`]);
  });

  it('rejects an admin socket path longer than sun_path allows', () => {
    const long = `/tmp/${'s'.repeat(120)}.sock`;
    expect(problemsOf({ flags: { adminSocket: long } })).toEqual([
      `--admin-socket: must be a Unix socket path of at most 107 bytes, got '${long}'`,
    ]);
  });
});

describe('loadServerConfig: node attestors', () => {
  const settings = (input: LoadServerConfigInput) =>
    loadServerConfig(input).nodeAttestors.map(({ type, options, source }) => ({ type, options, source }));

  it('enables join_token by default, and x509pop too when its CA bundle is set', () => {
    expect(settings({})).toEqual([{ type: 'join_token', options: {}, source: '--node-attestor' }]);
    expect(settings({ cwd: '/srv', env: { SIGIL_X509POP_CA_BUNDLE: 'nodes.pem' } })).toEqual([
      { type: 'join_token', options: {}, source: '--node-attestor' },
      { type: 'x509pop', options: { ca_bundle: '/srv/nodes.pem' }, source: 'x509pop_ca_bundle' },
    ]);
  });

  it('takes --node-attestor (repeatable), SIGIL_NODE_ATTESTORS and the file, flags first; only those listed', () => {
    const flags = { nodeAttestor: ['x509pop:ca_bundle=/etc/nodes.pem', 'k8s_psat:cluster=a,audience=sigil=x'] };
    expect(settings({ flags, env: { SIGIL_NODE_ATTESTORS: 'join_token' } })).toEqual([
      { type: 'x509pop', options: { ca_bundle: '/etc/nodes.pem' }, source: '--node-attestor' },
      { type: 'k8s_psat', options: { cluster: 'a', audience: 'sigil=x' }, source: '--node-attestor' },
    ]);
    expect(settings({ env: { SIGIL_NODE_ATTESTORS: ' join_token\n x509pop:ca_bundle=/a.pem ' } })).toEqual([
      { type: 'join_token', options: {}, source: 'SIGIL_NODE_ATTESTORS' },
      { type: 'x509pop', options: { ca_bundle: '/a.pem' }, source: 'SIGIL_NODE_ATTESTORS' },
    ]);
    const file = writeConfig('attestors.json', { node_attestors: { x509pop: { ca_bundle: '/b, c.pem' } } });
    expect(settings({ file })).toEqual([
      { type: 'x509pop', options: { ca_bundle: '/b, c.pem' }, source: 'node_attestors' },
    ]);
  });

  it('takes an attestor several times, in order: one listing per instance (the registry refuses duplicates)', () => {
    const a = 'k8s_psat:cluster=a,service_account_allow_list=sigil:agent';
    const b = 'k8s_psat:cluster=b,kube_config_file=/etc/b.yaml';
    const expected = (source: string) => [
      { type: 'k8s_psat', options: { cluster: 'a', service_account_allow_list: 'sigil:agent' }, source },
      { type: 'join_token', options: {}, source },
      { type: 'k8s_psat', options: { cluster: 'b', kube_config_file: '/etc/b.yaml' }, source },
    ];
    expect(settings({ flags: { nodeAttestor: [a, 'join_token', b] } })).toEqual(expected('--node-attestor'));
    expect(settings({ env: { SIGIL_NODE_ATTESTORS: `${a} join_token ${b}` } })).toEqual(
      expected('SIGIL_NODE_ATTESTORS'),
    );
    const file = writeConfig('clusters.json', {
      node_attestors: {
        k8s_psat: [
          { cluster: 'a', service_account_allow_list: 'sigil:agent' },
          { cluster: 'b', kube_config_file: '/etc/b.yaml' },
        ],
        join_token: {},
      },
    });
    const [first, joinToken, second] = expected('node_attestors');
    expect(settings({ file })).toEqual([first, second, joinToken]);
    // A single object is one listing, as before.
    const single = writeConfig('single.json', { node_attestors: { k8s_psat: { cluster: 'a' } } });
    expect(settings({ file: single })).toEqual([
      { type: 'k8s_psat', options: { cluster: 'a' }, source: 'node_attestors' },
    ]);
  });

  it('gives --x509pop-ca-bundle to an x509pop listed without a bundle, and refuses two bundles', () => {
    const flags = { nodeAttestor: ['x509pop'], x509popCaBundle: '/etc/nodes.pem' };
    expect(settings({ flags })).toEqual([
      { type: 'x509pop', options: { ca_bundle: '/etc/nodes.pem' }, source: '--node-attestor' },
    ]);
    expect(problemsOf({ flags: { ...flags, nodeAttestor: ['x509pop:ca_bundle=/other.pem'] } })).toEqual([
      '--node-attestor: x509pop has a ca_bundle option and the x509pop CA bundle is set too: set one',
    ]);
  });

  it.each([
    [
      { flags: { nodeAttestor: ['X509pop'] } },
      '--node-attestor: must be <type>[:<option>=<value>,…] with a type of a-z, 0-9 and _, got "X509pop"',
    ],
    [
      { flags: { nodeAttestor: ['x509pop:ca_bundle'] } },
      '--node-attestor: x509pop: options must be <option>=<value> separated by commas, got "ca_bundle"',
    ],
    [
      { flags: { nodeAttestor: ['x509pop:ca_bundle='] } },
      '--node-attestor: x509pop: options must be <option>=<value> separated by commas, got "ca_bundle="',
    ],
    [{ flags: { nodeAttestor: ['x509pop:a=1,a=2'] } }, '--node-attestor: x509pop: option a is set twice'],
    [{ env: { SIGIL_NODE_ATTESTORS: '   ' } }, 'SIGIL_NODE_ATTESTORS: must name at least one node attestor'],
    [{ file: 'empty' }, 'node_attestors: must name at least one node attestor'],
    [{ file: 'not-object' }, 'node_attestors.x509pop: must be an object of options, e.g. {}'],
    [{ file: 'not-string' }, 'node_attestors.x509pop.ca_bundle: must be a string'],
    [{ file: 'empty-array' }, 'node_attestors.k8s_psat: must hold at least one object of options'],
    [{ file: 'array-of-strings' }, 'node_attestors.k8s_psat[1]: must be an object of options, e.g. {}'],
    [{ file: 'array-not-string' }, 'node_attestors.k8s_psat[0].cluster: must be a string'],
  ])('refuses %j', (input, problem) => {
    const files: Record<string, unknown> = {
      empty: { node_attestors: {} },
      'not-object': { node_attestors: { x509pop: 'ca.pem' } },
      'not-string': { node_attestors: { x509pop: { ca_bundle: 7 } } },
      'empty-array': { node_attestors: { k8s_psat: [] } },
      'array-of-strings': { node_attestors: { k8s_psat: [{ cluster: 'a' }, 'cluster=b'] } },
      'array-not-string': { node_attestors: { k8s_psat: [{ cluster: 1 }] } },
    };
    const resolved = 'file' in input ? { file: writeConfig(`${input.file}.json`, files[input.file]) } : input;
    expect(problemsOf(resolved as LoadServerConfigInput)).toEqual([problem]);
  });
});
