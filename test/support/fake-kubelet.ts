/**
 * A stand-in for the kubelet's read API (the kubelet cannot run here): an HTTPS server on 127.0.0.1 with a test CA and
 * a serving certificate for the node name, answering `GET /pods` with a v1 `PodList` shaped as the Kubernetes API
 * reference shapes it (Pod: metadata, spec.containers/initContainers/ephemeralContainers, status.containerStatuses/
 * initContainerStatuses/ephemeralContainerStatuses with containerID `<runtime>://<id>`, image, imageID), and 401
 * without a bearer token it accepts, as the kubelet's webhook authentication does. It can withhold a container's
 * status for a number of requests (a container that is still being created), answer slowly, and be stopped and
 * started again on the same port (kubelet down).
 */
import { createPrivateKey } from 'node:crypto';
import { type Server, createServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { TestCa } from './test-ca.js';

export type ContainerRuntime = 'containerd' | 'docker' | 'cri-o';

/** One container of a fake pod. */
export interface FakeContainer {
  readonly name: string;
  /** The image the pod spec names. */
  readonly image: string;
  /** The runtime's container ID as cgroups show it (64 hex digits); the status carries `<runtime>://<id>`. */
  readonly id: string;
  readonly runtime?: ContainerRuntime;
  /** The image the runtime reports in the status (default: the spec's); may be another tag of the same digest. */
  readonly statusImage?: string;
  /** The digest reference the runtime reports (`imageID`). */
  readonly imageId?: string;
}

export interface FakePod {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly nodeName: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly owners?: readonly { readonly kind: string; readonly name: string; readonly uid: string }[];
  readonly containers: readonly FakeContainer[];
  readonly initContainers?: readonly FakeContainer[];
  readonly ephemeralContainers?: readonly FakeContainer[];
}

export interface FakeKubeletOptions {
  /** The name on the serving certificate (DNS SAN and CN), as a kubelet's serving certificate names its node. */
  readonly nodeName: string;
  /** Bearer tokens the kubelet accepts. */
  readonly tokens: readonly string[];
  readonly pods?: readonly FakePod[];
}

const CREATED = '2026-01-01T00:00:00Z';

function ownerApiVersion(kind: string): string {
  return ['ReplicaSet', 'DaemonSet', 'StatefulSet', 'Deployment'].includes(kind) ? 'apps/v1' : 'v1';
}

function containerSpec(container: FakeContainer): object {
  return {
    name: container.name,
    image: container.image,
    resources: {},
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  };
}

/** A ContainerStatus: running (or, for an init container, terminated), or waiting without an ID while withheld. */
function containerStatus(container: FakeContainer, kind: 'container' | 'init' | 'ephemeral', withheld: boolean) {
  const image = container.statusImage ?? container.image;
  if (withheld) {
    return {
      name: container.name,
      state: { waiting: { reason: 'ContainerCreating' } },
      lastState: {},
      ready: false,
      restartCount: 0,
      image,
      imageID: '',
      started: false,
    };
  }
  const containerID = `${container.runtime ?? 'containerd'}://${container.id}`;
  const state =
    kind === 'init'
      ? { terminated: { exitCode: 0, reason: 'Completed', startedAt: CREATED, finishedAt: CREATED, containerID } }
      : { running: { startedAt: CREATED } };
  return {
    name: container.name,
    state,
    lastState: {},
    ready: kind === 'container',
    restartCount: 0,
    image,
    imageID: container.imageId ?? '',
    containerID,
    started: kind !== 'init',
  };
}

/** The v1 Pod the kubelet lists for `pod`, without the statuses in `withheld` (container IDs). */
export function kubeletPodJson(pod: FakePod, withheld: ReadonlySet<string> = new Set()): object {
  const statuses = (containers: readonly FakeContainer[] | undefined, kind: 'container' | 'init' | 'ephemeral') =>
    (containers ?? []).map((container) => containerStatus(container, kind, withheld.has(container.id)));
  return {
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      uid: pod.uid,
      resourceVersion: '4242',
      creationTimestamp: CREATED,
      labels: pod.labels ?? {},
      annotations: { 'kubernetes.io/config.source': 'api', 'kubernetes.io/config.seen': CREATED },
      ownerReferences: (pod.owners ?? []).map((owner) => ({
        apiVersion: ownerApiVersion(owner.kind),
        kind: owner.kind,
        name: owner.name,
        uid: owner.uid,
        controller: true,
        blockOwnerDeletion: true,
      })),
    },
    spec: {
      volumes: [],
      initContainers: (pod.initContainers ?? []).map(containerSpec),
      containers: pod.containers.map(containerSpec),
      ephemeralContainers: (pod.ephemeralContainers ?? []).map((container) => ({
        ...containerSpec(container),
        targetContainerName: pod.containers[0]?.name,
      })),
      restartPolicy: 'Always',
      terminationGracePeriodSeconds: 30,
      dnsPolicy: 'ClusterFirst',
      serviceAccountName: pod.serviceAccount,
      serviceAccount: pod.serviceAccount,
      nodeName: pod.nodeName,
      securityContext: {},
      schedulerName: 'default-scheduler',
      priority: 0,
      enableServiceLinks: true,
      preemptionPolicy: 'PreemptLowerPriority',
    },
    status: {
      phase: 'Running',
      conditions: [{ type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: CREATED }],
      hostIP: '10.0.0.10',
      podIP: '10.244.0.12',
      podIPs: [{ ip: '10.244.0.12' }],
      startTime: CREATED,
      initContainerStatuses: statuses(pod.initContainers, 'init'),
      containerStatuses: statuses(pod.containers, 'container'),
      ephemeralContainerStatuses: statuses(pod.ephemeralContainers, 'ephemeral'),
      qosClass: 'BestEffort',
    },
  };
}

