import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../../../test/support/test-ca.js';
import { knownTypes } from './attestor/workload/registry.js';
import { AgentConfigError, insecureBootstrapWarning, type LoadAgentConfigInput, loadAgentConfig } from './config.js';
import { WORKLOAD_API_LIMITS } from './endpoints/workload-api/workload-api.server.js';
import { JWT_SVID_LIMITS } from './manager/jwt-signing-lane.js';

let dir: string;
let bundlePem: string;
let bundleJwks: string;
let popCert: string;
let popKey: string;

function problemsOf(input: LoadAgentConfigInput): readonly string[] {
  try {
    loadAgentConfig(input);
  } catch (error) {
    if (error instanceof AgentConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected an AgentConfigError');
}

const base = (): LoadAgentConfigInput => ({
  flags: { serverAddress: ['127.0.0.1:8081'], joinToken: 'tok-1', trustBundle: join(dir, 'bundle.pem') },
  env: {},
  cwd: dir,
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sigil-agent-config-'));
  const ca = await TestCa.create('example.org');
  bundlePem = ca.certificate.toString('pem');
  bundleJwks = JSON.stringify(ca.bundle().toJwks());
  await writeFile(join(dir, 'bundle.pem'), bundlePem);
  await writeFile(join(dir, 'bundle.json'), bundleJwks);
  const other = await TestCa.create('other.org');
  await writeFile(join(dir, 'both.pem'), bundlePem + other.certificate.toString('pem'));
  const plain = await TestCa.create('example.org', { uris: [] });
  await writeFile(join(dir, 'plain.pem'), plain.certificate.toString('pem'));
  const popCa = await TestCa.create('pop.example', { uris: [] });
  const leaf = await popCa.createX509Svid('spiffe://pop.example/unused', { uris: [], subject: 'CN=node-1' });
  popCert = join(dir, 'node.pem');
  popKey = join(dir, 'node.key');
  await writeFile(popCert, leaf.certificate.toString('pem'));
  await writeFile(popKey, toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()));
  await writeFile(join(dir, 'garbage.pem'), 'not pem at all');
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({ server_address: ['a.example:1', 'b.example:2'], data_dir: 'from-file' }),
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadAgentConfig', () => {
  it('applies the defaults and freezes the result', () => {
    const config = loadAgentConfig(base());
    expect(config.serverAddresses.map((address) => address.text)).toEqual(['127.0.0.1:8081']);
    expect(config.attestation).toEqual({ type: 'join_token', options: { token: 'tok-1' } });
    expect(config.bootstrapTrust.kind).toBe('bundle');
    expect(config.trustDomain?.name).toBe('example.org');
    expect(config.socketPath).toBe('/tmp/sigil-agent/public/api.sock');
    expect(config.dataDir).toBe(join(dir, '.sigil/agent'));
    expect(config.logLevel).toBe('info');
    expect(config.workloadAttestors).toEqual([{ type: 'unix', options: {} }]);
    expect(config.workloadAttestationTimeoutMs).toBe(10_000);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.serverAddresses)).toBe(true);
    expect(Object.isFrozen(config.workloadAttestors)).toBe(true);
  });

  it('takes an admin socket path (off by default) from a flag, env or file, never under the Workload API socket dir', async () => {
    expect(loadAgentConfig(base()).adminSocketPath).toBeUndefined();
    expect(
      loadAgentConfig({ ...base(), flags: { ...base().flags, adminSocketPath: 'run/admin.sock' } }).adminSocketPath,
    ).toBe(join(dir, 'run/admin.sock'));
    expect(
      loadAgentConfig({ ...base(), env: { SIGIL_AGENT_ADMIN_SOCKET_PATH: '/tmp/sigil-agent/private/admin.sock' } })
        .adminSocketPath,
    ).toBe('/tmp/sigil-agent/private/admin.sock');
    const file = join(dir, 'admin-socket.json');
    await writeFile(file, JSON.stringify({ admin_socket_path: '/run/sigil/admin.sock' }));
    expect(loadAgentConfig({ ...base(), file }).adminSocketPath).toBe('/run/sigil/admin.sock');
    for (const inside of ['/tmp/sigil-agent/public/admin.sock', '/tmp/sigil-agent/public/a/admin.sock']) {
      expect(problemsOf({ ...base(), flags: { ...base().flags, adminSocketPath: inside } })).toEqual([
        '--admin-socket-path: must not be in the directory of the Workload API socket (/tmp/sigil-agent/public) or below it',
      ]);
    }
    for (const above of ['/tmp/sigil-agent/admin.sock', '/tmp/admin.sock']) {
      expect(problemsOf({ ...base(), flags: { ...base().flags, adminSocketPath: above } })).toEqual([
        `--admin-socket-path: its directory (${dirname(above)}) must not hold the Workload API socket's directory ` +
          '(/tmp/sigil-agent/public): it is made private at start, and workloads could not reach the socket',
      ]);
    }
    expect(problemsOf({ ...base(), flags: { ...base().flags, adminSocketPath: '' } })).toEqual([
      expect.stringMatching(/^--admin-socket-path: /),
    ]);
  });

  it('takes flags over SIGIL_AGENT_* env over the config file', () => {
    const config = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, serverAddress: undefined, dataDir: 'from-flag' },
      env: { SIGIL_AGENT_DATA_DIR: 'from-env', SIGIL_AGENT_LOG_LEVEL: 'debug', SIGIL_AGENT_CONFIG: 'config.json' },
    });
    expect(config.dataDir).toBe(join(dir, 'from-flag'));
    expect(config.logLevel).toBe('debug');
    expect(config.serverAddresses.map((address) => address.text)).toEqual(['a.example:1', 'b.example:2']);
    const fromEnv = loadAgentConfig({
      ...base(),
      env: { SIGIL_AGENT_SERVER_ADDRESS: 'c.example:3,[::1]:4' },
      flags: { ...base().flags, serverAddress: [] },
    });
    expect(fromEnv.serverAddresses.map((address) => [address.host, address.port])).toEqual([
      ['c.example', 3],
      ['::1', 4],
    ]);
  });

  it('accepts repeated and comma-separated server addresses', () => {
    const config = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, serverAddress: ['a.example:1,b.example:2', 'c.example:3'] },
    });
    expect(config.serverAddresses.map((address) => address.text)).toEqual([
      'a.example:1',
      'b.example:2',
      'c.example:3',
    ]);
  });

  it.each([
    [undefined, '--server-address: is required'],
    [['localhost'], "--server-address: must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got 'localhost'"],
    [['localhost:0'], "--server-address: port must be from 1 to 65535, got 'localhost:0'"],
    [['localhost:70000'], "--server-address: port must be from 1 to 65535, got 'localhost:70000'"],
    [['[example.org]:1'], "--server-address: example.org in brackets must be an IPv6 address, got '[example.org]:1'"],
    [['bad_host:1'], "--server-address: host must be a host name or IP address, got 'bad_host:1'"],
    [['a.example:1,'], "--server-address: must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got ''"],
  ])('rejects server address %j', (serverAddress, message) => {
    expect(problemsOf({ ...base(), flags: { ...base().flags, serverAddress } })).toEqual([message]);
  });

  it('rejects a join token with spaces or too long, without echoing it', () => {
    const problems = problemsOf({ ...base(), flags: { ...base().flags, joinToken: 'secret value' } });
    expect(problems).toEqual(['--join-token: must be 1 to 256 printable characters without spaces']);
    expect(
      problemsOf({
        ...base(),
        env: { SIGIL_AGENT_JOIN_TOKEN: 'x'.repeat(257) },
        flags: { ...base().flags, joinToken: undefined },
      }),
    ).toEqual(['SIGIL_AGENT_JOIN_TOKEN: must be 1 to 256 printable characters without spaces']);
  });

  it('reads x509pop files and checks them', () => {
    const config = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, joinToken: undefined, x509popCert: popCert, x509popKey: popKey },
    });
    expect(config.attestation).toEqual({ type: 'x509pop', options: { cert_file: popCert, key_file: popKey } });
    const flags = { ...base().flags, joinToken: undefined };
    expect(problemsOf({ ...base(), flags: { ...flags, x509popCert: popCert } })).toEqual([
      '--x509pop-key: required when the x509pop cert file is set',
    ]);
    expect(problemsOf({ ...base(), flags: { ...flags, x509popKey: popKey } })).toEqual([
      '--x509pop-cert: required when the x509pop key file is set',
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, x509popCert: popCert, x509popKey: popKey } })).toEqual([
      '--join-token: use either a join token or x509pop, not both',
    ]);
    const missing = join(dir, 'missing.pem');
    expect(
      problemsOf({ ...base(), flags: { ...flags, x509popCert: missing, x509popKey: join(dir, 'garbage.pem') } }),
    ).toEqual([
      `--x509pop-cert: cannot read ${missing}: ENOENT`,
      expect.stringMatching(/^--x509pop-key: .*garbage\.pem is not a PEM private key: /),
    ]);
    expect(problemsOf({ ...base(), flags: { ...flags, x509popCert: popKey, x509popKey: popKey } })).toEqual([
      expect.stringMatching(/^--x509pop-cert: .*node\.key (holds no certificate|is not PEM certificates)/),
    ]);
  });

  it('takes any node attestor of its registry with --node-attestor <type>:<options>, from a flag, a variable or the file', () => {
    const flags = { ...base().flags, joinToken: undefined };
    expect(
      loadAgentConfig({ ...base(), flags: { ...flags, nodeAttestor: 'x509pop:cert_file=/n/c.pem,key_file=/n/k.pem' } })
        .attestation,
    ).toEqual({ type: 'x509pop', options: { cert_file: '/n/c.pem', key_file: '/n/k.pem' } });
    expect(
      loadAgentConfig({ ...base(), flags, env: { SIGIL_AGENT_NODE_ATTESTOR: 'join_token:token=tok-2' } }).attestation,
    ).toEqual({ type: 'join_token', options: { token: 'tok-2' } });
    expect(
      loadAgentConfig({ ...base(), flags: { ...flags, nodeAttestor: 'k8s_psat:cluster=c1' } }).attestation,
    ).toEqual({ type: 'k8s_psat', options: { cluster: 'c1' } });
    expect(problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'k8s_psat:token_path=/t' } })).toEqual([
      '--node-attestor: k8s_psat attestor: option cluster is required',
    ]);
    expect(problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'tpm:cluster=c1' } })).toEqual([
      '--node-attestor: unknown node attestor "tpm" (known: join_token, x509pop, k8s_psat)',
    ]);
    expect(problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'x509pop:cert_file=/n/c.pem' } })).toEqual([
      '--node-attestor: x509pop attestor: options cert_file and key_file are required',
    ]);
    expect(
      problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'x509pop:cert_file=/c,key_file=/k,cert_flie=/x' } }),
    ).toEqual(['--node-attestor: node attestor x509pop: unknown option "cert_flie" (known: cert_file, key_file)']);
    expect(problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'k8s_psat:cluster=c1,token_pth=/t' } })).toEqual([
      '--node-attestor: node attestor k8s_psat: unknown option "token_pth" (known: cluster, token_path)',
    ]);
    expect(problemsOf({ ...base(), flags: { ...flags, nodeAttestor: 'x509pop:cert_file' } })).toEqual([
      '--node-attestor: x509pop: options must be <option>=<value> separated by commas, got "cert_file"',
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, nodeAttestor: 'join_token:token=tok-2' } })).toEqual([
      '--node-attestor: use either it or --join-token, not both',
    ]);
  });

  it('allows no attestation method (resume from the data dir)', () => {
    expect(
      loadAgentConfig({ ...base(), flags: { ...base().flags, joinToken: undefined } }).attestation,
    ).toBeUndefined();
  });

  it('requires exactly one of a trust bundle and insecure bootstrap', () => {
    const flags = { ...base().flags, trustBundle: undefined };
    expect(problemsOf({ ...base(), flags })).toEqual([
      "--trust-bundle: required (the server's CA certificates), unless --insecure-bootstrap",
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, insecureBootstrap: true } })).toEqual([
      '--trust-bundle: set either a trust bundle or insecure bootstrap, not both',
    ]);
    // Insecure bootstrap checks only the server's SPIFFE ID, so it must know the trust domain to expect.
    expect(problemsOf({ ...base(), flags: { ...flags, insecureBootstrap: true } })).toEqual([
      '--trust-domain: required with insecure bootstrap (the server must be spiffe://<it>/sigil/server)',
    ]);
    const insecure = loadAgentConfig({
      ...base(),
      flags: { ...flags, insecureBootstrap: true, trustDomain: 'example.org' },
    });
    expect(insecure.bootstrapTrust).toEqual({ kind: 'insecure' });
    expect(insecure.trustDomain?.name).toBe('example.org');
    expect(problemsOf({ ...base(), flags, env: { SIGIL_AGENT_INSECURE_BOOTSTRAP: 'yes' } })).toEqual([
      "SIGIL_AGENT_INSECURE_BOOTSTRAP: must be true or false, got 'yes'",
    ]);
    expect(
      loadAgentConfig({
        ...base(),
        flags,
        env: { SIGIL_AGENT_INSECURE_BOOTSTRAP: 'true', SIGIL_AGENT_TRUST_DOMAIN: 'example.org' },
      }).bootstrapTrust.kind,
    ).toBe('insecure');
  });

  it('learns the trust domain from a PEM or SPIFFE bundle, and checks it against --trust-domain', () => {
    const jwks = loadAgentConfig({ ...base(), flags: { ...base().flags, trustBundle: 'bundle.json' } });
    expect(jwks.trustDomain?.name).toBe('example.org');
    expect(jwks.bootstrapTrust.kind === 'bundle' && jwks.bootstrapTrust.bundle.x509Authorities.length).toBe(1);
    expect(problemsOf({ ...base(), flags: { ...base().flags, trustDomain: 'other.org' } })).toEqual([
      `--trust-bundle: ${join(dir, 'bundle.pem')} holds authorities of trust domain example.org, not of the configured other.org`,
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, trustBundle: 'both.pem' } })).toEqual([
      `--trust-bundle: ${join(dir, 'both.pem')} names several trust domains (example.org, other.org): set --trust-domain`,
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, trustBundle: 'plain.pem' } })).toEqual([
      `--trust-bundle: ${join(dir, 'plain.pem')} names no trust domain (no CA certificate has a spiffe:// URI SAN): set --trust-domain`,
    ]);
    const named = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, trustBundle: 'plain.pem', trustDomain: 'example.org' },
    });
    expect(named.trustDomain?.name).toBe('example.org');
    expect(problemsOf({ ...base(), flags: { ...base().flags, trustBundle: 'garbage.pem' } })).toEqual([
      expect.stringMatching(/^--trust-bundle: .*garbage\.pem is neither PEM CA certificates nor a SPIFFE bundle: /),
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, trustBundle: 'nope.pem' } })).toEqual([
      `--trust-bundle: cannot read ${join(dir, 'nope.pem')}: ENOENT`,
    ]);
  });

  it.each([
    [{ trustDomain: 'Example.org' }, "--trust-domain: must be a trust domain name, got 'Example.org'"],
    [
      { socketPath: `/${'s'.repeat(107)}` },
      `--socket-path: must be a Unix socket path of at most 107 bytes, got '/${'s'.repeat(107)}'`,
    ],
    [{ dataDir: ' ' }, "--data-dir: must be a directory path, got ' '"],
    [{ logLevel: 'verbose' }, "--log-level: must be one of fatal, error, warn, info, debug, trace, got 'verbose'"],
  ])('rejects %j', (flags, message) => {
    expect(problemsOf({ ...base(), flags: { ...base().flags, ...flags } })).toEqual([message]);
  });

  it('takes the JWT-SVID limits from flags, env or the file, with defaults, and checks them', async () => {
    expect(loadAgentConfig(base()).jwtSvidLimits).toEqual(JWT_SVID_LIMITS);
    await writeFile(
      join(dir, 'jwt.json'),
      JSON.stringify({ jwt_svid_cache_max_mib: 64, jwt_svid_miss_rate_per_uid: 20 }),
    );
    const config = loadAgentConfig({
      ...base(),
      file: 'jwt.json',
      flags: { ...base().flags, jwtSvidMissBurstPerUid: '500' },
      env: {
        SIGIL_AGENT_JWT_SVID_CACHE_MAX_MIB_PER_UID: '16',
        SIGIL_AGENT_JWT_SVID_MAX_PENDING_PER_UID: '256',
        SIGIL_AGENT_JWT_SVID_MAX_CONCURRENT_SIGNING: '2',
      },
    });
    expect(config.jwtSvidLimits).toEqual({
      ...JWT_SVID_LIMITS,
      cacheMaxBytes: 64 * 1024 * 1024,
      cacheMaxBytesPerUid: 16 * 1024 * 1024,
      missRatePerSecond: 20,
      missBurst: 500,
      maxPendingMissesPerUid: 256,
      maxConcurrentSigning: 2,
    });
    expect(
      loadAgentConfig({ ...base(), flags: { ...base().flags, jwtSvidMaxConcurrentSigning: '16' } }).jwtSvidLimits,
    ).toMatchObject({ maxConcurrentSigning: 16 });
    await writeFile(join(dir, 'jwt-lane.json'), JSON.stringify({ jwt_svid_max_concurrent_signing: 3 }));
    expect(loadAgentConfig({ ...base(), file: 'jwt-lane.json' }).jwtSvidLimits.maxConcurrentSigning).toBe(3);
    expect(
      problemsOf({ ...base(), env: { ...base().env, SIGIL_AGENT_JWT_SVID_MAX_CONCURRENT_SIGNING: '257' } }),
    ).toEqual(["SIGIL_AGENT_JWT_SVID_MAX_CONCURRENT_SIGNING: must be a whole number from 1 to 256, got '257'"]);
    expect(
      problemsOf({
        ...base(),
        flags: { ...base().flags, jwtSvidMissRatePerUid: '0', jwtSvidCacheMaxMib: '4', jwtSvidCacheMaxMibPerUid: '8' },
      }),
    ).toEqual(["--jwt-svid-miss-rate-per-uid: must be a whole number from 1 to 1000000, got '0'"]);
    expect(
      problemsOf({ ...base(), flags: { ...base().flags, jwtSvidCacheMaxMib: '4', jwtSvidCacheMaxMibPerUid: '8' } }),
    ).toEqual([
      '--jwt-svid-cache-max-mib-per-uid: must not exceed the whole cache (--jwt-svid-cache-max-mib, 4 MiB), got 8',
    ]);
  });

  it('lists every bad key at once', () => {
    const problems = problemsOf({ flags: { serverAddress: ['x'], logLevel: 'loud', dataDir: '' }, env: {}, cwd: dir });
    expect(problems).toEqual([
      "--server-address: must be HOST:PORT (IPv6 as [ADDRESS]:PORT), got 'x'",
      "--data-dir: must be a directory path, got ''",
      "--log-level: must be one of fatal, error, warn, info, debug, trace, got 'loud'",
    ]);
  });

  it('rejects an unreadable, invalid or unknown-keyed config file', async () => {
    await writeFile(join(dir, 'unknown.json'), JSON.stringify({ server_adress: 'a:1' }));
    await writeFile(join(dir, 'broken.json'), '{');
    await writeFile(join(dir, 'array.json'), '[]');
    expect(problemsOf({ ...base(), file: 'unknown.json' })).toEqual([
      `server_adress: unknown key in config file ${join(dir, 'unknown.json')}`,
    ]);
    expect(problemsOf({ ...base(), file: 'broken.json' })[0]).toMatch(/^--config: .*broken\.json is not valid JSON: /);
    expect(problemsOf({ ...base(), file: 'array.json' })).toEqual([
      `--config: ${join(dir, 'array.json')} must hold a JSON object`,
    ]);
    expect(problemsOf({ ...base(), file: 'absent.json' })).toEqual([
      `--config: cannot read ${join(dir, 'absent.json')}: ENOENT`,
    ]);
  });

  it('defaults the Workload API limits and the unix:sha256 hashing limits, each settable by flag, env or file', async () => {
    const MIB = 1024 * 1024;
    const defaults = loadAgentConfig(base());
    expect(defaults.workloadApiLimits).toEqual(WORKLOAD_API_LIMITS);
    expect(defaults.unixSha256).toEqual({ maxExecutableBytes: 128 * MIB, quotaBytesPerUidPerMinute: 512 * MIB });
    expect(Object.isFrozen(defaults.workloadApiLimits) && Object.isFrozen(defaults.unixSha256)).toBe(true);
    await writeFile(
      join(dir, 'limits.json'),
      JSON.stringify({
        workload_api_max_streams_per_uid: 1000,
        workload_api_max_connections_per_uid: '300',
        workload_api_idle_timeout: '5m',
        unix_sha256_quota_mib_per_uid: 1024,
      }),
    );
    const set = loadAgentConfig({
      ...base(),
      file: 'limits.json',
      env: {
        SIGIL_AGENT_WORKLOAD_API_MAX_STREAMS_PER_UID: '700',
        SIGIL_AGENT_WORKLOAD_API_STREAM_RATE_PER_UID: '20',
        SIGIL_AGENT_UNIX_SHA256_MAX_EXECUTABLE_MIB: '0',
      },
      flags: {
        ...base().flags,
        workloadApiMaxStreamsPerUid: '500',
        workloadApiStreamBurstPerUid: '40',
        workloadApiMaxStreamsPerConnection: '10',
        workloadApiMaxSessionMemoryMib: '16',
      },
    });
    expect(set.workloadApiLimits).toEqual({
      ...WORKLOAD_API_LIMITS,
      maxStreamsPerConnection: 10,
      maxStreamsPerUid: 500,
      maxConnectionsPerUid: 300,
      streamRatePerUid: 20,
      streamBurstPerUid: 40,
      idleTimeoutMs: 300_000,
      maxSessionMemoryMb: 16,
    });
    expect(set.unixSha256).toEqual({ maxExecutableBytes: 0, quotaBytesPerUidPerMinute: 1024 * MIB });
  });

  it.each([
    [
      { workloadApiMaxStreamsPerUid: '0' },
      "--workload-api-max-streams-per-uid: must be a whole number from 1 to 1000000, got '0'",
    ],
    [
      { workloadApiStreamRatePerUid: '1.5' },
      "--workload-api-stream-rate-per-uid: must be a whole number from 1 to 1000000, got '1.5'",
    ],
    [
      { workloadApiMaxConnectionsPerUid: 'many' },
      "--workload-api-max-connections-per-uid: must be a whole number from 1 to 100000, got 'many'",
    ],
    [
      { workloadApiIdleTimeout: '0s' },
      "--workload-api-idle-timeout: must be a duration from 1s to 24h, such as 90s, 15m or 1h30m (a bare number is seconds), got '0s'",
    ],
    [
      { workloadApiMaxSessionMemoryMib: '2048' },
      "--workload-api-max-session-memory-mib: must be a whole number from 1 to 1024, got '2048'",
    ],
    [
      { unixSha256QuotaMibPerUid: '-1' },
      "--unix-sha256-quota-mib-per-uid: must be a whole number from 0 to 1048576, got '-1'",
    ],
    [
      { unixSha256QuotaMibPerUid: '100' },
      '--unix-sha256-quota-mib-per-uid: the hashing quota per uid (100 MiB) must be at least the largest executable hashed (128 MiB)',
    ],
    [
      { unixSha256MaxExecutableMib: '1024' },
      '--unix-sha256-max-executable-mib: the hashing quota per uid (512 MiB) must be at least the largest executable hashed (1024 MiB)',
    ],
  ])('rejects the limit %j', (flags, message) => {
    expect(problemsOf({ ...base(), flags: { ...base().flags, ...flags } })).toEqual([message]);
  });

  it('names a bad limit by its variable or file key', async () => {
    expect(problemsOf({ ...base(), env: { SIGIL_AGENT_WORKLOAD_API_IDLE_TIMEOUT: 'soon' } })).toEqual([
      "SIGIL_AGENT_WORKLOAD_API_IDLE_TIMEOUT: must be a duration from 1s to 24h, such as 90s, 15m or 1h30m (a bare number is seconds), got 'soon'",
    ]);
    await writeFile(join(dir, 'bad-limit.json'), JSON.stringify({ workload_api_stream_burst_per_uid: 0 }));
    expect(problemsOf({ ...base(), file: 'bad-limit.json' })).toEqual([
      "workload_api_stream_burst_per_uid: must be a whole number from 1 to 1000000, got '0'",
    ]);
  });

  it('names file keys as the file writes them', async () => {
    await writeFile(join(dir, 'bad-values.json'), JSON.stringify({ server_address: 7, insecure_bootstrap: 'maybe' }));
    expect(problemsOf({ flags: {}, env: {}, cwd: dir, file: 'bad-values.json' })).toEqual([
      "server_address: must be HOST:PORT or a comma-separated list of them, got '7'",
      "insecure_bootstrap: must be true or false, got 'maybe'",
    ]);
  });

  it('takes the workload attestors and their deadline from flags, env or the file', async () => {
    const fromFlags = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, workloadAttestor: ['unix'], workloadAttestationTimeout: '3s' },
    });
    expect(fromFlags.workloadAttestors).toEqual([{ type: 'unix', options: {} }]);
    expect(fromFlags.workloadAttestationTimeoutMs).toBe(3000);
    const fromEnv = loadAgentConfig({
      ...base(),
      env: { SIGIL_AGENT_WORKLOAD_ATTESTOR: ' unix ', SIGIL_AGENT_WORKLOAD_ATTESTATION_TIMEOUT: '1m' },
    });
    expect(fromEnv.workloadAttestors).toEqual([{ type: 'unix', options: {} }]);
    expect(fromEnv.workloadAttestationTimeoutMs).toBe(60_000);
    await writeFile(
      join(dir, 'attestors.json'),
      JSON.stringify({ workload_attestor: ['unix'], workload_attestation_timeout: 20 }),
    );
    const fromFile = loadAgentConfig({ ...base(), file: 'attestors.json' });
    expect(fromFile.workloadAttestors).toEqual([{ type: 'unix', options: {} }]);
    expect(fromFile.workloadAttestationTimeoutMs).toBe(20_000);
  });

  it('refuses an unknown, repeated or empty workload attestor, listing the known ones, and a bad deadline', async () => {
    const flags = (workloadAttestor: string[]) =>
      problemsOf({ ...base(), flags: { ...base().flags, workloadAttestor } });
    const known = knownTypes();
    expect(flags(['unix,nope'])).toEqual([`--workload-attestor: unknown workload attestor 'nope' (known: ${known})`]);
    expect(flags(['unix', 'unix'])).toEqual(["--workload-attestor: workload attestor 'unix' is named twice"]);
    expect(flags(['unix,'])).toEqual([
      `--workload-attestor: must name workload attestors: a comma-separated list of types (${known}), the last ` +
        "with its options after a colon (<type>:<option>=<value>,…), got 'unix,'",
    ]);
    expect(problemsOf({ ...base(), env: { SIGIL_AGENT_WORKLOAD_ATTESTOR: 'nope' } })).toEqual([
      `SIGIL_AGENT_WORKLOAD_ATTESTOR: unknown workload attestor 'nope' (known: ${known})`,
    ]);
    await writeFile(
      join(dir, 'bad-attestors.json'),
      JSON.stringify({ workload_attestor: [], workload_attestation_timeout: '0s' }),
    );
    expect(problemsOf({ ...base(), file: 'bad-attestors.json' })).toEqual([
      "workload_attestation_timeout: must be a duration from 1s to 5m, such as 90s, 15m or 1h30m (a bare number is seconds), got '0s'",
      `workload_attestor: must name workload attestors: a comma-separated list of types (${knownTypes()}), the ` +
        "last with its options after a colon (<type>:<option>=<value>,…), got '[]'",
    ]);
  });

  it('takes workload attestors with options: one spec per flag or env item, or an object in the file', async () => {
    const unix = { type: 'unix', options: {} };
    const flags = (workloadAttestor: string[]) =>
      loadAgentConfig({ ...base(), flags: { ...base().flags, workloadAttestor } }).workloadAttestors;
    // Bare types as before: comma lists, repeated flags, spaces around commas.
    expect(flags(['unix'])).toEqual([unix]);
    expect(flags([' unix '])).toEqual([unix]);
    const env = (value: string) =>
      loadAgentConfig({ ...base(), env: { SIGIL_AGENT_WORKLOAD_ATTESTOR: value } }).workloadAttestors;
    expect(env('  unix  ')).toEqual([unix]);
    await writeFile(join(dir, 'object.json'), JSON.stringify({ workload_attestor: { unix: {} } }));
    expect(loadAgentConfig({ ...base(), file: 'object.json' }).workloadAttestors).toEqual([unix]);
    await writeFile(join(dir, 'string.json'), JSON.stringify({ workload_attestor: 'unix' }));
    expect(loadAgentConfig({ ...base(), file: 'string.json' }).workloadAttestors).toEqual([unix]);
    expect(Object.isFrozen(flags(['unix'])[0]!.options)).toBe(true);
  });

  it('refuses an option the attestor does not declare, a bad spec and a malformed object, naming each', async () => {
    const flags = (workloadAttestor: string[]) =>
      problemsOf({ ...base(), flags: { ...base().flags, workloadAttestor } });
    expect(flags(['unix:secret=1'])).toEqual(['--workload-attestor: unix: unknown option "secret" (known: none)']);
    expect(flags(['unix:secret'])).toEqual([
      '--workload-attestor: unix: options must be <option>=<value> separated by commas, got "secret"',
    ]);
    expect(flags(['unix', 'unix:a=b'])).toEqual(["--workload-attestor: workload attestor 'unix' is named twice"]);
    expect(problemsOf({ ...base(), env: { SIGIL_AGENT_WORKLOAD_ATTESTOR: 'unix unix:x=1' } })).toEqual([
      "SIGIL_AGENT_WORKLOAD_ATTESTOR: workload attestor 'unix' is named twice",
    ]);
    await writeFile(
      join(dir, 'bad-object.json'),
      JSON.stringify({ workload_attestor: { unix: { x: 1 }, nope: {}, other: 'x' } }),
    );
    expect(problemsOf({ ...base(), file: 'bad-object.json' })).toEqual([
      'workload_attestor.unix.x: must be a string',
      `workload_attestor: unknown workload attestor 'nope' (known: ${knownTypes()})`,
      'workload_attestor.other: must be an object of options, e.g. {}',
    ]);
    await writeFile(join(dir, 'bad-option.json'), JSON.stringify({ workload_attestor: { unix: { x: '1' } } }));
    expect(problemsOf({ ...base(), file: 'bad-option.json' })).toEqual([
      'workload_attestor: unix: unknown option "x" (known: none)',
    ]);
  });

  it('takes the Envoy SDS names and validator switch from flags, env or the file, with SPIRE defaults', async () => {
    expect(loadAgentConfig(base()).sds).toEqual({
      defaultSvidName: 'default',
      defaultBundleName: 'ROOTCA',
      defaultAllBundlesName: 'ALL',
      disableSpiffeCertValidation: false,
    });
    const fromFlags = loadAgentConfig({
      ...base(),
      flags: { ...base().flags, sdsDefaultSvidName: 'svid', sdsDisableSpiffeCertValidation: true },
    });
    expect(fromFlags.sds).toMatchObject({ defaultSvidName: 'svid', disableSpiffeCertValidation: true });
    const fromEnv = loadAgentConfig({
      ...base(),
      env: { SIGIL_AGENT_SDS_DEFAULT_BUNDLE_NAME: 'roots', SIGIL_AGENT_SDS_DISABLE_SPIFFE_CERT_VALIDATION: 'true' },
    });
    expect(fromEnv.sds).toMatchObject({ defaultBundleName: 'roots', disableSpiffeCertValidation: true });
    await writeFile(join(dir, 'sds.json'), JSON.stringify({ sds_default_all_bundles_name: 'every' }));
    expect(loadAgentConfig({ ...base(), file: 'sds.json' }).sds.defaultAllBundlesName).toBe('every');
    expect(Object.isFrozen(fromFlags.sds)).toBe(true);
  });

  it('refuses an empty, spaced or repeated SDS name, naming each key', () => {
    expect(problemsOf({ ...base(), flags: { ...base().flags, sdsDefaultSvidName: 'my svid' } })).toEqual([
      "--sds-default-svid-name: must be 1 to 256 printable ASCII characters without spaces, got 'my svid'",
    ]);
    expect(problemsOf({ ...base(), env: { SIGIL_AGENT_SDS_DEFAULT_ALL_BUNDLES_NAME: 'ROOTCA' } })).toEqual([
      'SIGIL_AGENT_SDS_DEFAULT_ALL_BUNDLES_NAME: must differ from --sds-default-bundle-name (both "ROOTCA")',
    ]);
  });
});

