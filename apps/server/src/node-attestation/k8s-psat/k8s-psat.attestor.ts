import { Inject, Injectable, Logger, type OnModuleDestroy, Optional } from '@nestjs/common';
import { decodeJwt, type JWTPayload } from 'jose';
import { K8S_PSAT_ATTESTOR } from '@sigil/agent-api';
import type { AgentSelector } from '../../agents/agent.js';
import { CLOCK, type Clock, systemClock } from '../../common/clock.js';
import { AppError } from '../../common/errors.js';
import type { NodeAttestation, NodeAttestor } from '../node-attestor.js';
import { NodeAttestorOptionError } from '../node-attestor.js';
import {
  isNamespace,
  isObjectName,
  K8S_PSAT_OPTION_NAMES,
  type K8sPsatOptions,
  parseK8sPsatOptions,
} from './k8s-psat-options.js';
import { K8sPsatAttestationDto } from './k8s-psat.dto.js';
import {
  KubeApiClient,
  KubeApiError,
  type KubeNode,
  type KubePod,
  sanitizeReason,
  type TokenReviewStatus,
} from './kube-api-client.js';

import {
  IN_CLUSTER_SERVICE_ACCOUNT_DIR,
  inClusterConnection,
  KubeConfigError,
  type KubeConnection,
  loadKubeConfigFile,
} from './kube-config.js';

/** The injection token of the folder of the in-cluster service account files (tests point it elsewhere). */
export const K8S_IN_CLUSTER_DIR = Symbol('K8S_IN_CLUSTER_DIR');

/** One configured cluster: its options and its API server. */
interface K8sPsatCluster {
  readonly options: K8sPsatOptions;
  readonly client: KubeApiClient;
}

/** `user.extra` keys of a TokenReview of a token bound to a pod. */
const POD_NAME_KEY = 'authentication.kubernetes.io/pod-name';
const POD_UID_KEY = 'authentication.kubernetes.io/pod-uid';
const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;
/** What the agent is told to wait before asking again when the API server cannot answer. */
const RETRY_AFTER_SECONDS = 5;
/** Clock skew allowed between this server and the API server before an expired token is refused unasked. */
const EXPIRY_LEEWAY_MS = 60_000;

/**
 * Kubernetes projected service account token node attestation (SPIRE's server `k8s_psat`). The agent sends the token
 * Kubernetes projected into its pod and the cluster's name; the cluster's API server says whose token it is
 * (TokenReview, for the configured audience), the service account must be on the allow-list, and the pod and node
 * the API server names give the identity: `spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node uid>` with SPIRE's
 * selectors. Nothing the agent says besides the token decides who it is: a token copied to another node still names
 * the pod and node it was minted for. The node may attest again (its pod's token rotates), unless banned.
 *
 * One instance per cluster (SPIRE's `clusters = { "<name>" = { … } }`): `--node-attestor k8s_psat:cluster=<name>,…`
 * once per cluster, each with its own API server, audience, allow-list and label keys; the request's `cluster`
 * picks one. Options (SPIRE's names, lists `;`-separated): `cluster`, `service_account_allow_list` (required);
 * `audience` (default `sigil-server`), `kube_config_file` (default: in-cluster, for at most one cluster),
 * `allowed_pod_label_keys`, `allowed_node_label_keys`.
 */
@Injectable()
export class K8sPsatAttestor implements NodeAttestor<K8sPsatAttestationDto>, OnModuleDestroy {
  readonly type = K8S_PSAT_ATTESTOR.type;
  readonly route = K8S_PSAT_ATTESTOR.route;
  readonly optionNames: readonly string[] = K8S_PSAT_OPTION_NAMES;
  readonly instanceOption = 'cluster';
  readonly requestType = K8sPsatAttestationDto;

  private readonly logger = new Logger(K8sPsatAttestor.name);
  /** The configured clusters, by name. */
  private readonly clusters = new Map<string, K8sPsatCluster>();

