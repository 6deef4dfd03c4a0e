import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FakeKubeApiServer } from '../../../../../test/support/fake-kube-apiserver.js';
import { AppError } from '../../common/errors.js';
import { NodeAttestorOptionError } from '../node-attestor.js';
import { K8sPsatAttestor } from './k8s-psat.attestor.js';
import { systemClock } from '../../common/clock.js';
import { K8sPsatAttestationDto } from './k8s-psat.dto.js';
import { createValidationPipe } from '../../common/validation.js';
import { K8S_PSAT_TOKEN_MAX_LENGTH } from '@sigil/agent-api';
import { KUBE_API_LIMITS, KubeApiClient, type KubeApiError, sanitizeReason } from './kube-api-client.js';
import { inClusterConnection, loadKubeConfigFile } from './kube-config.js';

const CSR = 'unused: the attestor does not read the CSR';
const NODE_A = { name: 'node-a', uid: '6b3c1d8e-0c4e-4a57-9d4b-1b2a3c4d5e6f', internalIp: '10.0.0.11' };
const NODE_B = { name: 'node-b', uid: '0f1e2d3c-4b5a-4968-8776-655443322110', internalIp: '10.0.0.12' };

let api: FakeKubeApiServer;
let dir: string;
const logged: string[] = [];
const record = (...args: unknown[]): void => void logged.push(JSON.stringify(args));

beforeAll(async () => {
  Logger.overrideLogger({ log: record, error: record, warn: record, debug: record, verbose: record, fatal: record });
  api = await FakeKubeApiServer.start();
  dir = await mkdtemp(join(tmpdir(), 'sigil-k8s-psat-'));
});