describe('insecureBootstrapWarning', () => {
  const insecure = { bootstrapTrust: { kind: 'insecure' as const }, trustDomain: undefined };

  it('says what an impostor gets, and with k8s_psat that it gets a replayable service account token', () => {
    expect(insecureBootstrapWarning(insecure)).toMatch(/^insecure bootstrap: /);
    expect(insecureBootstrapWarning(insecure)).not.toContain('service account token');
    const psat = insecureBootstrapWarning({
      ...insecure,
      attestation: { type: 'k8s_psat', options: { cluster: 'c' } },
    });
    expect(psat).toContain("this node's service account token, which it can replay at the real server");
  });
});

describe('loadAgentConfig: logging, metrics and health listeners', () => {
  it('leaves the listeners off by default and logs JSON to stdout', () => {
    const config = loadAgentConfig(base());
    expect(config).toMatchObject({ logLevel: 'info', logFormat: 'json' });
    expect(config.logFile).toBeUndefined();
    expect(config.metricsAddress).toBeUndefined();
    expect(config.health).toBeUndefined();
  });

  it('reads the metrics and health addresses, probe paths, ready sync age, log format and file', () => {
    const config = loadAgentConfig({
      ...base(),
      flags: {
        ...base().flags,
        metricsAddress: '127.0.0.1:9988',
        healthAddress: '0.0.0.0:8080',
        healthReadyPath: '/healthz/ready',
        healthReadyMaxSyncAge: '2m',
        logFormat: 'text',
        logFile: 'agent.log',
      },
    });
    expect(config).toMatchObject({
      metricsAddress: { host: '127.0.0.1', port: 9988 },
      health: {
        address: { host: '0.0.0.0', port: 8080 },
        livePath: '/live',
        readyPath: '/healthz/ready',
        readyMaxSyncAgeMs: 120_000,
      },
      logFormat: 'text',
      logFile: join(dir, 'agent.log'),
    });
    expect(loadAgentConfig({ ...base(), env: { SIGIL_AGENT_HEALTH_ADDRESS: 'localhost:80' } }).health).toMatchObject({
      address: { host: 'localhost', port: 80 },
      livePath: '/live',
      readyPath: '/ready',
      readyMaxSyncAgeMs: 90_000,
    });
  });

  it('names every bad value: address, path, format, a path without an address, equal paths', () => {
    expect(
      problemsOf({
        ...base(),
        flags: { ...base().flags, metricsAddress: 'localhost', logFormat: 'pretty', healthLivePath: 'live' },
      }),
    ).toEqual([
      "--log-format: must be one of json, text, got 'pretty'",
      "--metrics-address: must be HOST:PORT, e.g. 127.0.0.1:9988 (IPv6 as [::1]:9988), got 'localhost'",
      "--health-live-path: must be an absolute URL path such as '/ready' (letters, digits, '.', '_', '-', '/'), got 'live'",
    ]);
    expect(problemsOf({ ...base(), flags: { ...base().flags, healthReadyPath: '/r' } })).toEqual([
      '--health-ready-path: needs --health-address',
    ]);
    expect(
      problemsOf({ ...base(), flags: { ...base().flags, healthAddress: '127.0.0.1:1', healthReadyPath: '/live' } }),
    ).toEqual(['--health-ready-path: must differ from the live path (/live)']);
  });
});