/** The fake kubelet: HTTPS on 127.0.0.1, `GET /pods` only. */
export class FakeKubelet {
  /** PEM of the CA the serving certificate chains to (what `kubelet_ca_path` holds). */
  readonly caPem: string;
  private server: Server | undefined;
  private portNumber = 0;
  private podList: FakePod[];
  private readonly withheld = new Map<string, number>();
  private tokens: Set<string>;
  private delayMs = 0;
  private requestCount = 0;
  private readonly authorizations: (string | undefined)[] = [];

  private constructor(
    private readonly tls: { cert: string; key: string },
    caPem: string,
    options: FakeKubeletOptions,
  ) {
    this.caPem = caPem;
    this.podList = [...(options.pods ?? [])];
    this.tokens = new Set(options.tokens);
  }

  /** A fake kubelet with a fresh CA and a serving certificate for `nodeName`, listening on 127.0.0.1. */
  static async start(options: FakeKubeletOptions): Promise<FakeKubelet> {
    const ca = await TestCa.create('kubelet-ca.test', { subject: 'CN=kubelet-ca', uris: [] });
    const leaf = await ca.createX509Svid('', {
      subject: `CN=system:node:${options.nodeName}`,
      uris: [],
      dnsNames: [options.nodeName],
    });
    const key = createPrivateKey({ key: Buffer.from(await leaf.privateKeyPkcs8()), format: 'der', type: 'pkcs8' });
    const kubelet = new FakeKubelet(
      { cert: leaf.certificate.toString('pem'), key: key.export({ format: 'pem', type: 'pkcs8' }) as string },
      ca.certificate.toString('pem'),
      options,
    );
    await kubelet.listen(0);
    return kubelet;
  }

  get port(): number {
    return this.portNumber;
  }

  /** Requests answered or refused since the start. */
  get requests(): number {
    return this.requestCount;
  }

  /** The Authorization header of every request, in order. */
  get authorizationHeaders(): readonly (string | undefined)[] {
    return this.authorizations;
  }

  setPods(pods: readonly FakePod[]): void {
    this.podList = [...pods];
  }

  /** Replaces the accepted bearer tokens (a rotated service account token). */
  acceptTokens(tokens: readonly string[]): void {
    this.tokens = new Set(tokens);
  }

  /** Lists container `id` as still being created (no containerID) for the next `requests` requests to `/pods`. */
  withholdStatus(id: string, requests: number): void {
    this.withheld.set(id, requests);
  }

  /** Delays every answer by `ms`. */
  setDelay(ms: number): void {
    this.delayMs = ms;
  }

  /** Stops listening and closes every connection (the kubelet is down); `restart` listens on the same port again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async restart(): Promise<void> {
    if (this.server === undefined) await this.listen(this.portNumber);
  }

  private async listen(port: number): Promise<void> {
    const server = createServer({ cert: this.tls.cert, key: this.tls.key }, (req, res) => {
      this.requestCount += 1;
      this.authorizations.push(req.headers.authorization);
      const send = (status: number, body: string, type = 'application/json'): void => {
        setTimeout(() => {
          res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
          res.end(body);
        }, this.delayMs);
      };
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      // The kubelet's authentication filter (pkg/kubelet/server) answers go-restful's WriteErrorString: a text body.
      if (token === undefined || !this.tokens.has(token)) return send(401, 'Unauthorized', 'text/plain');
      if (req.method !== 'GET' || req.url !== '/pods') return send(404, '404 page not found', 'text/plain');
      const withheld = new Set<string>();
      for (const [id, remaining] of this.withheld) {
        if (remaining <= 0) continue;
        withheld.add(id);
        this.withheld.set(id, remaining - 1);
      }
      const items = this.podList.map((pod) => kubeletPodJson(pod, withheld));
      send(200, JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items }));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.portNumber = (server.address() as AddressInfo).port;
    this.server = server;
  }
}
