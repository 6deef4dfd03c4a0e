import { ContextLogger } from '@sigil/logging';
import { type Selector } from '@sigil/runtime';
import { sleep } from '../../../common/backoff.js';
import { readContainerIdentity } from '../cgroups/container-identity.js';
import { type WorkloadAttestorContext, type WorkloadAttestorPlugin } from '../registry.js';
import { defaultProcRoot } from '../unix/proc.js';
import { WorkloadAttestationError, type WorkloadAttestor, type WorkloadCaller } from '../workload-attestor.js';
import { K8S_OPTION_NAMES, K8sOptionsError, type K8sSettings, parseK8sOptions } from './k8s-options.js';
import { containerSelectorValues, k8sSelectors, podSelectorValues } from './k8s-selectors.js';
import { KubeletClient } from './kubelet-client.js';
import { PodListCache, type PodListSnapshot } from './pod-list-cache.js';
import { type KubeletPod, findContainer, parsePodList } from './pods.js';

/** A kubelet answer longer than this is refused (a full node's pod list is a few MB). */
export const MAX_POD_LIST_BYTES = 32 * 1024 * 1024;
/** SPIRE's kubelet request timeout; shortened to half the attestation deadline when that is shorter. */
export const KUBELET_REQUEST_TIMEOUT_MS = 10_000;
/** At most one warning about an unusable kubelet per this many milliseconds. */
export const KUBELET_WARNING_INTERVAL_MS = 60_000;

export interface K8sAttestorOptions {
  /** The per-call deadline of the composite: polling stops early enough to answer within it. */
  readonly attestationTimeoutMs: number;
  /** Where procfs is mounted (default `HOST_PROC` or `/proc`). */
  readonly procRoot?: string;
  readonly logger?: Pick<ContextLogger, 'debug' | 'warn'>;
  /** Milliseconds of a monotonic clock (default `performance.now`). */
  readonly now?: () => number;
}

/** Ends the wait for the pod list when the attestor's own time is up (the list may come later, for others). */
class OutOfTime extends Error {}

function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new OutOfTime()), Math.max(0, ms));
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error as Error);
      },
    );
  });
}

/**
 * The k8s workload attestor (SPIRE's `k8s` plug-in): the caller's pod UID and container ID come from its cgroups (the
 * kernel's account, via the shared container-identity rule), its pod and container from the kubelet's pod list.
 *
 * - A process outside any pod (no pod UID or no container ID in its cgroups) gets no k8s selectors, and the kubelet
 *   is not asked.
 * - The pod list is shared between calls ({@link PodListCache}); while the pod or the container is not in it yet (a
 *   container calling as it starts), it is read again every `poll_retry_interval`, at most `max_poll_attempts`
 *   times and never past the call's deadline; then the call fails, naming the pod UID and container ID looked for.
 *   With `pod_level_fallback=true` (or SPIRE's `disable_container_selectors=true`), a listed pod whose container
 *   status is not published yet gets its pod selectors at once, unless the list gives that container ID to
 *   another pod (then the call fails).
 * - When the kubelet cannot be used (down, refusing the token, a bad answer, too slow), the caller gets no k8s
 *   selectors rather than an error, and a warning is logged at most once a minute: a missing selector can only make
 *   fewer entries match, and a non-pod workload's unix selectors keep working.
 */
export class K8sWorkloadAttestor implements WorkloadAttestor {
  readonly type = 'k8s';

  private readonly client: KubeletClient;
  private readonly pods: PodListCache;
  private readonly procRoot: string;
  private readonly logger: Pick<ContextLogger, 'debug' | 'warn'>;
  private readonly now: () => number;
  /** How long one attestation may poll: the composite's deadline less a margin to answer in. */
  private readonly budgetMs: number;
  private lastWarningAt = Number.NEGATIVE_INFINITY;
  private suppressedWarnings = 0;

  constructor(
    readonly settings: K8sSettings,
    options: K8sAttestorOptions,
  ) {
    const timeoutMs = options.attestationTimeoutMs;
    this.budgetMs = Math.max(0, timeoutMs - Math.min(1_000, Math.ceil(timeoutMs / 10)));
    this.client = new KubeletClient({
      host: settings.kubeletHost,
      port: settings.kubeletPort,
      serverName: settings.nodeName,
      caPath: settings.kubeletCaPath,
      skipVerification: settings.skipKubeletVerification,
      tokenPath: settings.tokenPath,
      timeoutMs: Math.min(KUBELET_REQUEST_TIMEOUT_MS, Math.ceil(timeoutMs / 2)),
      maxResponseBytes: MAX_POD_LIST_BYTES,
    });
    this.now = options.now ?? (() => performance.now());
    this.pods = new PodListCache(async () => parsePodList(await this.client.fetchPods()), {
      intervalMs: settings.pollRetryIntervalMs,
      now: this.now,
    });
    this.procRoot = options.procRoot ?? defaultProcRoot();
    this.logger = options.logger ?? new ContextLogger(K8sWorkloadAttestor.name);
  }