  constructor(
    @Optional() @Inject(CLOCK) private readonly clock: Clock = systemClock,
    @Optional() @Inject(K8S_IN_CLUSTER_DIR) private readonly inClusterDir: string = IN_CLUSTER_SERVICE_ACCOUNT_DIR,
  ) {}

  /** Adds one cluster (the registry calls it once per `--node-attestor k8s_psat:cluster=…`). */
  async configure(options: Readonly<Record<string, string>>): Promise<void> {
    const parsed = parseK8sPsatOptions(options);
    if (this.clusters.has(parsed.cluster)) {
      // The registry refuses a second listing of a cluster before configuring any; this is its invariant.
      throw new NodeAttestorOptionError('cluster', `${JSON.stringify(parsed.cluster)} is configured twice`);
    }
    if (parsed.kubeConfigFile === undefined) {
      // The pod's own service account reaches its own cluster only.
      const inCluster = [...this.clusters.values()].find((each) => each.options.kubeConfigFile === undefined);
      if (inCluster !== undefined) {
        throw new NodeAttestorOptionError(
          'kube_config_file',
          `not set for cluster ${JSON.stringify(parsed.cluster)}, and cluster ` +
            `${JSON.stringify(inCluster.options.cluster)} already uses the in-cluster configuration, which can ` +
            'serve one cluster only: set kube_config_file for every other cluster',
        );
      }
    }
    let connection: KubeConnection;
    try {
      connection =
        parsed.kubeConfigFile === undefined
          ? await inClusterConnection(process.env, this.inClusterDir)
          : await loadKubeConfigFile(parsed.kubeConfigFile);
    } catch (error) {
      if (!(error instanceof KubeConfigError)) throw error;
      const prefix = parsed.kubeConfigFile === undefined ? 'not set, and the in-cluster configuration fails: ' : '';
      throw new NodeAttestorOptionError('kube_config_file', `${prefix}${error.message}`);
    }
    if (connection.insecureSkipTlsVerify) {
      this.logger.warn({
        msg: 'k8s_psat: the kubeconfig skips the API server certificate check (insecure-skip-tls-verify)',
        source: connection.source,
      });
    }
    const client = new KubeApiClient(connection);
    this.clusters.set(parsed.cluster, { options: parsed, client });
    this.logger.log({
      msg: 'k8s_psat attestation enabled',
      cluster: parsed.cluster,
      kubernetesApi: client.server,
      source: connection.source,
      audience: parsed.audience,
      serviceAccounts: [...parsed.serviceAccounts],
    });
  }

  onModuleDestroy(): void {
    for (const { client } of this.clusters.values()) client.close();
  }