afterAll(async () => {
  Logger.overrideLogger(false);
  await api?.close();
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
async function file(content: string): Promise<string> {
  const path = join(dir, `file-${++files}`);
  await writeFile(path, content, { mode: 0o600 });
  return path;
}

/** A configured attestor for cluster `prod` against the fake API server. */
async function attestor(options: Record<string, string> = {}, kubeconfig?: string): Promise<K8sPsatAttestor> {
  const attestor = new K8sPsatAttestor();
  await attestor.configure({
    cluster: 'prod',
    service_account_allow_list: 'sigil:sigil-agent;other:agent',
    kube_config_file: await file(kubeconfig ?? (await api.kubeconfig())),
    ...options,
  });
  return attestor;
}

/** The agent's pod on `node`, and a projected token for it. */
function agentPod(node: typeof NODE_A, name = `sigil-agent-${node.name}`, audiences = ['sigil-server']) {
  api.addNode({ ...node, labels: { 'topology.kubernetes.io/zone': 'eu-1a', secret: 'no' } });
  const pod = api.addPod({
    namespace: 'sigil',
    name,
    nodeName: node.name,
    serviceAccount: 'sigil-agent',
    labels: { app: 'sigil-agent', 'pod-template-hash': 'abc' },
  });
  const token = api.issueToken({
    namespace: 'sigil',
    serviceAccount: 'sigil-agent',
    pod: { name },
    audiences,
  });
  return { token, podUid: (pod['metadata'] as { uid: string }).uid };
}

const request = (token: string, cluster = 'prod'): K8sPsatAttestationDto => ({ cluster, token, csr: CSR });

/** The AppError `attest` throws; its message never holds the token. */
async function refusal(promise: Promise<unknown>, token: string): Promise<AppError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(AppError);
  expect((error as AppError).message).not.toContain(token);
  return error as AppError;
}

afterEach(() => {
  api.checkBoundPod = true;
  api.ignoreRequestedAudiences = false;
  api.misbehave = undefined;
  api.forbid('tokenreviews', false);
  api.forbid('pods', false);
  api.forbid('nodes', false);
});

describe('k8s_psat server attestor', () => {
  it('names the agent by cluster and node uid, with every SPIRE selector and only the allowed labels', async () => {
    const { token, podUid } = agentPod(NODE_A);
    const psat = await attestor({
      allowed_pod_label_keys: 'app',
      allowed_node_label_keys: 'topology.kubernetes.io/zone;kubernetes.io/hostname',
    });
    const found = await psat.attest(request(token));
    expect(found.agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    expect(found.canReattest).toBe(true);
    expect(found.selectors.map((selector) => `${selector.type}:${selector.value}`)).toEqual([
      'k8s_psat:cluster:prod',
      'k8s_psat:agent_ns:sigil',
      'k8s_psat:agent_sa:sigil-agent',
      `k8s_psat:agent_pod_name:sigil-agent-node-a`,
      `k8s_psat:agent_pod_uid:${podUid}`,
      'k8s_psat:agent_node_ip:10.0.0.11',
      'k8s_psat:agent_node_name:node-a',
      `k8s_psat:agent_node_uid:${NODE_A.uid}`,
      'k8s_psat:agent_node_label:kubernetes.io/hostname:node-a',
      'k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a',
      'k8s_psat:agent_pod_label:app:sigil-agent',
    ]);
    // The review asked for the configured audience, authenticated with the server's own token.
    expect(api.calls.slice(-3).map((call) => [call.method, call.path, call.status, call.user])).toEqual([
      ['POST', '/apis/authentication.k8s.io/v1/tokenreviews', 201, api.callerUser],
      ['GET', '/api/v1/namespaces/sigil/pods/sigil-agent-node-a', 200, api.callerUser],
      ['GET', '/api/v1/nodes/node-a', 200, api.callerUser],
    ]);
    psat.onModuleDestroy();
  });

  it('authenticates to the API server with a kubeconfig client certificate, and with a tokenFile', async () => {
    const { token } = agentPod(NODE_A);
    const withCertificate = await attestor({}, await api.kubeconfig({ auth: 'client-certificate' }));
    expect((await withCertificate.attest(request(token))).agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    expect(api.calls.at(-1)?.user).toBe(api.callerUser);
    withCertificate.onModuleDestroy();

    const rotated = 'rotated-caller-token-0123456789';
    const tokenFile = await file(`${api.callerToken}\n`);
    const config = JSON.parse(await api.kubeconfig()) as { users: { user: Record<string, unknown> }[] };
    config.users[0]!.user = { tokenFile };
    const withTokenFile = await attestor({}, JSON.stringify(config));
    await withTokenFile.attest(request(token));
    // The file is read for every call: a rotated token is used at once.
    api.acceptCallerToken(rotated);
    await writeFile(tokenFile, rotated);
    await withTokenFile.attest(request(token));
    expect(api.calls.at(-1)?.status).toBe(200);
    withTokenFile.onModuleDestroy();
  });

  it('gives the identity of the node the token was minted for, whoever presents it', async () => {
    const a = agentPod(NODE_A);
    agentPod(NODE_B);
    const psat = await attestor();
    // An agent on node B that copied node A's token is node A: the API server, not the agent, says which pod.
    const found = await psat.attest(request(a.token));
    expect(found.agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    expect(found.selectors).toContainEqual({ type: 'k8s_psat', value: 'agent_node_name:node-a' });
    expect(found.selectors).not.toContainEqual({ type: 'k8s_psat', value: 'agent_node_name:node-b' });
    // …and "for" another cluster it is refused before the API server is asked.
    const reviews = api.reviewedTokens.length;
    const error = await refusal(psat.attest(request(a.token, 'staging')), a.token);
    expect([error.kind, error.message]).toEqual(['invalid_argument', 'k8s_psat: not configured for cluster "staging"']);
    expect(api.reviewedTokens.length).toBe(reviews);
    psat.onModuleDestroy();
  });

  it('refuses without asking the API server what cannot be a projected token: not a JWT, or long expired', async () => {
    const psat = await attestor();
    const reviews = api.reviewedTokens.length;
    const opaque = 'opaque-token-0123456789abcdef';
    const notJwt = await refusal(psat.attest(request(opaque)), opaque);
    expect([notJwt.kind, notJwt.message]).toEqual([
      'permission_denied',
      'k8s_psat: the token is not a JWT (a projected service account token is)',
    ]);
    const { token } = agentPod(NODE_A, 'sigil-agent-node-a', ['sigil-server']);
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const exp = Math.floor(Date.now() / 1000) - 3600;
    const expired = [header, Buffer.from(JSON.stringify({ ...claims, exp })).toString('base64url'), signature].join(
      '.',
    );
    const old = await refusal(psat.attest(request(expired)), expired);
    expect([old.kind, old.message]).toEqual([
      'permission_denied',
      `k8s_psat: token expired at ${new Date(exp * 1000).toISOString()} (before the API server was asked)`,
    ]);
    expect(api.reviewedTokens.length).toBe(reviews);
    // Claims are only ever grounds to refuse: a token whose claims look right but whose signature is not the
    // cluster's is judged by the TokenReview, and refused there.
    const forged = [header, Buffer.from(JSON.stringify({ ...claims, sub: 'x' })).toString('base64url'), signature].join(
      '.',
    );
    const refused = await refusal(psat.attest(request(forged)), forged);
    expect(refused.message).toMatch(/^k8s_psat: token not authenticated by the kubernetes api of cluster "prod": /);
    expect(api.reviewedTokens.length).toBe(reviews + 1);
    psat.onModuleDestroy();
  });

  it('refuses an expired token with the reason the API server gives', async () => {
    agentPod(NODE_A);
    const token = api.issueToken({
      namespace: 'sigil',
      serviceAccount: 'sigil-agent',
      pod: { name: 'sigil-agent-node-a' },
      audiences: ['sigil-server'],
      expiresAt: new Date(Date.now() - 1000),
    });
    const psat = await attestor();
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'permission_denied',
      'k8s_psat: token not authenticated by the kubernetes api of cluster "prod": ' +
        '[invalid bearer token, service account token has expired]',
    ]);
    psat.onModuleDestroy();
  });

  it('refuses a token minted for another audience, without asking the API server', async () => {
    const { token } = agentPod(NODE_A, 'sigil-agent-node-a', ['vault']);
    const psat = await attestor();
    const reviews = api.reviewedTokens.length;
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'permission_denied',
      'k8s_psat: wrong audience: the token is for ["vault"], this server accepts "sigil-server"',
    ]);
    const apiAudience = agentPod(NODE_A, 'sigil-agent-api-audience', ['https://kubernetes.default.svc.cluster.local']);
    const wrong = await refusal(psat.attest(request(apiAudience.token)), apiAudience.token);
    expect([wrong.kind, wrong.message]).toEqual([
      'permission_denied',
      'k8s_psat: wrong audience: the token is for ["https://kubernetes.default.svc.cluster.local"], ' +
        'this server accepts "sigil-server"',
    ]);
    expect(api.reviewedTokens.length).toBe(reviews);
    // A configured audience is the one asked for.
    api.ignoreRequestedAudiences = false;
    const vault = await attestor({ audience: 'vault' });
    expect((await vault.attest(request(token))).agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    psat.onModuleDestroy();
    vault.onModuleDestroy();
  });

  it('refuses a service account that is not on the allow-list, naming it', async () => {
    api.addNode(NODE_A);
    api.addPod({ namespace: 'default', name: 'web', nodeName: NODE_A.name, serviceAccount: 'default' });
    const token = api.issueToken({
      namespace: 'default',
      serviceAccount: 'default',
      pod: { name: 'web' },
      audiences: ['sigil-server'],
    });
    const psat = await attestor();
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'permission_denied',
      'k8s_psat: service account "default:default" is not allowed for cluster "prod"',
    ]);
    psat.onModuleDestroy();
  });

  it('refuses a token bound to no pod', async () => {
    const token = api.issueToken({ namespace: 'sigil', serviceAccount: 'sigil-agent', audiences: ['sigil-server'] });
    const psat = await attestor();
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'permission_denied',
      'k8s_psat: the token of "sigil:sigil-agent" is not bound to a pod (not a projected token: no ' +
        'authentication.kubernetes.io/pod-name and authentication.kubernetes.io/pod-uid)',
    ]);
    psat.onModuleDestroy();
  });

  it('refuses the token of a pod that was replaced by another of the same name (pod uid mismatch)', async () => {
    const { token, podUid } = agentPod(NODE_A, 'sigil-agent-reused');
    agentPod(NODE_A, 'sigil-agent-reused'); // a new pod, a new uid
    const psat = await attestor();
    // The real API server refuses it already…
    const reviewed = await refusal(psat.attest(request(token)), token);
    expect(reviewed.message).toMatch(/^k8s_psat: token not authenticated .*has been deleted and recreated/);
    // …and the server checks again, for a pod replaced between the review and the read.
    api.checkBoundPod = false;
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'permission_denied',
      `k8s_psat: pod uid mismatch for pod "sigil/sigil-agent-reused" in cluster "prod": the token is bound to pod uid "${podUid}"`,
    ]);
    psat.onModuleDestroy();
  });

  it('refuses when the pod or its node is gone', async () => {
    api.checkBoundPod = false;
    const gonePod = agentPod(NODE_A, 'sigil-agent-gone');
    api.deletePod('sigil', 'sigil-agent-gone');
    const psat = await attestor();
    const pod = await refusal(psat.attest(request(gonePod.token)), gonePod.token);
    expect([pod.kind, pod.message]).toEqual([
      'permission_denied',
      'k8s_psat: pod "sigil/sigil-agent-gone" not found in cluster "prod"',
    ]);
    const goneNode = { name: 'node-gone', uid: 'e0e0e0e0-0000-4000-8000-000000000001', internalIp: '10.0.0.99' };
    const onGoneNode = agentPod(goneNode);
    api.deleteNode('node-gone');
    const node = await refusal(psat.attest(request(onGoneNode.token)), onGoneNode.token);
    expect([node.kind, node.message]).toEqual([
      'permission_denied',
      'k8s_psat: node "node-gone" of pod "sigil/sigil-agent-node-gone" not found in cluster "prod"',
    ]);
    psat.onModuleDestroy();
  });

  it('answers unavailable (not denied) when the API server refuses the server itself', async () => {
    const { token } = agentPod(NODE_A);
    const psat = await attestor();
    for (const [resource, message] of [
      ['tokenreviews', 'POST /apis/authentication.k8s.io/v1/tokenreviews: answered 403 Forbidden'],
      ['pods', 'GET /api/v1/namespaces/sigil/pods/sigil-agent-node-a: answered 403 Forbidden'],
      ['nodes', 'GET /api/v1/nodes/node-a: answered 403 Forbidden'],
    ] as const) {
      api.forbid(resource);
      const error = await refusal(psat.attest(request(token)), token);
      expect([error.kind, error.message, error.retryAfterSeconds]).toEqual([
        'unavailable',
        `k8s_psat: kubernetes api of cluster "prod" unavailable: ${message}`,
        5,
      ]);
      api.forbid(resource, false);
    }
    psat.onModuleDestroy();
    // Credentials the API server does not know: 401.
    const stale = await attestor({}, (await api.kubeconfig()).replace(api.callerToken, 'stale-token-0123456789'));
    const error = await refusal(stale.attest(request(token)), token);
    expect(error.message).toBe(
      'k8s_psat: kubernetes api of cluster "prod" unavailable: POST /apis/authentication.k8s.io/v1/tokenreviews: ' +
        'answered 401 Unauthorized',
    );
    stale.onModuleDestroy();
  });

  it('answers unavailable when the API server is down or answers nonsense, without naming its address', async () => {
    const { token } = agentPod(NODE_A);
    const down = await FakeKubeApiServer.start();
    const psat = await attestor({}, await down.kubeconfig());
    await down.close();
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'unavailable',
      'k8s_psat: kubernetes api of cluster "prod" unavailable: POST /apis/authentication.k8s.io/v1/tokenreviews: ' +
        'unreachable (ECONNREFUSED)',
    ]);
    psat.onModuleDestroy();

    const answering = await attestor();
    api.misbehave = 'not-json';
    expect((await refusal(answering.attest(request(token)), token)).message).toBe(
      'k8s_psat: kubernetes api of cluster "prod" unavailable: POST /apis/authentication.k8s.io/v1/tokenreviews: ' +
        'answered 200 with a body that is not JSON',
    );
    api.misbehave = 'huge';
    expect((await refusal(answering.attest(request(token)), token)).message).toBe(
      'k8s_psat: kubernetes api of cluster "prod" unavailable: POST /apis/authentication.k8s.io/v1/tokenreviews: ' +
        'answer larger than 4194304 bytes',
    );
    answering.onModuleDestroy();
  });

  it('refuses an API server whose certificate is not from the configured CA', async () => {
    const { token } = agentPod(NODE_A);
    const other = await FakeKubeApiServer.start();
    const config = JSON.parse(await api.kubeconfig()) as { clusters: { cluster: Record<string, unknown> }[] };
    config.clusters[0]!.cluster['certificate-authority-data'] = Buffer.from(other.caPem).toString('base64');
    await other.close();
    const psat = await attestor({}, JSON.stringify(config));
    const error = await refusal(psat.attest(request(token)), token);
    expect([error.kind, error.message]).toEqual([
      'unavailable',
      'k8s_psat: kubernetes api of cluster "prod" unavailable: POST /apis/authentication.k8s.io/v1/tokenreviews: ' +
        'unreachable (UNABLE_TO_VERIFY_LEAF_SIGNATURE)',
    ]);
    psat.onModuleDestroy();
  });

  it('logged what failed (the API address for the operator) and never a token', () => {
    expect(logged.join('\n')).toMatch(/kubernetes api call failed.*ECONNREFUSED 127\.0\.0\.1/);
    expect(api.reviewedTokens.length).toBeGreaterThan(10);
    for (const token of [...api.reviewedTokens, api.callerToken]) expect(logged.join('\n')).not.toContain(token);
  });
});