  /** Checks that the kubelet CA (unless verification is skipped) and the token file are usable. */
  async prepare(): Promise<void> {
    try {
      await this.client.checkFiles();
    } catch (error) {
      throw new WorkloadAttestationError(`k8s workload attestor: ${(error as Error).message}`, { cause: error });
    }
    if (this.settings.nodeName === undefined) {
      this.logger.warn(
        `k8s workload attestor: no node name (node_name, or the variable node_name_env names): the kubelet is ` +
          `dialled on ${this.settings.kubeletHost} and its certificate is checked against the CA without a name`,
      );
    }
  }

  /** Closes the kubelet connections kept alive. */
  close(): void {
    this.client.close();
  }

  async attest(caller: WorkloadCaller, signal: AbortSignal): Promise<readonly Selector[]> {
    const identity = await readContainerIdentity(caller.pid, this.procRoot);
    signal.throwIfAborted();
    const podUid = identity?.podUid;
    const containerId = identity?.containerId;
    if (podUid === undefined || containerId === undefined) return [];

    const { maxPollAttempts, pollRetryIntervalMs, disableContainerSelectors, podLevelFallback } = this.settings;
    const end = this.now() + this.budgetMs;
    let version = 0;
    let attempts = 0;
    let listed = false;
    for (;;) {
      let snapshot: PodListSnapshot;
      try {
        snapshot = await within(this.pods.next(version, signal), end - this.now());
      } catch (error) {
        signal.throwIfAborted();
        if (error instanceof OutOfTime && attempts > 0) break;
        this.warnKubeletUnusable(error);
        return [];
      }
      attempts += 1;
      version = snapshot.version;
      const pod = snapshot.pods.get(podUid);
      if (pod !== undefined) {
        listed = true;
        const container = findContainer(pod, containerId);
        if (container !== undefined) {
          const values = podSelectorValues(pod);
          if (!disableContainerSelectors) values.push(...containerSelectorValues(container));
          return k8sSelectors(values);
        }
        if (disableContainerSelectors || podLevelFallback) return this.podOnly(pod, containerId, snapshot);
      }
      if (attempts >= maxPollAttempts || this.now() + pollRetryIntervalMs > end) break;
      await sleep(pollRetryIntervalMs, signal);
    }
    const where = listed
      ? `pod ${podUid} is listed without a status for container ${containerId}`
      : `pod ${podUid} (container ${containerId}) is not listed`;
    throw new WorkloadAttestationError(
      `k8s: the kubelet's pod list has no container ${containerId} of pod ${podUid} after ${attempts} ` +
        `${attempts === 1 ? 'read' : 'reads'}: ${where}`,
    );
  }

  /**
   * The pod's selectors alone, for a container whose status is not published yet; refused when the list says the
   * container is another pod's (the cgroups named a pod and a container that do not go together).
   */
  private podOnly(pod: KubeletPod, containerId: string, snapshot: PodListSnapshot): Selector[] {
    for (const other of snapshot.pods.values()) {
      if (other.uid !== pod.uid && findContainer(other, containerId) !== undefined) {
        throw new WorkloadAttestationError(
          `k8s: container ${containerId} is pod ${other.uid}'s in the kubelet's pod list, not pod ${pod.uid}'s ` +
            `as the caller's cgroups say: no pod selectors`,
        );
      }
    }
    this.logger.debug(
      `k8s: container ${containerId} of pod ${pod.uid} has no published status yet: pod selectors only`,
    );
    return k8sSelectors(podSelectorValues(pod));
  }

  private warnKubeletUnusable(error: unknown): void {
    const now = this.now();
    if (now - this.lastWarningAt < KUBELET_WARNING_INTERVAL_MS) {
      this.suppressedWarnings += 1;
      return;
    }
    const reason =
      error instanceof OutOfTime
        ? 'no pod list within the attestation deadline'
        : error instanceof Error
          ? error.message
          : String(error);
    const suppressed = this.suppressedWarnings > 0 ? ` (${this.suppressedWarnings} more since the last warning)` : '';
    this.logger.warn(
      `k8s: cannot use the kubelet's pod list, pod workloads get no k8s selectors: ${reason}${suppressed}`,
    );
    this.lastWarningAt = now;
    this.suppressedWarnings = 0;
  }
}

/** The registry's factory: options from `--workload-attestor k8s:<option>=<value>,…`, node name from the environment. */
export function createK8sAttestor(context: WorkloadAttestorContext): K8sWorkloadAttestor {
  return new K8sWorkloadAttestor(parseK8sOptions(context.options, process.env), {
    attestationTimeoutMs: context.config.workloadAttestationTimeoutMs,
  });
}

/** The registry's entry: SPIRE's options (plus `kubelet_host` and `pod_level_fallback`), checked when the config loads. */
export const K8S_ATTESTOR: WorkloadAttestorPlugin = Object.freeze({
  optionNames: K8S_OPTION_NAMES,
  checkOptions: (options: Readonly<Record<string, string>>): readonly string[] => {
    try {
      parseK8sOptions(options, process.env);
      return [];
    } catch (error) {
      if (error instanceof K8sOptionsError) return error.problems;
      throw error;
    }
  },
  create: createK8sAttestor,
});
