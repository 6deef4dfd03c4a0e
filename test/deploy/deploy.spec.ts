import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PATH_METADATA } from '@nestjs/common/constants.js';
import { type Command } from 'commander';
import { load, loadAll } from 'js-yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAgentCli } from '../../apps/agent/src/cli.js';
import { type AgentConfig, loadAgentConfig } from '../../apps/agent/src/config.js';
import { buildServerCli } from '../../apps/server/src/cli.js';
import { type ServerConfig, loadServerConfig } from '../../apps/server/src/config.js';
import { HealthController } from '../../apps/server/src/health/health.controller.js';
import {
  K8S_PSAT_OPTION_NAMES,
  parseK8sPsatOptions,
} from '../../apps/server/src/node-attestation/k8s-psat/k8s-psat-options.js';
import { readK8sPsatToken } from '../../apps/agent/src/attestor/node/k8s-psat/k8s-psat.attestor.js';
import { K8S_DEFAULTS, parseK8sOptions } from '../../apps/agent/src/attestor/workload/k8s/k8s-options.js';
import { TestCa } from '../support/test-ca.js';

/*
 * deploy/ checked against the real binaries: every Kubernetes manifest against the Kubernetes OpenAPI schemas
 * (kubernetes-models), every command line through the real commander definitions of `sigil-server` and `sigil-agent`
 * (an unknown flag fails), every config file, flag and environment variable through the apps' real config loaders,
 * and the ports, probe paths, socket and token paths checked against each other. Files the manifests mount (a
 * ConfigMap, a Secret, a projected token) are laid out under a temporary root, and the absolute paths in the configs
 * are read from there, so a path that lies outside every mount is caught.
 */

const execFileAsync = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const KUBERNETES = join(DEPLOY, 'kubernetes');

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The schema class of each kind the manifests may use (kubernetes-models, generated from the OpenAPI spec). */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

/** Why a manifest document does not validate against its kind's schema (empty when it does). */
function schemaProblems(doc: Doc): string[] {
  const Model = MODELS[`${doc['apiVersion']}/${doc['kind']}`];
  if (Model === undefined) return [`no schema for ${doc['apiVersion']} ${doc['kind']}: add its model to MODELS`];
  try {
    new Model(doc as never).validate();
    return [];
  } catch (error) {
    const errors = (error as { errors?: { instancePath: string; message?: string }[] }).errors;
    return errors?.map((each) => `${each.instancePath} ${each.message}`) ?? [(error as Error).message];
  }
}

function loadYamlDocuments(path: string): Doc[] {
  return loadAll(readFileSync(path, 'utf8')).filter((doc): doc is Doc => doc !== null && doc !== undefined);
}

function kustomization(): Doc {
  return load(readFileSync(join(KUBERNETES, 'kustomization.yaml'), 'utf8')) as Doc;
}

/** Every document the kustomization applies. */
function manifests(): Doc[] {
  return (kustomization()['resources'] as string[]).flatMap((file) => loadYamlDocuments(join(KUBERNETES, file)));
}

function find(docs: readonly Doc[], kind: string, name: string): Doc {
  const doc = docs.find((each) => each['kind'] === kind && each['metadata']?.['name'] === name);
  if (doc === undefined) throw new Error(`no ${kind} ${name} in the manifests`);
  return doc;
}

function container(podSpec: Doc, name: string): Doc {
  const found = (podSpec['containers'] as Doc[]).find((each) => each['name'] === name);
  if (found === undefined) throw new Error(`no container ${name}`);
  return found;
}

/**
 * Parses a command line (`['sigil-server', 'run', …]`) with the real command tree, without running it: the
 * subcommand's options, and whatever it did not know. Commander's own checks (choices, argument parsers) run.
 */
async function parseCommandLine(
  argv: readonly string[],
): Promise<{ options: Doc; unknown: string[]; operands: string[] }> {
  const [binary, subcommand, ...args] = argv;
  const program: Command | undefined =
    binary === 'sigil-server' ? await buildServerCli() : binary === 'sigil-agent' ? await buildAgentCli() : undefined;
  if (program === undefined) throw new Error(`${binary}: not a Sigil command`);
  const command = program.commands.find((each) => each.name() === subcommand);
  if (command === undefined) throw new Error(`${binary} has no command ${subcommand}`);
  command.exitOverride();
  const { operands, unknown } = command.parseOptions([...args]);
  return { options: command.opts(), unknown, operands };
}

/** The flags of a parsed `run` command line, without `--config` (the file is given to the loader apart). */
function runFlags(options: Doc): Doc {
  const { config: _config, ...flags } = options;
  return flags;
}

