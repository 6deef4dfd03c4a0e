/**
 * A stand-in for the Kubernetes API server (which cannot run here), on a real HTTPS socket: 127.0.0.1 with a
 * certificate from a test CA, answering the calls Sigil makes exactly as the real API does (authentication.k8s.io/v1
 * TokenReview, core/v1 pods and nodes; payload shapes from the Kubernetes API reference). It checks the caller's
 * credentials like the API server: a bearer token it issued to the caller, or a client certificate from its CA
 * (the user is the certificate's CN). Anything else is 401; a resource the test forbids is 403 (RBAC); an unknown
 * pod or node is 404; each with a `Status` object as the API sends them.
 *
 * Projected service account tokens are made with {@link FakeKubeApiServer.issueToken}: JWT-shaped strings, bound to
 * a pod, with audiences and an expiry, which TokenReview judges as the API server does (expired, audience not among
 * the requested ones, bound pod deleted or replaced). A token stays valid on any node: whoever presents it, the
 * review names the pod it was issued for.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { x509 } from '@sigil/spiffe/x509';
import { TestCa } from './test-ca.js';

/** The audiences of the API server itself (what TokenReview uses when a review names none). */
export const FAKE_KUBE_API_AUDIENCES = ['https://kubernetes.default.svc.cluster.local'];

export interface FakePodSpec {
  readonly namespace: string;
  readonly name: string;
  readonly nodeName: string;
  readonly serviceAccount: string;
  readonly uid?: string;
  readonly labels?: Record<string, string>;
  /** `status.hostIP`; defaults to the node's InternalIP. */
  readonly hostIp?: string;
}

export interface FakeNodeSpec {
  readonly name: string;
  readonly uid?: string;
  readonly labels?: Record<string, string>;
  readonly internalIp?: string;
}

export interface FakeTokenSpec {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The pod the token is bound to (projected tokens are); leave it out for a token bound to no pod. */
  readonly pod?: { readonly name: string; readonly uid: string };
  /** `aud` of the token (a projected volume's `audience`). */
  readonly audiences: readonly string[];
  readonly expiresAt?: Date;
}

/** A call the fake answered: no credentials, no tokens. */
export interface FakeKubeCall {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** Who the caller authenticated as, or undefined (401). */
  readonly user: string | undefined;
}

/** A resource the test forbids to the caller, as RBAC would. */
export type FakeKubeResource = 'tokenreviews' | 'pods' | 'nodes';

interface StoredToken extends FakeTokenSpec {
  readonly nodeName: string | undefined;
}

const json = (response: ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
};

/** A meta/v1 Status, as the API server answers errors. */
function status(code: number, reason: string, message: string, details?: Record<string, unknown>) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details && { details }),
    code,
  };
}

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

export class FakeKubeApiServer {
  /** The bearer token this API server accepts from the Sigil server (its service account token). */
  readonly callerToken = `caller-${randomBytes(24).toString('hex')}`;
  /** The user {@link callerToken} authenticates as. */
  readonly callerUser = 'system:serviceaccount:sigil:sigil-server';
  /** Calls answered, in order. */
  readonly calls: FakeKubeCall[] = [];
  /** Tokens sent to TokenReview, in order (to check which token an agent sent). */
  readonly reviewedTokens: string[] = [];
  /**
   * Whether TokenReview checks that the bound pod still exists with the bound uid (the real API does). Turn it off to
   * reach the server's own pod uid check, as when the pod is replaced between the review and the pod read.
   */
  checkBoundPod = true;
  /**
   * An authenticator that ignores the audiences a review asks for (as webhook authenticators may): it judges tokens
   * against the API server's own audiences and answers those.
   */
  ignoreRequestedAudiences = false;
  /** Misbehaviour for the client's bounds: never answer, answer too much, or answer something that is not JSON. */
  misbehave: 'stall' | 'huge' | 'not-json' | 'echo-not-json' | 'echo-status' | undefined;
  /** Time as the API server sees it (token expiry). */
  now: () => Date = () => new Date();

  private readonly pods = new Map<string, Record<string, unknown>>();
  private readonly nodes = new Map<string, Record<string, unknown>>();
  private readonly tokens = new Map<string, StoredToken>();
  private readonly forbidden = new Set<FakeKubeResource>();
  private readonly callerTokens = new Set<string>();

  private constructor(
    private readonly server: Server,
    readonly ca: TestCa,
    private readonly clientCa: TestCa,
  ) {
    this.callerTokens.add(this.callerToken);
  }

