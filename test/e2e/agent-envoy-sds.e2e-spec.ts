/**
 * Envoy SDS v3 against a real server and agent: a plain @grpc/grpc-js client does what Envoy does (one
 * StreamSecrets stream per secret, node with Envoy's build version, ACK and NACK by version and nonce), on the
 * agent's Workload API socket. Every certificate and key it receives is checked with the openssl CLI. The server's
 * default X509-SVID TTL is 10 s, so the agent rotates the workload SVID after about 5 s.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import {
  type DiscoveryRequest,
  DiscoveryRequestSchema,
  type DiscoveryResponse,
  DiscoveryResponseSchema,
  SECRET_TYPE_URL,
  SPIFFECertValidatorConfigSchema,
  type Secret,
  SecretSchema,
} from '@sigil/workload-api/envoy-sds';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opensslVerify, runOpenssl } from '../support/openssl.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const WORKLOAD = `${TD}/envoy`;
const TTL_SECONDS = 10;
const SERVICE = '/envoy.service.secret.v3.SecretDiscoveryService';

type RequestInit = MessageInitShape<typeof DiscoveryRequestSchema>;

const serialize = (message: DiscoveryRequest): Buffer => Buffer.from(toBinary(DiscoveryRequestSchema, message));
const deserialize = (bytes: Buffer): DiscoveryResponse => fromBinary(DiscoveryResponseSchema, bytes);
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `${SERVICE}/${name}`,
  requestStream,
  responseStream,
  requestSerialize: serialize,
  requestDeserialize: (bytes: Buffer) => fromBinary(DiscoveryRequestSchema, bytes),
  responseSerialize: (message: DiscoveryResponse) => Buffer.from(toBinary(DiscoveryResponseSchema, message)),
  responseDeserialize: deserialize,
});
const SdsClient = grpc.makeGenericClientConstructor(
  {
    StreamSecrets: method('StreamSecrets', true, true),
    FetchSecrets: method('FetchSecrets', false, false),
    DeltaSecrets: method('DeltaSecrets', true, true),
  },
  'SecretDiscoveryService',
);

interface SdsClientCalls extends grpc.Client {
  StreamSecrets(): grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  DeltaSecrets(): grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
  FetchSecrets(
    request: DiscoveryRequest,
    callback: (error: grpc.ServiceError | null, response: DiscoveryResponse) => void,
  ): grpc.ClientUnaryCall;
}

/** What Envoy 1.30 says about itself in its first request. */
const ENVOY_NODE = {
  id: 'sidecar~10.0.0.1~web~default',
  cluster: 'web',
  userAgentName: 'envoy',
  userAgentVersionType: {
    case: 'userAgentBuildVersion' as const,
    value: { version: { majorNumber: 1, minorNumber: 30, patch: 1 } },
  },
};

function request(init: RequestInit): DiscoveryRequest {
  return create(DiscoveryRequestSchema, { typeUrl: SECRET_TYPE_URL, ...init });
}

function secretsOf(response: DiscoveryResponse): Secret[] {
  return response.resources.map((resource) => {
    expect(resource.typeUrl).toBe(SECRET_TYPE_URL);
    const secret = anyUnpack(resource, SecretSchema);
    if (secret === undefined) throw new Error(`resource of type ${resource.typeUrl} is not a Secret`);
    return secret;
  });
}

/** A StreamSecrets stream with its responses queued for the test to take in order. */
class SecretStream {
  readonly responses: DiscoveryResponse[] = [];
  error: grpc.ServiceError | undefined;
  private waiters: Array<() => void> = [];