describe('k8s_psat server options', () => {
  let kubeconfig: string;
  beforeEach(async () => {
    kubeconfig = await file(await api.kubeconfig());
  });

  it.each<[string, Record<string, string | undefined>, string]>([
    [
      'no cluster',
      { cluster: undefined },
      'option cluster: required: the name agents of this cluster give (k8s_psat is enabled once per cluster)',
    ],
    [
      'a cluster that is no path segment',
      { cluster: 'prod/eu' },
      `option cluster: must be letters, digits, '.', '_' or '-' (a SPIFFE ID path segment), got "prod/eu"`,
    ],
    [
      'no allow-list',
      { service_account_allow_list: undefined },
      "option service_account_allow_list: required: the agents' service accounts as <namespace>:<name>, separated by ';'",
    ],
    [
      'an allow-list item without a namespace',
      { service_account_allow_list: 'sigil-agent' },
      'option service_account_allow_list: "sigil-agent" is not <namespace>:<service account name> (Kubernetes names)',
    ],
    [
      'an allow-list item that is no Kubernetes name',
      { service_account_allow_list: 'sigil:Agent_1' },
      'option service_account_allow_list: "sigil:Agent_1" is not <namespace>:<service account name> (Kubernetes names)',
    ],
    [
      'an empty list item',
      { service_account_allow_list: 'sigil:agent;' },
      `option service_account_allow_list: must be items separated by ';' with none empty, got "sigil:agent;"`,
    ],
    [
      'a label key that is none',
      { allowed_pod_label_keys: 'app;bad key' },
      'option allowed_pod_label_keys: "bad key" is not a Kubernetes label key ([prefix/]name)',
    ],
    [
      'a node label key with a bad prefix',
      { allowed_node_label_keys: 'Example.com/zone' },
      'option allowed_node_label_keys: "Example.com/zone" is not a Kubernetes label key ([prefix/]name)',
    ],
    [
      'an audience with a space',
      { audience: 'sigil server' },
      'option audience: must be 1 to 256 printable characters without spaces, got "sigil server"',
    ],
  ])('refuses %s', async (_name, change, message) => {
    const options: Record<string, string> = {
      cluster: 'prod',
      service_account_allow_list: 'sigil:sigil-agent',
      kube_config_file: kubeconfig,
    };
    for (const [key, value] of Object.entries(change)) {
      if (value === undefined) delete options[key];
      else options[key] = value;
    }
    const error = await new K8sPsatAttestor().configure(options).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(NodeAttestorOptionError);
    expect((error as Error).message).toBe(message);
  });
});