  /**
   * Asks the API server of the request's cluster who the token belongs to, then reads its pod and node.
   *
   * @throws AppError `invalid_argument` for a cluster not configured; `permission_denied` when the token is not
   *   authenticated, has the wrong audience, belongs to a service account not allowed or to no pod, or its pod or
   *   node is gone; `unavailable` when the API server cannot answer (the agent asks again later)
   */
  async attest(request: K8sPsatAttestationDto): Promise<NodeAttestation> {
    const configured = this.clusters.get(request.cluster);
    if (configured === undefined) {
      // The configured clusters' names are not told to an unauthenticated caller.
      throw new AppError('invalid_argument', `k8s_psat: not configured for cluster ${JSON.stringify(request.cluster)}`);
    }
    const { options, client } = configured;
    const { cluster } = options;
    // From here on, only this cluster's API server, audience and allow-list decide.
    this.precheck(request.token, options);
    const review = await this.api(cluster, () => client.reviewToken(request.token, [options.audience]));
    const identity = this.checkReview(review, request.token, options);
    if (!isNamespace(identity.namespace) || !isObjectName(identity.podName)) {
      throw new AppError('permission_denied', 'k8s_psat: the token names a pod that is not a Kubernetes object name');
    }
    const pod = await this.api(cluster, () => client.getPod(identity.namespace, identity.podName));
    const podRef = JSON.stringify(`${identity.namespace}/${identity.podName}`);
    if (pod === undefined) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: pod ${podRef} not found in cluster ${JSON.stringify(cluster)}`,
      );
    }
    if (pod.uid !== identity.podUid) {
      // The pod was deleted and another took its name: the token belongs to the old one.
      throw new AppError(
        'permission_denied',
        `k8s_psat: pod uid mismatch for pod ${podRef} in cluster ${JSON.stringify(cluster)}: the token is bound to pod uid ${JSON.stringify(identity.podUid)}`,
      );
    }
    if (pod.nodeName === undefined) {
      throw new AppError('permission_denied', `k8s_psat: pod ${podRef} is not scheduled on a node`);
    }
    const nodeName = pod.nodeName;
    if (!isObjectName(nodeName)) {
      throw new AppError('unavailable', `k8s_psat: pod ${podRef} names a node that is not a Kubernetes object name`);
    }
    const node = await this.api(cluster, () => client.getNode(nodeName));
    if (node === undefined) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: node ${JSON.stringify(nodeName)} of pod ${podRef} not found in cluster ${JSON.stringify(cluster)}`,
      );
    }
    if (!/^[A-Za-z0-9._-]+$/.test(node.uid) || node.uid === '.' || node.uid === '..') {
      throw new AppError(
        'unavailable',
        `k8s_psat: node ${JSON.stringify(nodeName)} has a uid that cannot name an agent`,
      );
    }
    return {
      agentIdSuffix: [cluster, node.uid],
      selectors: k8sPsatSelectors(options, identity, pod, node),
      canReattest: true,
    };
  }

  /**
   * Refuses, before any API call, a token that cannot pass: not a JWT, or its (unverified) claims name another
   * audience or an expiry already past. Only a refusal is taken from claims nobody has verified; whether the token
   * is good is the TokenReview's answer alone. Without this, any string sent from anywhere cost a TokenReview (and
   * a slow authenticator webhook behind the API server could be kept busy by junk).
   */
  private precheck(token: string, options: K8sPsatOptions): void {
    let claims: JWTPayload;
    try {
      claims = decodeJwt(token);
    } catch {
      throw new AppError(
        'permission_denied',
        'k8s_psat: the token is not a JWT (a projected service account token is)',
      );
    }
    const audiences = typeof claims.aud === 'string' ? [claims.aud] : (claims.aud ?? []);
    if (!audiences.includes(options.audience)) {
      const named = audiences.map((audience) => sanitizeReason(String(audience), token)).slice(0, 8);
      throw new AppError(
        'permission_denied',
        `k8s_psat: wrong audience: the token is for ${JSON.stringify(named)}, this server accepts ${JSON.stringify(options.audience)}`,
      );
    }
    if (typeof claims.exp === 'number' && claims.exp * 1000 < this.clock.now().getTime() - EXPIRY_LEEWAY_MS) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: token expired at ${new Date(claims.exp * 1000).toISOString()} (before the API server was asked)`,
      );
    }
  }

  /** Who the TokenReview says the token belongs to, checked against the options. */
  private checkReview(
    review: TokenReviewStatus,
    token: string,
    options: K8sPsatOptions,
  ): { namespace: string; serviceAccount: string; podName: string; podUid: string } {
    const cluster = JSON.stringify(options.cluster);
    if (!review.authenticated) {
      const reason = review.error === undefined ? 'no reason given' : sanitizeReason(review.error, token);
      throw new AppError(
        'permission_denied',
        `k8s_psat: token not authenticated by the kubernetes api of cluster ${cluster}: ${reason}`,
      );
    }
    if (!review.audiences.includes(options.audience)) {
      const audiences = review.audiences.map((audience) => sanitizeReason(audience, token)).slice(0, 8);
      throw new AppError(
        'permission_denied',
        `k8s_psat: wrong audience: the token is for ${JSON.stringify(audiences)}, this server accepts ${JSON.stringify(options.audience)}`,
      );
    }
    const username = review.user.username ?? '';
    const match = SERVICE_ACCOUNT_USER.exec(username);
    if (match === null) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: the token is not a service account token (user ${JSON.stringify(sanitizeReason(username, token))})`,
      );
    }
    const [, namespace, serviceAccount] = match as unknown as [string, string, string];
    const account = `${namespace}:${serviceAccount}`;
    if (!options.serviceAccounts.has(account)) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: service account ${JSON.stringify(account)} is not allowed for cluster ${cluster}`,
      );
    }
    const podNames = review.user.extra[POD_NAME_KEY] ?? [];
    const podUids = review.user.extra[POD_UID_KEY] ?? [];
    const [podName] = podNames;
    const [podUid] = podUids;
    if (podNames.length !== 1 || podUids.length !== 1 || !podName || !podUid) {
      throw new AppError(
        'permission_denied',
        `k8s_psat: the token of ${JSON.stringify(account)} is not bound to a pod (not a projected token: no ${POD_NAME_KEY} and ${POD_UID_KEY})`,
      );
    }
    return { namespace, serviceAccount, podName, podUid };
  }

  /** Runs one API call; an API that cannot answer is `unavailable` for the agent, and its details are logged here. */
  private async api<T>(cluster: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof KubeApiError)) throw error;
      this.logger.warn({
        msg: 'k8s_psat: kubernetes api call failed',
        cluster,
        error: error.message,
        detail: error.detail,
      });
      throw new AppError(
        'unavailable',
        `k8s_psat: kubernetes api of cluster ${JSON.stringify(cluster)} unavailable: ${error.message}`,
        { cause: error, retryAfterSeconds: RETRY_AFTER_SECONDS },
      );
    }
  }
}

/**
 * SPIRE's `k8s_psat` selectors: `cluster`, `agent_ns`, `agent_sa`, `agent_pod_name`, `agent_pod_uid`,
 * `agent_node_ip` (the pod's `status.hostIP`, as SPIRE), `agent_node_name`, `agent_node_uid`, then
 * `agent_node_label:<k>:<v>` and `agent_pod_label:<k>:<v>` for the allowed keys only (sorted, so a node's selectors
 * are the same at every attestation).
 */
export function k8sPsatSelectors(
  options: Pick<K8sPsatOptions, 'cluster' | 'allowedPodLabelKeys' | 'allowedNodeLabelKeys'>,
  identity: { namespace: string; serviceAccount: string; podName: string; podUid: string },
  pod: KubePod,
  node: KubeNode,
): AgentSelector[] {
  const values = [
    `cluster:${options.cluster}`,
    `agent_ns:${identity.namespace}`,
    `agent_sa:${identity.serviceAccount}`,
    `agent_pod_name:${identity.podName}`,
    `agent_pod_uid:${identity.podUid}`,
    ...(pod.hostIp === undefined ? [] : [`agent_node_ip:${pod.hostIp}`]),
    `agent_node_name:${node.name}`,
    `agent_node_uid:${node.uid}`,
  ];
  const labels = (kind: string, labelsOf: Readonly<Record<string, string>>, allowed: ReadonlySet<string>) =>
    Object.keys(labelsOf)
      .filter((key) => allowed.has(key))
      .sort()
      .map((key) => `${kind}:${key}:${labelsOf[key]}`);
  values.push(...labels('agent_node_label', node.labels, options.allowedNodeLabelKeys));
  values.push(...labels('agent_pod_label', pod.labels, options.allowedPodLabelKeys));
  return values.map((value) => ({ type: K8S_PSAT_ATTESTOR.type, value }));
}