/** A pod's file system laid out under a temporary root: each volume mount of one container, with its files. */
class PodFiles {
  readonly mountPaths: string[] = [];

  constructor(
    readonly root: string,
    private readonly volumes: Doc[],
    private readonly files: (volume: Doc) => Record<string, string>,
  ) {}

  mount(mounts: readonly Doc[]): void {
    for (const mount of mounts) {
      const volume = this.volumes.find((each) => each['name'] === mount['name']);
      if (volume === undefined) throw new Error(`volume mount ${mount['name']}: no such volume`);
      const directory = join(this.root, mount['mountPath'] as string);
      mkdirSync(directory, { recursive: true, mode: 0o700 });
      for (const [name, content] of Object.entries(this.files(volume))) {
        writeFileSync(join(directory, name), content, { mode: 0o600 });
      }
      this.mountPaths.push(mount['mountPath'] as string);
    }
  }

  /** The mount holding `path`, or undefined when it lies on the image's (read-only) file system. */
  mountOf(path: string): string | undefined {
    return this.mountPaths.find((mount) => path === mount || path.startsWith(`${mount}/`));
  }

  /** `value` with every absolute path inside a mount moved under the root (deeply, for a parsed config). */
  rebase<T>(value: T): T {
    if (typeof value === 'string') {
      const mount = value.startsWith('/') ? this.mountOf(value) : undefined;
      return (mount === undefined ? value : join(this.root, value)) as T;
    }
    if (Array.isArray(value)) return value.map((each) => this.rebase(each)) as T;
    if (typeof value === 'object' && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([key, each]) => [key, this.rebase(each)])) as T;
    }
    return value;
  }

  /** Where a path read from a loaded config lies in the pod (the root taken off again). */
  inPod(path: string): string {
    if (!path.startsWith(`${this.root}/`)) throw new Error(`${path} is not under any volume mount`);
    return path.slice(this.root.length);
  }
}

const TEST_KEK = Buffer.alloc(32, 7).toString('base64');
const TEST_DATABASE_URL = 'postgres://sigil:secret@db.example.org:5432/sigil?sslmode=verify-full';
const TEST_JOIN_TOKEN = 'a-join-token-for-the-test';
/** A projected service account token, shaped as one (the loaders do not verify it: the server does, at attestation). */
const TEST_PROJECTED_TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsic2lnaWwtc2VydmVyIl19.c2lnbmF0dXJl';