describe('k8s_psat kubeconfig', () => {
  const yaml = (server: string, user: string, clusterExtra = '') => `apiVersion: v1
kind: Config
current-context: ctx
clusters:
  - name: c
    cluster:
      server: ${server}
${clusterExtra}
users:
  - name: u
    user:
${user}
contexts:
  - name: ctx
    context:
      cluster: c
      user: u
`;

  it('reads a YAML kubeconfig with relative certificate-authority and tokenFile paths', async () => {
    const { token } = agentPod(NODE_A);
    const sub = await mkdtemp(join(dir, 'kube-'));
    await writeFile(join(sub, 'ca.crt'), api.caPem);
    await writeFile(join(sub, 'token'), api.callerToken);
    const path = join(sub, 'config');
    await writeFile(path, yaml(api.url, '      tokenFile: token', '      certificate-authority: ca.crt'));
    const psat = new K8sPsatAttestor();
    await psat.configure({ cluster: 'prod', service_account_allow_list: 'sigil:sigil-agent', kube_config_file: path });
    expect((await psat.attest(request(token))).agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    psat.onModuleDestroy();
  });

  it.each<[string, (path: string) => string | undefined, string]>([
    ['a missing file', () => undefined, 'cannot be read (ENOENT)'],
    ['a file that is not YAML', () => 'clusters: [a', 'not YAML: '],
    ['no current-context', () => 'apiVersion: v1\nkind: Config\n', 'current-context is not set'],
    [
      'a context naming no cluster',
      () => yaml(api.url, '      token: x').replace('cluster: c\n      user', 'user'),
      'context "ctx" names no cluster',
    ],
    [
      'an http server',
      () => yaml('http://127.0.0.1:8080', '      token: x'),
      'server: must be an https:// URL (tokens are never sent in clear), got "http://127.0.0.1:8080"',
    ],
    [
      'insecure-skip-tls-verify with a CA',
      () => yaml(api.url, '      token: x', '      insecure-skip-tls-verify: true\n      certificate-authority: /x'),
      'insecure-skip-tls-verify and a certificate-authority are exclusive',
    ],
    [
      'a CA that is no PEM',
      () =>
        yaml(api.url, '      token: x', `      certificate-authority-data: ${Buffer.from('nope').toString('base64')}`),
      'certificate-authority holds no PEM CERTIFICATE',
    ],
    [
      'exec credentials',
      () => yaml(api.url, '      exec:\n        command: aws'),
      'user "u": exec is not supported; use token, tokenFile or client-certificate and client-key',
    ],
    [
      'impersonation',
      () => yaml(api.url, '      token: x\n      as: system:admin'),
      'user "u": as is not supported; use token, tokenFile or client-certificate and client-key',
    ],
    [
      'a proxy',
      () => yaml(api.url, '      token: x', '      proxy-url: http://proxy:3128'),
      'proxy-url is not supported; the server connects to the API directly',
    ],
    [
      'no credentials',
      () => yaml(api.url, '      {}'),
      'user "u": has no credentials (token, tokenFile or client-certificate and client-key)',
    ],
    [
      'a certificate without its key',
      () =>
        yaml(
          api.url,
          '      client-certificate-data: ' + Buffer.from('-----BEGIN CERTIFICATE-----').toString('base64'),
        ),
      'user "u": client-certificate and client-key go together',
    ],
    [
      'a missing tokenFile',
      () => yaml(api.url, '      tokenFile: /nonexistent/token'),
      'tokenFile /nonexistent/token: cannot be read (ENOENT)',
    ],
  ])('refuses %s, naming the file and field', async (_name, content, message) => {
    const path = join(dir, `kubeconfig-${++files}`);
    const text = content(path);
    if (text !== undefined) await writeFile(path, text);
    const error = await new K8sPsatAttestor()
      .configure({ cluster: 'prod', service_account_allow_list: 'sigil:sigil-agent', kube_config_file: path })
      .then(
        () => undefined,
        (caught: unknown) => caught,
      );
    expect(error).toBeInstanceOf(NodeAttestorOptionError);
    expect((error as Error).message).toContain(`option kube_config_file: kubeconfig ${path}`);
    expect((error as Error).message).toContain(message);
  });

  it('without kube_config_file outside a pod, says to set it', async () => {
    const saved = process.env['KUBERNETES_SERVICE_HOST'];
    delete process.env['KUBERNETES_SERVICE_HOST'];
    try {
      await expect(
        new K8sPsatAttestor().configure({ cluster: 'prod', service_account_allow_list: 'sigil:sigil-agent' }),
      ).rejects.toThrow(
        'option kube_config_file: not set, and the in-cluster configuration fails: not running in a Kubernetes pod ' +
          '(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set): set kube_config_file',
      );
    } finally {
      if (saved !== undefined) process.env['KUBERNETES_SERVICE_HOST'] = saved;
    }
  });
});

describe('sanitizeReason', () => {
  it('drops the token, anything shaped like a JWT and control characters, and bounds the length', () => {
    const token = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';
    expect(sanitizeReason(`bad token ${token}\n[x]`, token)).toBe('bad token <token> [x]');
    expect(sanitizeReason('other eyJhbGciOiJub25lIn0.eyJhIjoxfQ.sig here', 'opaque-token-123')).toBe(
      'other <jwt> here',
    );
    expect(sanitizeReason('pod authentication.kubernetes.io/pod-name missing', 'opaque-token-123')).toBe(
      'pod authentication.kubernetes.io/pod-name missing',
    );
    expect(sanitizeReason('x'.repeat(400), 'opaque-token-123')).toBe(`${'x'.repeat(300)}…`);
  });
});

describe('k8s_psat in-cluster configuration and API client bounds', () => {
  it("reads the pod's service account token for every call, so a rotated token is used", async () => {
    const { token } = agentPod(NODE_A);
    const serviceAccount = await mkdtemp(join(dir, 'sa-'));
    await writeFile(join(serviceAccount, 'ca.crt'), api.caPem);
    await writeFile(join(serviceAccount, 'token'), api.callerToken);
    const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) };
    const client = new KubeApiClient(await inClusterConnection(env, serviceAccount));
    expect((await client.reviewToken(token, ['sigil-server'])).authenticated).toBe(true);
    const rotated = `rotated-${api.callerToken}`;
    api.acceptCallerToken(rotated);
    await writeFile(join(serviceAccount, 'token'), rotated);
    expect((await client.getNode(NODE_A.name))?.uid).toBe(NODE_A.uid);
    await rm(join(serviceAccount, 'token'));
    await expect(client.getNode(NODE_A.name)).rejects.toThrow(
      "GET /api/v1/nodes/node-a: the server's own credentials cannot be read",
    );
    client.close();
  });

  it.each<[string, Record<string, string>, string]>([
    ['outside a pod', {}, 'not running in a Kubernetes pod'],
    [
      'with a bad port',
      { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: 'https' },
      'KUBERNETES_SERVICE_PORT: must be a port number, got "https"',
    ],
    [
      'without the mounted files',
      { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
      'in-cluster CA /nonexistent/ca.crt: cannot be read (ENOENT)',
    ],
  ])('refuses the in-cluster configuration %s', async (_name, env, message) => {
    await expect(inClusterConnection(env, '/nonexistent')).rejects.toThrow(message);
  });

  it('keeps the token out of its errors when an answer echoes the request (not JSON, or in a Status message)', async () => {
    const { token } = agentPod(NODE_A);
    const connection = await loadKubeConfigFile(await file(await api.kubeconfig()));
    const client = new KubeApiClient(connection);
    for (const misbehave of ['echo-not-json', 'echo-status'] as const) {
      api.misbehave = misbehave;
      const error = await client.reviewToken(token, ['sigil-server']).then(
        () => undefined,
        (thrown: unknown) => thrown as KubeApiError,
      );
      expect(error?.name).toBe('KubeApiError');
      expect(`${error?.message} ${error?.detail}`).not.toContain(token);
      expect(`${error?.message} ${error?.detail}`).not.toContain(token.slice(0, 40));
    }
    api.misbehave = undefined;
    client.close();
  });

  it('gives up on an API server that does not answer in time', async () => {
    const connection = await loadKubeConfigFile(await file(await api.kubeconfig()));
    const client = new KubeApiClient(connection, { ...KUBE_API_LIMITS, timeoutMs: 300 });
    api.misbehave = 'stall';
    await expect(client.getNode(NODE_A.name)).rejects.toThrow('GET /api/v1/nodes/node-a: no answer within 300 ms');
    client.close();
  });
});