  constructor(readonly call: grpc.ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>) {
    call.on('data', (response: DiscoveryResponse) => {
      this.responses.push(response);
      for (const waiter of this.waiters.splice(0)) waiter();
    });
    call.on('error', (error: grpc.ServiceError) => {
      this.error = error;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  send(init: RequestInit): void {
    this.call.write(request(init));
  }

  /** The next response not taken yet, waiting up to `timeoutMs`. */
  async next(timeoutMs = 20_000): Promise<DiscoveryResponse> {
    const deadline = Date.now() + timeoutMs;
    while (this.responses.length === 0) {
      if (this.error !== undefined) throw this.error;
      if (Date.now() > deadline) throw new Error('no SDS response in time');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.responses.shift()!;
  }
}

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
}

function inlineText(source: { specifier: { case?: string; value?: unknown } } | undefined): string {
  expect(source?.specifier.case).toBe('inlineBytes');
  return Buffer.from(source!.specifier.value as Uint8Array).toString('utf8');
}

/** Checks a TLS certificate secret with openssl: the SPIFFE ID, the chain against `bundlePem`, the key pair. */
async function checkTlsCertificate(secret: Secret, spiffeId: string, bundlePem: string): Promise<string> {
  expect(secret.type.case).toBe('tlsCertificate');
  if (secret.type.case !== 'tlsCertificate') throw new Error('not a TLS certificate');
  const chainPem = inlineText(secret.type.value.certificateChain);
  const keyPem = inlineText(secret.type.value.privateKey);
  expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
  const [leaf, ...intermediates] = pemBlocks(chainPem);
  const san = await runOpenssl(['x509', '-in', '{leaf.pem}', '-noout', '-ext', 'subjectAltName'], {
    'leaf.pem': leaf!,
  });
  expect(san.code, san.stderr).toBe(0);
  expect(san.stdout).toContain(`URI:${spiffeId}`);
  const verified = await opensslVerify({ root: bundlePem, intermediates, leaf: leaf!, purpose: 'sslclient' });
  expect(verified.ok, verified.output).toBe(true);
  const fromCert = await runOpenssl(['x509', '-in', '{leaf.pem}', '-noout', '-pubkey'], { 'leaf.pem': leaf! });
  const fromKey = await runOpenssl(['pkey', '-in', '{key.pem}', '-pubout'], { 'key.pem': keyPem });
  expect(fromKey.code, fromKey.stderr).toBe(0);
  expect(fromKey.stdout).toBe(fromCert.stdout);
  const serial = await runOpenssl(['x509', '-in', '{leaf.pem}', '-noout', '-serial'], { 'leaf.pem': leaf! });
  return serial.stdout.trim();
}

/** The CA certificates of a SPIFFE validator config for one trust domain, each checked with openssl. */
async function spiffeValidatorBundles(secret: Secret): Promise<Map<string, string>> {
  expect(secret.type.case).toBe('validationContext');
  if (secret.type.case !== 'validationContext') throw new Error('not a validation context');
  const custom = secret.type.value.customValidatorConfig;
  expect(custom?.name).toBe('envoy.tls.cert_validator.spiffe');
  const config = anyUnpack(custom!.typedConfig!, SPIFFECertValidatorConfigSchema);
  expect(config).toBeDefined();
  const result = new Map<string, string>();
  for (const trustDomain of config!.trustDomains) {
    const pem = inlineText(trustDomain.trustBundle);
    for (const block of pemBlocks(pem)) {
      const text = await runOpenssl(['x509', '-in', '{ca.pem}', '-noout', '-ext', 'basicConstraints,subjectAltName'], {
        'ca.pem': block,
      });
      expect(text.code, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/CA:TRUE/);
      expect(text.stdout).toContain(`URI:spiffe://${trustDomain.name}`);
    }
    result.set(trustDomain.name, pem);
  }
  return result;
}

describe('Envoy SDS v3 on the agent socket (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: SdsClientCalls;
  let bundlePem: string;
  const children: SigilProcess[] = [];

  const fetchSecrets = (init: RequestInit): Promise<DiscoveryResponse> =>
    new Promise((resolve, reject) =>
      client.FetchSecrets(request(init), (error, response) => (error ? reject(error) : resolve(response))),
    );

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-envoy-sds-'));
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: ['--x509-svid-ttl', String(TTL_SECONDS)],
    });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const bundle = await server.cli(['bundle', 'show', '--format', 'pem']);
    bundlePem = bundle.stdout;
    const token = await server.joinToken(`${TD}/host`);
    await mkdir(join(scratch, 'agent'), { mode: 0o755 });
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: token,
      flags: ['--log-level', 'debug'],
    });
    children.push(agent);
    await agentReady(agent);
    client = new SdsClient(
      `unix://${join(scratch, 'agent', 'api.sock')}`,
      grpc.credentials.createInsecure(),
    ) as unknown as SdsClientCalls;
  }, 180_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('gives a caller no entry matches the bundles and INVALID_ARGUMENT for an SVID, as SPIRE (no PERMISSION_DENIED)', async () => {
    const all = await fetchSecrets({ node: ENVOY_NODE });
    expect(all.versionInfo).toBe('');
    expect(secretsOf(all).map((secret) => secret.name)).toEqual([TD]);
    await expect(fetchSecrets({ node: ENVOY_NODE, resourceNames: ['default'] })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'workload is not authorized for the requested identities ["default"]',
    });
  });

  it('answers DeltaSecrets with UNIMPLEMENTED, as SPIRE', async () => {
    const stream = new SecretStream(client.DeltaSecrets());
    stream.send({ node: ENVOY_NODE });
    await expect(stream.next()).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
  });

  it('refuses a request for another resource type, naming type_url', async () => {
    await expect(
      fetchSecrets({ node: ENVOY_NODE, typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' }),
    ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/^type_url: /) });
  });

  it('streams the default SVID: ACK sends nothing, NACK keeps the version, rotation pushes a new version', async () => {
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      WORKLOAD,
      '--parent-id',
      `${TD}/host`,
      '--selector',
      `unix:uid:${UID}`,
    ]);
    // The entry reaches the agent asynchronously, and its SVID is signed after that.
    await expect
      .poll(async () => secretsOf(await fetchSecrets({ node: ENVOY_NODE })).map((secret) => secret.name), {
        timeout: 20_000,
        interval: 200,
      })
      .toEqual([TD, WORKLOAD]);

    const stream = new SecretStream(client.StreamSecrets());
    try {
      stream.send({ node: ENVOY_NODE, resourceNames: ['default'] });
      const first = await stream.next();
      expect(first.versionInfo).toBe('1');
      expect(first.nonce).toMatch(/^[0-9a-f]{16}$/);
      expect(first.typeUrl).toBe(SECRET_TYPE_URL);
      const [secret] = secretsOf(first);
      expect(first.resources).toHaveLength(1);
      expect(secret!.name).toBe('default');
      const firstSerial = await checkTlsCertificate(secret!, WORKLOAD, bundlePem);

      // ACK (Envoy sends version and nonce back, no node after the first request): nothing new for version 1.
      stream.send({ resourceNames: ['default'], versionInfo: '1', responseNonce: first.nonce });
      // NACK: the last good version and the error; the agent logs it and sends nothing for it.
      stream.send({
        resourceNames: ['default'],
        versionInfo: '1',
        responseNonce: first.nonce,
        errorDetail: { code: 3, message: 'Failed to load certificate chain from <inline>' },
      });
      const [nack] = (await agent.waitFor(/^.*"msg":"Envoy rejected the secrets it was sent".*$/m)) as [string];
      expect(nack).toContain('"reason":"Failed to load certificate chain from <inline>"');
      expect(nack).toContain('"version":"1"');
      // A reply to a stale nonce is ignored, whatever it says.
      stream.send({ resourceNames: ['default', 'ROOTCA'], versionInfo: '0', responseNonce: 'stale' });

      // Rotation (about 5 s after signing) is pushed as version 2 with a new nonce and a new certificate.
      const second = await stream.next(30_000);
      expect(second.versionInfo).toBe('2');
      expect(second.nonce).not.toBe(first.nonce);
      const [rotated] = secretsOf(second);
      expect(rotated!.name).toBe('default');
      expect(await checkTlsCertificate(rotated!, WORKLOAD, bundlePem)).not.toBe(firstSerial);
      stream.send({ resourceNames: ['default'], versionInfo: '2', responseNonce: second.nonce });

      // New resource names on the stream are answered at once, from the current version.
      stream.send({ resourceNames: ['default', TD], versionInfo: '2', responseNonce: second.nonce });
      const third = await stream.next();
      expect(third.versionInfo).toBe('2');
      expect(secretsOf(third).map((each) => each.name)).toEqual([TD, 'default']);
    } finally {
      stream.call.cancel();
    }
  }, 90_000);

  it('streams ROOTCA as a SPIFFE validator config holding the server bundle', async () => {
    const stream = new SecretStream(client.StreamSecrets());
    try {
      stream.send({ node: ENVOY_NODE, resourceNames: ['ROOTCA'] });
      const response = await stream.next();
      const [secret] = secretsOf(response);
      expect(secret!.name).toBe('ROOTCA');
      const bundles = await spiffeValidatorBundles(secret!);
      expect([...bundles.keys()]).toEqual(['example.org']);
      expect(pemBlocks(bundles.get('example.org')!)).toEqual(pemBlocks(bundlePem));
    } finally {
      stream.call.cancel();
    }
  });

  it('gives ALL as one SPIFFE validator config, and plain trusted_ca when the node metadata disables the validator', async () => {
    const response = await fetchSecrets({ node: ENVOY_NODE, resourceNames: ['ALL', 'default'] });
    const secrets = secretsOf(response);
    expect(secrets.map((secret) => secret.name)).toEqual(['ALL', 'default']);
    expect([...(await spiffeValidatorBundles(secrets[0]!)).keys()]).toEqual(['example.org']);
    await checkTlsCertificate(secrets[1]!, WORKLOAD, bundlePem);

    const plain = await fetchSecrets({
      node: { ...ENVOY_NODE, metadata: { disable_spiffe_cert_validation: true } },
      resourceNames: ['ROOTCA'],
    });
    const [rootCa] = secretsOf(plain);
    if (rootCa!.type.case !== 'validationContext') throw new Error('not a validation context');
    expect(rootCa!.type.value.customValidatorConfig).toBeUndefined();
    const trusted = pemBlocks(inlineText(rootCa!.type.value.trustedCa));
    expect(trusted).toEqual(pemBlocks(bundlePem));
    const verify = await runOpenssl(['x509', '-in', '{ca.pem}', '-noout', '-ext', 'basicConstraints'], {
      'ca.pem': trusted[0]!,
    });
    expect(verify.stdout).toMatch(/CA:TRUE/);
  });
});