let scratch: string;
let bundlePem: string;
let upstreamKeyPem: string;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'sigil-deploy-'));
  const ca = await TestCa.create('example.org');
  bundlePem = ca.certificate.toString('pem');
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', ca.keys.privateKey));
  upstreamKeyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n`;
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The files a volume holds in the test pod: what the operator creates for the Secrets and the bundle ConfigMap. */
function volumeFiles(docs: readonly Doc[]): (volume: Doc) => Record<string, string> {
  return (volume) => {
    if (volume['configMap'] !== undefined) {
      const name = volume['configMap']['name'] as string;
      // Created by the operator from the upstream CA certificate (README): not part of the kustomization.
      if (name === 'sigil-bundle') return { 'bundle.pem': bundlePem };
      return find(docs, 'ConfigMap', name)['data'] as Record<string, string>;
    }
    if (volume['secret'] !== undefined) {
      expect(volume['secret']['secretName']).toBe('sigil-server-upstream-ca');
      return { 'tls.crt': bundlePem, 'tls.key': upstreamKeyPem };
    }
    if (volume['projected'] !== undefined) {
      const sources = volume['projected']['sources'] as Doc[];
      return Object.fromEntries(sources.map((source) => [source['serviceAccountToken']['path'], TEST_PROJECTED_TOKEN]));
    }
    return {}; // emptyDir, hostPath
  };
}

/** A container's environment: literal values, the downward API's node name, and test values for Secret keys. */
function containerEnv(spec: Doc): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of (spec['env'] ?? []) as Doc[]) {
    const from = variable['valueFrom'];
    if (from === undefined) env[variable['name']] = variable['value'];
    else if (from['fieldRef']?.['fieldPath'] === 'spec.nodeName') env[variable['name']] = 'node-1';
    else if (from['secretKeyRef'] !== undefined) {
      const ref = `${from['secretKeyRef']['name']}/${from['secretKeyRef']['key']}`;
      const values: Record<string, string> = {
        'sigil-server-database/url': TEST_DATABASE_URL,
        'sigil-server-kek/kek': TEST_KEK,
      };
      if (values[ref] === undefined) throw new Error(`env ${variable['name']}: unexpected Secret key ${ref}`);
      env[variable['name']] = values[ref];
    } else throw new Error(`env ${variable['name']}: unexpected source ${JSON.stringify(from)}`);
  }
  return env;
}

/** The container's command line parsed by the real command tree, with no unknown flag or stray argument. */
async function parsedRun(spec: Doc, binary: string): Promise<Doc> {
  const argv = [...(spec['command'] as string[]), ...((spec['args'] ?? []) as string[])];
  expect(argv.slice(0, 2)).toEqual([binary, 'run']);
  const { options, unknown, operands } = await parseCommandLine(argv);
  expect(unknown, `${binary} run: unknown flags`).toEqual([]);
  expect(operands, `${binary} run: stray arguments`).toEqual([]);
  return options;
}

describe('deploy/kubernetes', () => {
  let docs: Doc[];
  let serverPod: Doc;
  let agentPod: Doc;
  let serverFiles: PodFiles;
  let agentFiles: PodFiles;
  let server: ServerConfig;
  let agent: AgentConfig;

  beforeAll(async () => {
    docs = manifests();
    serverPod = find(docs, 'Deployment', 'sigil-server')['spec']['template']['spec'];
    agentPod = find(docs, 'DaemonSet', 'sigil-agent')['spec']['template']['spec'];

    const serverContainer = container(serverPod, 'sigil-server');
    serverFiles = new PodFiles(join(scratch, 'server-pod'), serverPod['volumes'], volumeFiles(docs));
    serverFiles.mount(serverContainer['volumeMounts']);
    const serverOptions = await parsedRun(serverContainer, 'sigil-server');
    const serverFile: Doc = JSON.parse(find(docs, 'ConfigMap', 'sigil-server')['data']['server.json']);

    const agentContainer = container(agentPod, 'sigil-agent');
    agentFiles = new PodFiles(join(scratch, 'agent-pod'), agentPod['volumes'], volumeFiles(docs));
    agentFiles.mount(agentContainer['volumeMounts']);
    const agentOptions = await parsedRun(agentContainer, 'sigil-agent');
    const agentFile: Doc = JSON.parse(find(docs, 'ConfigMap', 'sigil-agent')['data']['agent.json']);
    // The config file's paths point into the pod's mounts: load a copy with them moved under the test root.
    const rebasedFile = join(scratch, 'agent.json');
    writeFileSync(rebasedFile, JSON.stringify(agentFiles.rebase(agentFile)));
    expect(agentFiles.mountOf(agentOptions['config'] as string)).toBeDefined();
    agent = loadAgentConfig({
      flags: agentFiles.rebase(runFlags(agentOptions)),
      env: containerEnv(agentContainer),
      file: rebasedFile,
    });
    // The server's file too, for the same reason.
    expect(serverFiles.mountOf(serverOptions['config'] as string)).toBeDefined();
    const rebasedServerFile = join(scratch, 'server.json');
    writeFileSync(rebasedServerFile, JSON.stringify(serverFiles.rebase(serverFile)));
    server = loadServerConfig({
      flags: serverFiles.rebase(runFlags(serverOptions)),
      env: serverFiles.rebase(containerEnv(serverContainer)),
      file: rebasedServerFile,
    });
  });

  it('every manifest validates against the Kubernetes OpenAPI schema of its kind', () => {
    const problems = docs.flatMap((doc) =>
      schemaProblems(doc).map((problem) => `${doc['kind']} ${doc['metadata']?.['name']}: ${problem}`),
    );
    expect(problems).toEqual([]);
    expect(docs.map((doc) => doc['kind']).sort()).toEqual(
      [
        'ClusterRole',
        'ClusterRole',
        'ClusterRoleBinding',
        'ClusterRoleBinding',
        'ConfigMap',
        'ConfigMap',
        'DaemonSet',
        'Deployment',
        'Namespace',
        'PodDisruptionBudget',
        'Service',
        'ServiceAccount',
        'ServiceAccount',
      ].sort(),
    );
  });

  it('the schema check catches a wrong field type (the validator is live)', () => {
    const broken = structuredClone(find(docs, 'Service', 'sigil-server'));
    broken['spec']['ports'][0]['port'] = '8081';
    expect(schemaProblems(broken)).toEqual(['/spec/ports/0/port must be integer']);
  });

  it('the kustomization lists every manifest of the folder, in namespace sigil, with the one image', () => {
    const k = kustomization();
    expect(k['apiVersion']).toBe('kustomize.config.k8s.io/v1beta1');
    expect(k['kind']).toBe('Kustomization');
    expect(k['namespace']).toBe('sigil');
    const files = readdirSync(KUBERNETES).filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml');
    expect([...(k['resources'] as string[])].sort()).toEqual(files.sort());
    for (const doc of docs) {
      if (doc['kind'] === 'Namespace' || doc['kind'].startsWith('Cluster')) continue;
      expect(doc['metadata']['namespace'], `${doc['kind']} ${doc['metadata']['name']}`).toBe('sigil');
    }
    const images = [serverPod, agentPod].flatMap((pod) =>
      [...pod['containers'], ...(pod['initContainers'] ?? [])].map((each: Doc) => each['image']),
    );
    expect(new Set(images)).toEqual(new Set(['sigil']));
    expect((k['images'] as Doc[]).map((image) => image['name'])).toEqual(['sigil']);
  });

  it('the server: ≥ 2 replicas on PostgreSQL and the KEK from Secrets, loaded by the real loader', () => {
    expect(find(docs, 'Deployment', 'sigil-server')['spec']['replicas']).toBeGreaterThanOrEqual(2);
    expect(server.databaseUrl).toBe(TEST_DATABASE_URL);
    expect(server.kek).toBe(TEST_KEK);
    expect(server.kekFile).toBeUndefined();
    expect(serverFiles.inPod(server.adminSocket)).toBe('/run/sigil-server/private/api.sock');
    expect(serverFiles.mountOf('/run/sigil-server/private/api.sock')).toBe('/run/sigil-server');
    expect(server.upstreamCa).toEqual({
      certFile: join(serverFiles.root, '/etc/sigil/upstream-ca/tls.crt'),
      keyFile: join(serverFiles.root, '/etc/sigil/upstream-ca/tls.key'),
    });
    expect(server.nodeAttestors.map((setting) => setting.type)).toEqual(['k8s_psat']);
    // Each variable the manifest sets changes the loaded configuration: none is a name the server ignores.
    const env = serverFiles.rebase(containerEnv(container(serverPod, 'sigil-server')));
    const file = join(scratch, 'server.json');
    for (const name of Object.keys(env)) {
      const without = loadServerConfig({ env: { ...env, [name]: undefined }, file });
      expect(without, `${name} changes nothing`).not.toEqual(loadServerConfig({ env, file }));
    }
  });

  it("the probes, the container port and the Service port are the server's port and health routes", () => {
    const serverContainer = container(serverPod, 'sigil-server');
    const ports = serverContainer['ports'] as Doc[];
    expect(ports).toEqual([{ name: 'https', containerPort: server.port, protocol: 'TCP' }]);
    const routes = {
      live: `/${Reflect.getMetadata(PATH_METADATA, HealthController.prototype.live)}`,
      ready: `/${Reflect.getMetadata(PATH_METADATA, HealthController.prototype.ready)}`,
    };
    expect(routes).toEqual({ live: '/healthz', ready: '/readyz' });
    for (const [probe, path] of [
      ['startupProbe', routes.live],
      ['livenessProbe', routes.live],
      ['readinessProbe', routes.ready],
    ] as const) {
      expect(serverContainer[probe]['httpGet'], probe).toEqual({ scheme: 'HTTPS', path, port: 'https' });
    }
    const service = find(docs, 'Service', 'sigil-server');
    expect(service['spec']['ports']).toEqual([
      { name: 'https', port: server.port, targetPort: 'https', protocol: 'TCP' },
    ]);
    const labels = find(docs, 'Deployment', 'sigil-server')['spec']['template']['metadata']['labels'];
    for (const [key, value] of Object.entries(service['spec']['selector'])) expect(labels[key]).toBe(value);
    const pdb = find(docs, 'PodDisruptionBudget', 'sigil-server');
    expect(pdb['spec']['selector']['matchLabels']).toEqual(service['spec']['selector']);
    expect(pdb['spec']['minAvailable']).toBeLessThan(find(docs, 'Deployment', 'sigil-server')['spec']['replicas']);
  });

  it('the agent: socket in the hostPath, token from the projected volume, server address the Service', async () => {
    const agentContainer = container(agentPod, 'sigil-agent');
    const volumes = agentPod['volumes'] as Doc[];
    const mountOf = (path: string): { mount: Doc; volume: Doc } => {
      const mountPath = agentFiles.mountOf(path);
      const mount = (agentContainer['volumeMounts'] as Doc[]).find((each) => each['mountPath'] === mountPath);
      const volume = volumes.find((each) => each['name'] === mount?.['name']);
      if (mount === undefined || volume === undefined) throw new Error(`${path}: not in a volume`);
      return { mount, volume };
    };

    // The Workload API socket lies in the hostPath that workloads mount: /run/sigil/agent on the node.
    const socket = agentFiles.inPod(agent.socketPath);
    expect(socket).toBe('/run/sigil/agent/api.sock');
    const socketVolume = mountOf(socket);
    expect(socketVolume.volume['hostPath']).toEqual({ path: '/run/sigil/agent', type: 'DirectoryOrCreate' });
    expect(posix.relative(socketVolume.mount['mountPath'], socket)).toBe('api.sock');
    expect(mountOf(agentFiles.inPod(agent.dataDir)).volume['hostPath']['path']).toBe('/var/lib/sigil/agent');
    expect(agentPod['hostPID']).toBe(true);

    // k8s_psat: the token file is the projected token, with the audience the server checks.
    expect(agent.attestation?.type).toBe('k8s_psat');
    // (A path inside a `--node-attestor` spec is the pod's: the loader does not read it, the attestor does.)
    const tokenPath = agent.attestation?.options['token_path'] as string;
    const tokenVolume = mountOf(tokenPath).volume;
    const projected = (tokenVolume['projected']['sources'] as Doc[])[0]?.['serviceAccountToken'];
    expect(posix.join(mountOf(tokenPath).mount['mountPath'], projected['path'])).toBe(tokenPath);
    // The real k8s_psat reader finds the projected token there.
    await expect(readK8sPsatToken(join(agentFiles.root, tokenPath))).resolves.toBe(TEST_PROJECTED_TOKEN);
    // The server's k8s_psat options, through its own option rules: the audience it checks is the token's, the
    // cluster is the agent's, the agent's service account is on the allow-list, the API server is the in-cluster one.
    const setting = server.nodeAttestors.find((each) => each.type === 'k8s_psat');
    const names: readonly string[] = K8S_PSAT_OPTION_NAMES;
    expect(Object.keys(setting?.options ?? {}).filter((name) => !names.includes(name))).toEqual([]);
    const psat = parseK8sPsatOptions(setting?.options ?? {});
    expect(projected['audience']).toBe(psat.audience);
    expect(agent.attestation?.options['cluster']).toBe(psat.cluster);
    const agentServiceAccount = `${find(docs, 'DaemonSet', 'sigil-agent')['metadata']['namespace']}:${agentPod['serviceAccountName']}`;
    expect([...psat.serviceAccounts]).toEqual([agentServiceAccount]);
    expect(psat.kubeConfigFile).toBeUndefined();
    expect(serverPod['automountServiceAccountToken']).toBe(true);

    // The server address is the Service, at the server's port; the trust domains agree.
    const service = find(docs, 'Service', 'sigil-server');
    expect(agent.serverAddresses.map((address) => `${address.host}:${address.port}`)).toEqual([
      `${service['metadata']['name']}.${service['metadata']['namespace']}.svc:${server.port}`,
    ]);
    expect(agent.trustDomain?.name).toBe(server.trustDomain.name);
    expect(agentPod['dnsPolicy']).toBe('ClusterFirstWithHostNet');

    // The k8s workload attestor, through its own option rules with the container's environment: the node name from
    // the downward API, the kubelet on the node's loopback (so the pod is on the host network), the token the
    // service account mounts.
    expect(agent.workloadAttestors.map((setting) => setting.type)).toEqual(['unix', 'k8s']);
    const k8s = parseK8sOptions(
      agent.workloadAttestors.find((setting) => setting.type === 'k8s')?.options ?? {},
      containerEnv(agentContainer),
    );
    expect(k8s.nodeName).toBe('node-1');
    expect(k8s.kubeletHost).toBe('127.0.0.1');
    expect(agentPod['hostNetwork']).toBe(true);
    expect(agentPod['automountServiceAccountToken']).toBe(true);
    expect(k8s.tokenPath).toBe(K8S_DEFAULTS.tokenPath);
  });

  it("the agent's probes run the real healthcheck command on the configured socket", async () => {
    const agentContainer = container(agentPod, 'sigil-agent');
    for (const probe of ['livenessProbe', 'readinessProbe']) {
      const argv = agentContainer[probe]['exec']['command'] as string[];
      expect(argv.slice(0, 2)).toEqual(['sigil-agent', 'healthcheck']);
      const { options, unknown, operands } = await parseCommandLine(argv);
      expect([unknown, operands]).toEqual([[], []]);
      expect(options['socketPath']).toBe(agentFiles.inPod(agent.socketPath));
    }
  });

  it('least privilege: non-root, no capability, read-only image; RBAC limited to what the attestors call', () => {
    for (const [pod, name] of [
      [serverPod, 'sigil-server'],
      [agentPod, 'sigil-agent'],
    ] as const) {
      const context = { ...pod['securityContext'], ...container(pod, name)['securityContext'] };
      expect(context, name).toMatchObject({
        runAsNonRoot: true,
        runAsUser: 10001,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'] },
      });
      expect(context['capabilities']['add'], name).toBeUndefined();
      // The init containers run one fixed command each, as root only to change a directory root owns.
      for (const init of (pod['initContainers'] ?? []) as Doc[]) {
        expect(init['securityContext'], init['name']).toMatchObject({
          allowPrivilegeEscalation: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
        });
        expect(init['securityContext']['capabilities']['add'] ?? []).toEqual(
          init['command'][0] === 'chown' ? ['CHOWN'] : [],
        );
      }
    }
    expect(find(docs, 'ClusterRole', 'sigil-server')['rules']).toEqual([
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['get'] },
    ]);
    expect(find(docs, 'ClusterRole', 'sigil-agent')['rules']).toEqual([
      { apiGroups: [''], resources: ['nodes/proxy'], verbs: ['get'] },
    ]);
    for (const name of ['sigil-server', 'sigil-agent']) {
      const binding = find(docs, 'ClusterRoleBinding', name);
      expect(binding['roleRef']).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name });
      expect(binding['subjects']).toEqual([{ kind: 'ServiceAccount', name, namespace: 'sigil' }]);
    }
    expect(serverPod['serviceAccountName']).toBe('sigil-server');
    expect(agentPod['serviceAccountName']).toBe('sigil-agent');
  });

  it('a flag the binary does not have fails the check', async () => {
    const argv = [...container(agentPod, 'sigil-agent')['command'], '--socket-pth', '/run/sigil/agent/api.sock'];
    expect((await parseCommandLine(argv)).unknown).toEqual(['--socket-pth', '/run/sigil/agent/api.sock']);
    expect(() =>
      loadServerConfig({
        flags: { port: '8081' },
        env: { SIGIL_KEK: 'not-a-key' },
        file: join(scratch, 'server.json'),
      }),
    ).toThrow('SIGIL_KEK: must be the base64 encoding of exactly 32 bytes');
  });
});

/** The lines of a unit file, as `key` → values in order (comments and blank lines skipped). */
function unitSettings(path: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match === null) continue;
    settings.set(match[1] as string, [...(settings.get(match[1] as string) ?? []), match[2] as string]);
  }
  return settings;
}

const systemdAnalyze = await execFileAsync('sh', ['-c', 'command -v systemd-analyze']).then(
  ({ stdout }) => stdout.trim(),
  () => undefined,
);

describe('deploy/systemd', () => {
  const SYSTEMD = join(DEPLOY, 'systemd');

  it.skipIf(systemdAnalyze === undefined)(
    `systemd-analyze verify accepts both units without a warning${systemdAnalyze === undefined ? ' (skipped: systemd-analyze is not installed)' : ''}`,
    async () => {
      for (const unit of ['sigil-server.service', 'sigil-agent.service']) {
        // verify exits 0 on an unknown key or a bad value and only warns: any output is a failure.
        const { stdout, stderr } = await execFileAsync(systemdAnalyze as string, ['verify', join(SYSTEMD, unit)]);
        expect(`${stdout}${stderr}`, unit).toBe('');
      }
    },
  );

  it.skipIf(systemdAnalyze === undefined)(
    `systemd-analyze security rates both units "OK" or better${systemdAnalyze === undefined ? ' (skipped: systemd-analyze is not installed)' : ''}`,
    async () => {
      for (const [unit, most] of [
        ['sigil-server.service', 2],
        ['sigil-agent.service', 2.5],
      ] as const) {
        const { stdout } = await execFileAsync(systemdAnalyze as string, [
          'security',
          '--offline=yes',
          '--no-pager',
          join(SYSTEMD, unit),
        ]);
        const level = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(stdout)?.[1]);
        expect(level, unit).toBeLessThanOrEqual(most);
      }
    },
  );

  /** The unit's ExecStart through the real command tree, with its example config and the paths in a test root. */
  async function loadUnit(unit: string): Promise<{ settings: Map<string, string[]>; options: Doc; root: string }> {
    const settings = unitSettings(join(SYSTEMD, unit));
    const [env, ...argv] = (settings.get('ExecStart')?.[0] ?? '').split(' ');
    expect(env).toBe('/usr/bin/env');
    expect(argv[1]).toBe('run');
    const { options, unknown, operands } = await parseCommandLine(argv);
    expect([unknown, operands]).toEqual([[], []]);
    const root = mkdtempSync(join(scratch, 'host-'));
    mkdirSync(join(root, 'etc/sigil'), { recursive: true });
    return { settings, options, root };
  }

  it('sigil-server.service: its command line and the example config and environment load; dirs match', async () => {
    const { settings, options, root } = await loadUnit('sigil-server.service');
    expect(settings.get('User')).toEqual(['sigil']);
    expect(options['config']).toBe('/etc/sigil/server.json');
    // The example environment file, with a real key in place of its placeholder.
    const envFile = settings.get('EnvironmentFile')?.[0] as string;
    expect(envFile).toBe('/etc/sigil/server.env');
    const example = readFileSync(join(SYSTEMD, 'server.env.example'), 'utf8');
    const env = Object.fromEntries(
      example
        .split('\n')
        .filter((line) => /^[A-Z_]+=/.test(line))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    expect(Object.keys(env).sort()).toEqual(['DATABASE_URL', 'SIGIL_KEK']);
    const file = join(SYSTEMD, 'server.json');
    // The placeholder cannot be started with by mistake.
    expect(() => loadServerConfig({ env, file })).toThrow('SIGIL_KEK: must be the base64 encoding of exactly 32 bytes');
    const config = loadServerConfig({
      flags: { ...runFlags(options), dataDir: join(root, options['dataDir']) },
      env: { ...env, SIGIL_KEK: TEST_KEK },
      file,
    });
    expect(config.databaseUrl).toBe(env['DATABASE_URL']);
    expect(new URL(config.databaseUrl as string).searchParams.get('sslmode')).toBe('verify-full');
    expect(config.nodeAttestors.map((setting) => setting.type)).toEqual(['join_token', 'x509pop']);
    expect(config.adminSocket).toBe('/run/sigil-server/private/api.sock');
    expect(config.adminSocket.startsWith(`/run/${settings.get('RuntimeDirectory')?.[0]}/`)).toBe(true);
    expect(options['dataDir']).toBe(`/var/lib/${settings.get('StateDirectory')?.[0]}`);
  });

  it('sigil-agent.service: its command line and the example config load; dirs match', async () => {
    const { settings, options, root } = await loadUnit('sigil-agent.service');
    expect(settings.get('User')).toEqual(['sigil-agent']);
    expect(settings.get('User')).not.toEqual(unitSettings(join(SYSTEMD, 'sigil-server.service')).get('User'));
    expect(options['config']).toBe('/etc/sigil/agent.json');
    const example = JSON.parse(readFileSync(join(SYSTEMD, 'agent.json'), 'utf8'));
    expect(example['trust_bundle_file']).toBe('/etc/sigil/bundle.pem');
    writeFileSync(join(root, 'etc/sigil/bundle.pem'), bundlePem);
    const file = join(root, 'etc/sigil/agent.json');
    writeFileSync(file, JSON.stringify({ ...example, trust_bundle_file: join(root, 'etc/sigil/bundle.pem') }));
    const config = loadAgentConfig({
      flags: runFlags(options),
      env: { SIGIL_AGENT_JOIN_TOKEN: TEST_JOIN_TOKEN },
      file,
    });
    expect(config.attestation?.type).toBe('join_token');
    expect(config.serverAddresses).toHaveLength(2);
    expect(config.socketPath).toBe('/run/sigil-agent/public/api.sock');
    expect(config.socketPath.startsWith(`/run/${settings.get('RuntimeDirectory')?.[0]}/`)).toBe(true);
    expect(config.dataDir).toBe(`/var/lib/${settings.get('StateDirectory')?.[0]}`);
  });
});

describe('deploy/docker', () => {
  const DOCKER = join(DEPLOY, 'docker');

  it('the Dockerfile installs every workspace and copies its build, runs as uid 10001, links both binaries', () => {
    const dockerfile = readFileSync(join(DOCKER, 'Dockerfile'), 'utf8');
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    const stages = dockerfile.split(/^FROM /m).slice(1);
    expect(stages.map((stage) => stage.split('\n')[0])).toEqual([
      'node:24-bookworm-slim AS build',
      'node:24-bookworm-slim AS runtime',
    ]);
    const [build, runtime] = stages as [string, string];
    for (const workspace of pkg.workspaces as string[]) {
      for (const stage of [build, runtime]) {
        expect(stage).toContain(`COPY ${workspace}/package.json ${workspace}/\n`);
      }
      expect(runtime).toContain(`COPY --from=build /src/${workspace}/dist ${workspace}/dist\n`);
    }
    expect(build).toContain('RUN npm run build\n');
    expect(runtime).toContain('RUN npm ci --omit=dev');
    expect(runtime).toContain('COPY --from=build /src/dist/apps dist/apps\n');
    // bin/sigil-agent.js runs the agent's bundle (scripts/bundle-agent.mjs), not dist/apps/agent.
    expect(readFileSync(join(ROOT, 'bin/sigil-agent.js'), 'utf8')).toContain("import '../dist/agent/main.js';");
    expect(runtime).toContain('COPY --from=build /src/dist/agent dist/agent\n');
    expect(runtime).toContain('COPY --from=build /src/dist/migrations dist/migrations\n');
    for (const [name, path] of Object.entries(pkg.bin as Record<string, string>)) {
      expect(runtime).toContain(`ln -s /app/${path} /usr/local/bin/${name}`);
    }
    expect(runtime).toMatch(/^USER 10001:10001$/m);
    expect(runtime).toContain('--uid 10001');
  });

  it('compose.yaml parses, and its commands and environment load with the real loaders', async () => {
    const compose = load(readFileSync(join(DOCKER, 'compose.yaml'), 'utf8')) as Doc;
    const services = compose['services'] as Doc;
    expect(Object.keys(services).sort()).toEqual(['postgres', 'sigil-agent', 'sigil-server']);
    expect(services['postgres']['image']).toBe('postgres:15');
    const values: Record<string, string> = {
      POSTGRES_PASSWORD: 'pw',
      SIGIL_KEK: TEST_KEK,
      SIGIL_AGENT_JOIN_TOKEN: TEST_JOIN_TOKEN,
    };
    // Compose's `${NAME:?message}` and `${NAME:-default}` with the values an operator exports.
    const interpolate = (text: string): string =>
      text.replace(/\$\{([A-Z_]+)(?::[?-][^}]*)?\}/g, (_, name: string) => values[name] ?? '');
    const environment = (service: Doc): Record<string, string> =>
      Object.fromEntries(
        Object.entries((service['environment'] ?? {}) as Record<string, string>).map(([k, v]) => [k, interpolate(v)]),
      );

    const serverService = services['sigil-server'];
    expect(serverService['build']).toEqual({ context: '../..', dockerfile: 'deploy/docker/Dockerfile' });
    const serverRun = await parseCommandLine(serverService['command']);
    expect([serverRun.unknown, serverRun.operands]).toEqual([[], []]);
    const server = loadServerConfig({ flags: serverRun.options, env: environment(serverService) });
    expect(server.databaseUrl).toBe('postgres://sigil:pw@postgres:5432/sigil');
    expect(server.kek).toBe(TEST_KEK);
    expect(server.adminSocket).toBe(environment(serverService)['SIGIL_ADMIN_SOCKET']);
    expect(serverService['ports']).toEqual([`127.0.0.1:${server.port}:${server.port}`]);
    expect(serverService['volumes']).toEqual([`server-admin:${posix.dirname(posix.dirname(server.adminSocket))}`]);
    const healthcheck = serverService['healthcheck']['test'] as string[];
    expect(healthcheck.slice(0, 2)).toEqual(['CMD', 'sigil-server']);
    expect((await parseCommandLine(healthcheck.slice(1))).unknown).toEqual([]);

    const agentService = services['sigil-agent'];
    expect(agentService['image']).toBe(serverService['image']);
    const agentRun = await parseCommandLine(agentService['command']);
    expect([agentRun.unknown, agentRun.operands]).toEqual([[], []]);
    const bundleMount = (agentService['volumes'] as string[]).find((volume) => volume.startsWith('./bundle.pem:'));
    expect(bundleMount).toBe(`./bundle.pem:${agentRun.options['trustBundle']}:ro`);
    const bundle = join(scratch, 'compose-bundle.pem');
    writeFileSync(bundle, bundlePem);
    const agent = loadAgentConfig({
      flags: { ...agentRun.options, trustBundle: bundle },
      env: environment(agentService),
    });
    expect(agent.attestation).toEqual({ type: 'join_token', options: { token: TEST_JOIN_TOKEN } });
    expect(agent.serverAddresses.map((address) => address.text)).toEqual([`sigil-server:${server.port}`]);
    expect(agentService['volumes']).toContain(`agent-socket:${posix.dirname(agent.socketPath)}`);
    expect(agentService['volumes']).toContain(`agent-data:${agent.dataDir}`);
    for (const service of [serverService, agentService]) {
      expect(service['read_only']).toBe(true);
      expect(service['cap_drop']).toEqual(['ALL']);
    }
  });
});