describe('k8s_psat attestation body', () => {
  const validate = (body: unknown) =>
    createValidationPipe()
      .transform(body, { type: 'body', metatype: K8sPsatAttestationDto })
      .then(
        () => 'valid',
        (error: unknown) => `${(error as AppError).kind}: ${(error as AppError).message}`,
      );

  it('bounds the token and the cluster name, and names each bad field without echoing the token', async () => {
    expect(await validate({ cluster: 'prod', token: 'x'.repeat(K8S_PSAT_TOKEN_MAX_LENGTH), csr: CSR })).toBe('valid');
    const long = 'y'.repeat(K8S_PSAT_TOKEN_MAX_LENGTH + 1);
    const refused = await validate({ cluster: 'prod', token: long, csr: CSR });
    expect(refused).toBe(
      `invalid_argument: token: must be shorter than or equal to ${K8S_PSAT_TOKEN_MAX_LENGTH} characters`,
    );
    expect(await validate({ cluster: 'c'.repeat(129), token: 't', csr: CSR, node: 'b' })).toBe(
      'invalid_argument: node: unknown field; cluster: must be shorter than or equal to 128 characters',
    );
  });
});

describe('k8s_psat with several clusters (one instance per cluster)', () => {
  // A second cluster: its own API server, CA, caller token, service accounts and tokens.
  let east: FakeKubeApiServer;
  beforeAll(async () => {
    east = await FakeKubeApiServer.start();
  });
  afterAll(async () => {
    await east?.close();
  });

  /** `prod` on `api` (sigil:sigil-agent, audience sigil-server); `east` on `east` (spire:agent, sigil-east). */
  async function twoClusters(): Promise<K8sPsatAttestor> {
    const psat = new K8sPsatAttestor();
    await psat.configure({
      cluster: 'prod',
      service_account_allow_list: 'sigil:sigil-agent',
      kube_config_file: await file(await api.kubeconfig()),
    });
    await psat.configure({
      cluster: 'east',
      service_account_allow_list: 'spire:agent',
      audience: 'sigil-east',
      allowed_node_label_keys: 'topology.kubernetes.io/zone',
      kube_config_file: await file(await east.kubeconfig()),
    });
    return psat;
  }

  /** A pod of `account` on `node` in the cluster of `server`, and a projected token for it. */
  function podToken(server: FakeKubeApiServer, node: typeof NODE_A, account: string, audience: string) {
    const [namespace, serviceAccount] = account.split(':') as [string, string];
    const name = `${serviceAccount}-${node.name}-${randomSuffix()}`;
    server.addNode({ ...node, labels: { 'topology.kubernetes.io/zone': server === east ? 'us-1b' : 'eu-1a' } });
    server.addPod({ namespace, name, nodeName: node.name, serviceAccount });
    return server.issueToken({ namespace, serviceAccount, pod: { name }, audiences: [audience] });
  }
  let pods = 0;
  const randomSuffix = (): string => String(++pods);

  it("attests each cluster's agents against that cluster's API server, audience and allow-list", async () => {
    const psat = await twoClusters();
    const prodToken = podToken(api, NODE_A, 'sigil:sigil-agent', 'sigil-server');
    const eastToken = podToken(east, NODE_B, 'spire:agent', 'sigil-east');
    const [prodReviews, eastReviews] = [api.reviewedTokens.length, east.reviewedTokens.length];

    expect((await psat.attest(request(prodToken, 'prod'))).agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    const found = await psat.attest(request(eastToken, 'east'));
    expect(found.agentIdSuffix).toEqual(['east', NODE_B.uid]);
    const values = found.selectors.map((selector) => selector.value);
    expect(values).toContain('cluster:east');
    expect(values).toContain('agent_sa:agent');
    expect(values).toContain('agent_node_label:topology.kubernetes.io/zone:us-1b');
    // Each review went to its own cluster's API server, for its own audience, with that cluster's credentials.
    expect(api.reviewedTokens.slice(prodReviews)).toEqual([prodToken]);
    expect(east.reviewedTokens.slice(eastReviews)).toEqual([eastToken]);
    expect(east.calls.slice(-3).map((call) => [call.method, call.path, call.status, call.user])).toEqual([
      ['POST', '/apis/authentication.k8s.io/v1/tokenreviews', 201, east.callerUser],
      ['GET', `/api/v1/namespaces/spire/pods/${'agent-node-b-' + String(pods)}`, 200, east.callerUser],
      ['GET', '/api/v1/nodes/node-b', 200, east.callerUser],
    ]);
    psat.onModuleDestroy();
  });

  it('refuses a token of one cluster presented as another: only the named cluster is asked, and it says no', async () => {
    const psat = await twoClusters();
    // Minted by prod for east's audience (so no precheck stops it): east's API server does not know it.
    const prodToken = podToken(api, NODE_A, 'spire:agent', 'sigil-east');
    const prodReviews = api.reviewedTokens.length;
    const asEast = await refusal(psat.attest(request(prodToken, 'east')), prodToken);
    expect([asEast.kind, asEast.message]).toEqual([
      'permission_denied',
      'k8s_psat: token not authenticated by the kubernetes api of cluster "east": [invalid bearer token, ' +
        'square/go-jose: error in cryptographic primitive]',
    ]);
    expect(east.reviewedTokens.at(-1)).toBe(prodToken);
    expect(api.reviewedTokens.length).toBe(prodReviews);
    // And the other way round.
    const eastToken = podToken(east, NODE_B, 'sigil:sigil-agent', 'sigil-server');
    const asProd = await refusal(psat.attest(request(eastToken, 'prod')), eastToken);
    expect(asProd.message).toMatch(/^k8s_psat: token not authenticated by the kubernetes api of cluster "prod"/);
    // Each cluster's audience is its own: prod's audience is refused for east before any API call.
    const forProd = podToken(east, NODE_B, 'spire:agent', 'sigil-server');
    const eastReviews = east.reviewedTokens.length;
    const wrongAudience = await refusal(psat.attest(request(forProd, 'east')), forProd);
    expect(wrongAudience.message).toBe(
      'k8s_psat: wrong audience: the token is for ["sigil-server"], this server accepts "sigil-east"',
    );
    expect(east.reviewedTokens.length).toBe(eastReviews);
    psat.onModuleDestroy();
  });

  it("keeps each cluster's allow-list to itself, and refuses a cluster not configured", async () => {
    const psat = await twoClusters();
    // spire:agent is allowed in east, not in prod; sigil:sigil-agent the other way round.
    const prodToken = podToken(api, NODE_A, 'spire:agent', 'sigil-server');
    const inProd = await refusal(psat.attest(request(prodToken, 'prod')), prodToken);
    expect([inProd.kind, inProd.message]).toEqual([
      'permission_denied',
      'k8s_psat: service account "spire:agent" is not allowed for cluster "prod"',
    ]);
    const eastToken = podToken(east, NODE_B, 'sigil:sigil-agent', 'sigil-east');
    const inEast = await refusal(psat.attest(request(eastToken, 'east')), eastToken);
    expect(inEast.message).toBe('k8s_psat: service account "sigil:sigil-agent" is not allowed for cluster "east"');
    const other = await refusal(psat.attest(request(eastToken, 'west')), eastToken);
    expect([other.kind, other.message]).toEqual(['invalid_argument', 'k8s_psat: not configured for cluster "west"']);
    psat.onModuleDestroy();
  });

  it('serves at most one cluster from the in-cluster configuration, and a cluster once', async () => {
    const serviceAccount = await mkdtemp(join(dir, 'sa-'));
    await writeFile(join(serviceAccount, 'ca.crt'), east.caPem);
    await writeFile(join(serviceAccount, 'token'), east.callerToken);
    const saved = { host: process.env['KUBERNETES_SERVICE_HOST'], port: process.env['KUBERNETES_SERVICE_PORT'] };
    process.env['KUBERNETES_SERVICE_HOST'] = '127.0.0.1';
    process.env['KUBERNETES_SERVICE_PORT'] = String(east.port);
    const psat = new K8sPsatAttestor(systemClock, serviceAccount);
    try {
      await psat.configure({ cluster: 'east', service_account_allow_list: 'spire:agent', audience: 'sigil-east' });
      const eastToken = podToken(east, NODE_B, 'spire:agent', 'sigil-east');
      expect((await psat.attest(request(eastToken, 'east'))).agentIdSuffix).toEqual(['east', NODE_B.uid]);
      await expect(
        psat.configure({ cluster: 'prod', service_account_allow_list: 'sigil:sigil-agent' }),
      ).rejects.toThrow(
        'option kube_config_file: not set for cluster "prod", and cluster "east" already uses the in-cluster ' +
          'configuration, which can serve one cluster only: set kube_config_file for every other cluster',
      );
      await expect(
        psat.configure({
          cluster: 'east',
          service_account_allow_list: 'spire:agent',
          kube_config_file: await file(await east.kubeconfig()),
        }),
      ).rejects.toThrow('option cluster: "east" is configured twice');
      // With its own kubeconfig, another cluster is added beside the in-cluster one.
      await psat.configure({
        cluster: 'prod',
        service_account_allow_list: 'sigil:sigil-agent',
        kube_config_file: await file(await api.kubeconfig()),
      });
      const prodToken = podToken(api, NODE_A, 'sigil:sigil-agent', 'sigil-server');
      expect((await psat.attest(request(prodToken, 'prod'))).agentIdSuffix).toEqual(['prod', NODE_A.uid]);
    } finally {
      psat.onModuleDestroy();
      for (const [name, value] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