  /** Starts the fake on 127.0.0.1, on `port` or a free one. */
  static async start(options: { port?: number } = {}): Promise<FakeKubeApiServer> {
    const ca = await TestCa.create('kube.test', { uris: [], subject: 'CN=kubernetes-ca' });
    const leaf = await ca.createX509Svid('spiffe://kube.test/unused', {
      uris: [],
      subject: 'CN=kube-apiserver',
      extKeyUsage: [x509.ExtendedKeyUsage.serverAuth],
      extraExtensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          { type: 'dns', value: 'localhost' },
          { type: 'dns', value: 'kubernetes.default.svc' },
        ]),
      ],
    });
    const clientCa = await TestCa.create('kube.test', { uris: [], subject: 'CN=kubernetes-client-ca' });
    const server = createServer({
      cert: leaf.certificate.toString('pem'),
      key: toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8()),
      ca: clientCa.certificate.toString('pem'),
      // As the API server: a client certificate is asked for, checked, and optional (bearer tokens are the other way).
      requestCert: true,
      rejectUnauthorized: false,
    });
    const fake = new FakeKubeApiServer(server, ca, clientCa);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => fake.handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    return fake;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** `https://127.0.0.1:<port>`: the kubeconfig `server`. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** The PEM of the CA of the API server's certificate (kubeconfig `certificate-authority`). */
  get caPem(): string {
    return this.ca.certificate.toString('pem');
  }

  /**
   * A kubeconfig for this API server: the caller's bearer token by default, or a client certificate; `extraUser`
   * fields are added to the user.
   */
  async kubeconfig(options: { auth?: 'token' | 'client-certificate'; extraUser?: Record<string, unknown> } = {}) {
    const user: Record<string, unknown> =
      options.auth === 'client-certificate'
        ? await this.clientCertificateData(this.callerUser)
        : { token: this.callerToken };
    const base64 = (text: string) => Buffer.from(text).toString('base64');
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'test',
      clusters: [
        { name: 'test-cluster', cluster: { server: this.url, 'certificate-authority-data': base64(this.caPem) } },
      ],
      users: [{ name: 'sigil-server', user: { ...user, ...options.extraUser } }],
      contexts: [{ name: 'test', context: { cluster: 'test-cluster', user: 'sigil-server' } }],
    });
  }

  /** A client certificate (CN = `user`) and key from the API server's client CA, as kubeconfig `-data` fields. */
  async clientCertificateData(user: string): Promise<Record<string, string>> {
    const leaf = await this.clientCa.createX509Svid('spiffe://kube.test/unused', {
      uris: [],
      subject: `CN=${user}, O=system:serviceaccounts`,
      extKeyUsage: [x509.ExtendedKeyUsage.clientAuth],
    });
    const base64 = (text: string) => Buffer.from(text).toString('base64');
    return {
      'client-certificate-data': base64(leaf.certificate.toString('pem')),
      'client-key-data': base64(toPem(PEM_LABEL.privateKey, await leaf.privateKeyPkcs8())),
    };
  }

  /** Adds a node (core/v1 Node); returns it. */
  addNode(spec: FakeNodeSpec): Record<string, unknown> {
    const internalIp = spec.internalIp ?? '10.0.0.1';
    const node = {
      kind: 'Node',
      apiVersion: 'v1',
      metadata: {
        name: spec.name,
        uid: spec.uid ?? randomUUID(),
        resourceVersion: '1000',
        creationTimestamp: '2030-01-01T00:00:00Z',
        labels: {
          'kubernetes.io/hostname': spec.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          ...spec.labels,
        },
        annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
      },
      spec: { podCIDR: '10.244.0.0/24', podCIDRs: ['10.244.0.0/24'], providerID: `kind://docker/test/${spec.name}` },
      status: {
        addresses: [
          { type: 'InternalIP', address: internalIp },
          { type: 'Hostname', address: spec.name },
        ],
        conditions: [
          { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
        ],
        nodeInfo: { kubeletVersion: 'v1.33.0', containerRuntimeVersion: 'containerd://2.1.0', osImage: 'Debian' },
      },
    };
    this.nodes.set(spec.name, node);
    return node;
  }

  /** Adds a running pod (core/v1 Pod) on a node added before; returns it. */
  addPod(spec: FakePodSpec): Record<string, unknown> {
    const node = this.nodes.get(spec.nodeName) as
      { status: { addresses: { type: string; address: string }[] } } | undefined;
    const hostIp = spec.hostIp ?? node?.status.addresses.find((address) => address.type === 'InternalIP')?.address;
    const pod = {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: {
        name: spec.name,
        namespace: spec.namespace,
        uid: spec.uid ?? randomUUID(),
        resourceVersion: '2000',
        creationTimestamp: '2030-01-01T00:00:00Z',
        labels: { ...spec.labels },
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'DaemonSet', name: 'sigil-agent', uid: randomUUID(), controller: true },
        ],
      },
      spec: {
        serviceAccountName: spec.serviceAccount,
        serviceAccount: spec.serviceAccount,
        nodeName: spec.nodeName,
        hostPID: true,
        containers: [{ name: 'sigil-agent', image: 'ghcr.io/example/sigil:0.1.0' }],
      },
      status: {
        phase: 'Running',
        ...(hostIp !== undefined && { hostIP: hostIp, hostIPs: [{ ip: hostIp }] }),
        podIP: '10.244.0.17',
        podIPs: [{ ip: '10.244.0.17' }],
        qosClass: 'BestEffort',
      },
    };
    this.pods.set(`${spec.namespace}/${spec.name}`, pod);
    return pod;
  }

  deletePod(namespace: string, name: string): void {
    this.pods.delete(`${namespace}/${name}`);
  }

  deleteNode(name: string): void {
    this.nodes.delete(name);
  }

  /**
   * Issues a token as the kubelet's TokenRequest would for a projected volume. With `pod` named by name only, the
   * pod's current uid is used.
   */
  issueToken(spec: Omit<FakeTokenSpec, 'pod'> & { pod?: { name: string; uid?: string } }): string {
    const stored = spec.pod && this.pods.get(`${spec.namespace}/${spec.pod.name}`);
    const metadata = (stored?.['metadata'] ?? {}) as { uid?: string };
    const podSpec = (stored?.['spec'] ?? {}) as { nodeName?: string };
    const pod = spec.pod && { name: spec.pod.name, uid: spec.pod.uid ?? metadata.uid ?? randomUUID() };
    const now = Math.floor(this.now().getTime() / 1000);
    const claims = {
      aud: spec.audiences,
      exp: Math.floor((spec.expiresAt ?? new Date(this.now().getTime() + 3_600_000)).getTime() / 1000),
      iat: now,
      iss: 'https://kubernetes.default.svc.cluster.local',
      jti: randomUUID(),
      'kubernetes.io': {
        namespace: spec.namespace,
        ...(pod && { pod }),
        ...(podSpec.nodeName && { node: { name: podSpec.nodeName } }),
        serviceaccount: { name: spec.serviceAccount, uid: randomUUID() },
      },
      nbf: now,
      sub: `system:serviceaccount:${spec.namespace}:${spec.serviceAccount}`,
    };
    const token = `${base64url({ alg: 'RS256', kid: 'fake' })}.${base64url(claims)}.${randomBytes(64).toString('base64url')}`;
    this.tokens.set(token, { ...spec, pod, nodeName: podSpec.nodeName });
    return token;
  }

  /** Accepts another bearer token from the caller (a rotated service account token). */
  acceptCallerToken(token: string): void {
    this.callerTokens.add(token);
  }

  /** Refuses (403) every call on `resource`, as RBAC does without a matching role. */
  forbid(resource: FakeKubeResource, forbidden = true): void {
    if (forbidden) this.forbidden.add(resource);
    else this.forbidden.delete(resource);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private authenticate(request: IncomingMessage): string | undefined {
    const header = request.headers.authorization;
    if (header !== undefined) {
      const match = /^Bearer (\S+)$/.exec(header);
      return match && this.callerTokens.has(match[1] as string) ? this.callerUser : undefined;
    }
    const socket = request.socket as TLSSocket;
    if (!socket.authorized) return undefined;
    const cn = socket.getPeerCertificate().subject?.CN;
    return typeof cn === 'string' ? cn : undefined;
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = new URL(request.url ?? '/', 'https://fake').pathname;
      const user = this.authenticate(request);
      const answer = (code: number, body: unknown) => {
        this.calls.push({ method: request.method ?? '', path, status: code, user });
        json(response, code, body);
      };
      if (this.misbehave === 'stall') return;
      if (this.misbehave === 'not-json') {
        response.writeHead(200, { 'content-type': 'text/html' });
        return response.end('<html>proxy error</html>');
      }
      // What a misbehaving proxy or webhook authenticator in front of the API server may do: echo the request.
      if (this.misbehave === 'echo-not-json') {
        response.writeHead(200, { 'content-type': 'text/plain' });
        return response.end(`bad gateway for ${Buffer.concat(chunks).toString('utf8')}`);
      }
      if (this.misbehave === 'echo-status') {
        const sent = Buffer.concat(chunks).toString('utf8');
        return answer(500, status(500, 'InternalError', `webhook failed for request ${sent}`));
      }
      if (this.misbehave === 'huge') {
        response.writeHead(200, { 'content-type': 'application/json' });
        return response.end(`{"kind":"Node","pad":"${'x'.repeat(5 * 1024 * 1024)}"}`);
      }
      if (user === undefined) return answer(401, status(401, 'Unauthorized', 'Unauthorized'));
      this.route(request.method ?? '', path, Buffer.concat(chunks).toString('utf8'), user, answer);
    });
  }

  private route(
    method: string,
    path: string,
    body: string,
    user: string,
    answer: (code: number, body: unknown) => void,
  ): void {
    const forbidden = (verb: string, resource: FakeKubeResource, group: string, scope: string) =>
      answer(
        403,
        status(
          403,
          'Forbidden',
          `${resource}${group ? `.${group}` : ''} is forbidden: User "${user}" cannot ${verb} resource "${resource}" in API group "${group}" ${scope}`,
          { ...(group && { group }), kind: resource },
        ),
      );
    if (method === 'POST' && path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      if (this.forbidden.has('tokenreviews')) {
        return forbidden('create', 'tokenreviews', 'authentication.k8s.io', 'at the cluster scope');
      }
      let review: { kind?: unknown; apiVersion?: unknown; spec?: { token?: unknown; audiences?: unknown } };
      try {
        review = JSON.parse(body) as typeof review;
      } catch {
        return answer(400, status(400, 'BadRequest', 'the body of the request was in an unknown format'));
      }
      if (review.kind !== 'TokenReview' || review.apiVersion !== 'authentication.k8s.io/v1') {
        return answer(400, status(400, 'BadRequest', 'the body must be an authentication.k8s.io/v1 TokenReview'));
      }
      const token = review.spec?.token;
      if (typeof token !== 'string' || token === '') {
        return answer(400, status(400, 'BadRequest', 'token is required for TokenReview in authentication'));
      }
      this.reviewedTokens.push(token);
      const audiences = Array.isArray(review.spec?.audiences) ? (review.spec.audiences as string[]) : [];
      return answer(201, {
        kind: 'TokenReview',
        apiVersion: 'authentication.k8s.io/v1',
        metadata: { creationTimestamp: null },
        // The real API echoes the reviewed token back in spec.
        spec: { token, ...(audiences.length > 0 && { audiences }) },
        status: this.review(token, audiences),
      });
    }
    const pod = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path);
    if (method === 'GET' && pod !== null) {
      const [namespace, name] = [decodeURIComponent(pod[1] as string), decodeURIComponent(pod[2] as string)];
      if (this.forbidden.has('pods')) return forbidden('get', 'pods', '', `in the namespace "${namespace}"`);
      const found = this.pods.get(`${namespace}/${name}`);
      return found
        ? answer(200, found)
        : answer(404, status(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' }));
    }
    const node = /^\/api\/v1\/nodes\/([^/]+)$/.exec(path);
    if (method === 'GET' && node !== null) {
      const name = decodeURIComponent(node[1] as string);
      if (this.forbidden.has('nodes')) return forbidden('get', 'nodes', '', 'at the cluster scope');
      const found = this.nodes.get(name);
      return found
        ? answer(200, found)
        : answer(404, status(404, 'NotFound', `nodes "${name}" not found`, { name, kind: 'nodes' }));
    }
    answer(
      404,
      status(404, 'NotFound', 'the server could not find the requested resource', {
        causes: [{ reason: 'UnexpectedServerResponse', message: '404 page not found' }],
      }),
    );
  }

  /** TokenReview `status`, as the API server's service account authenticator fills it. */
  private review(token: string, requested: readonly string[]): Record<string, unknown> {
    const refused = (reason: string) => ({ user: {}, error: `[invalid bearer token, ${reason}]` });
    const stored = this.tokens.get(token);
    if (stored === undefined) return refused('square/go-jose: error in cryptographic primitive');
    if (stored.expiresAt !== undefined && stored.expiresAt.getTime() <= this.now().getTime()) {
      return refused('service account token has expired');
    }
    const wanted = requested.length > 0 && !this.ignoreRequestedAudiences ? requested : FAKE_KUBE_API_AUDIENCES;
    const audiences = wanted.filter((audience) => stored.audiences.includes(audience));
    if (audiences.length === 0) {
      return refused(
        `token audiences ${JSON.stringify(stored.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}`,
      );
    }
    if (stored.pod !== undefined && this.checkBoundPod) {
      const pod = this.pods.get(`${stored.namespace}/${stored.pod.name}`) as { metadata: { uid: string } } | undefined;
      if (pod === undefined) return refused(`pods "${stored.pod.name}" not found`);
      if (pod.metadata.uid !== stored.pod.uid) {
        return refused(`pod "${stored.pod.name}" (${stored.pod.uid}) has been deleted and recreated (uid changed)`);
      }
    }
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${randomUUID()}`] };
    if (stored.nodeName !== undefined) extra['authentication.kubernetes.io/node-name'] = [stored.nodeName];
    if (stored.pod !== undefined) {
      extra['authentication.kubernetes.io/pod-name'] = [stored.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [stored.pod.uid];
    }
    return {
      authenticated: true,
      user: {
        username: `system:serviceaccount:${stored.namespace}:${stored.serviceAccount}`,
        uid: randomUUID(),
        groups: ['system:serviceaccounts', `system:serviceaccounts:${stored.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences,
    };
  }
}
