import { isIP } from 'node:net';
import { PkiError, validateDnsName } from '@sigil/pki';
import { parseCount, parseOptionBoolean, parseOptionDurationMs } from '@sigil/runtime';

/**
 * The options of `--workload-attestor k8s:<option>=<value>,…`: SPIRE's names and defaults
 * (pkg/agent/plugin/workloadattestor/k8s), plus `kubelet_host` and `pod_level_fallback`, which SPIRE does not have.
 */
export const K8S_OPTION_NAMES = [
  'kubelet_secure_port',
  'kubelet_ca_path',
  'skip_kubelet_verification',
  'token_path',
  'node_name_env',
  'node_name',
  'kubelet_host',
  'max_poll_attempts',
  'poll_retry_interval',
  'disable_container_selectors',
  'pod_level_fallback',
] as const;

export type K8sOptionName = (typeof K8S_OPTION_NAMES)[number];

export const K8S_DEFAULTS = {
  kubeletSecurePort: 10250,
  kubeletCaPath: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
  tokenPath: '/var/run/secrets/kubernetes.io/serviceaccount/token',
  nodeNameEnv: 'MY_NODE_NAME',
  /** SPIRE dials 127.0.0.1 when it has no node name. */
  kubeletHostWithoutNodeName: '127.0.0.1',
  maxPollAttempts: 60,
  pollRetryIntervalMs: 500,
} as const;

/** Bounds of the options (not SPIRE's: it takes any positive number). */
export const K8S_LIMITS = {
  maxPollAttempts: 10_000,
  minPollRetryIntervalMs: 10,
  maxPollRetryIntervalMs: 60_000,
} as const;

/** The k8s attestor's settings, resolved from its options and the agent's environment. */
export interface K8sSettings {
  readonly kubeletHost: string;
  readonly kubeletPort: number;
  /** The name the kubelet's certificate must carry: the node name, when there is one. */
  readonly nodeName: string | undefined;
  readonly kubeletCaPath: string;
  readonly skipKubeletVerification: boolean;
  readonly tokenPath: string;
  readonly maxPollAttempts: number;
  readonly pollRetryIntervalMs: number;
  /** SPIRE's `disable_container_selectors`: pod selectors only, also before the container's status is published. */
  readonly disableContainerSelectors: boolean;
  /** Pod selectors only when the pod is listed but the container's status is not published yet. */
  readonly podLevelFallback: boolean;
}

/** Why options of the k8s attestor are not usable: each problem is `<option>: <what is wrong>`. */
export class K8sOptionsError extends Error {
  override readonly name = 'K8sOptionsError';

  constructor(readonly problems: readonly string[]) {
    super(problems.join('; '));
  }
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Why `name` cannot name a node or a host to dial, or undefined when it can (a DNS name or an IP address). */
function hostProblem(name: string): string | undefined {
  if (isIP(name) !== 0) return undefined;
  if (name.includes('*')) return `must be a host name or an IP address, got ${JSON.stringify(name)}`;
  try {
    validateDnsName(name, 'name');
    return undefined;
  } catch (error) {
    if (!(error instanceof PkiError)) throw error;
    return `must be a host name or an IP address: ${error.message.replace(/^name: /, '')}`;
  }
}

/**
 * Resolves the k8s attestor's options (their names are checked by the registry). The node name is `node_name`, else
 * the variable `node_name_env` names (`MY_NODE_NAME`) in `env`; without one, the kubelet is dialled on 127.0.0.1 and
 * its certificate is checked against the CA only (SPIRE's behaviour). `kubelet_host` changes the address dialled,
 * never the name checked.
 *
 * @throws K8sOptionsError listing every bad option
 */
export function parseK8sOptions(
  options: Readonly<Record<string, string>>,
  env: Readonly<Record<string, string | undefined>> = process.env,
): K8sSettings {
  const problems: string[] = [];
  const bad = (name: K8sOptionName, problem: string): void => void problems.push(`${name}: ${problem}`);
  const given = (name: K8sOptionName): string | undefined => (Object.hasOwn(options, name) ? options[name] : undefined);

  const flag = (name: K8sOptionName): boolean => {
    const value = given(name);
    const parsed = value === undefined ? false : parseOptionBoolean(value);
    if (typeof parsed === 'boolean') return parsed;
    bad(name, parsed);
    return false;
  };
  const count = (name: K8sOptionName, fallback: number, min: number, max: number): number => {
    const value = given(name);
    if (value === undefined) return fallback;
    const parsed = parseCount(value);
    if (parsed === undefined || parsed < min || parsed > max) {
      bad(name, `must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return parsed;
  };
  const path = (name: K8sOptionName, fallback: string): string => {
    const value = given(name);
    if (value === undefined) return fallback;
    if (value.trim() === '') bad(name, 'must be a file path');
    return value;
  };

  const kubeletPort = count('kubelet_secure_port', K8S_DEFAULTS.kubeletSecurePort, 1, 65_535);
  const maxPollAttempts = count('max_poll_attempts', K8S_DEFAULTS.maxPollAttempts, 1, K8S_LIMITS.maxPollAttempts);
  let pollRetryIntervalMs: number = K8S_DEFAULTS.pollRetryIntervalMs;
  const interval = given('poll_retry_interval');
  if (interval !== undefined) {
    const { minPollRetryIntervalMs: min, maxPollRetryIntervalMs: max } = K8S_LIMITS;
    const parsed = parseOptionDurationMs(interval, min, max);
    if (typeof parsed === 'number') pollRetryIntervalMs = parsed;
    else bad('poll_retry_interval', parsed);
  }

  let nodeName = given('node_name');
  const nodeNameEnv = given('node_name_env') ?? K8S_DEFAULTS.nodeNameEnv;
  if (!ENV_NAME.test(nodeNameEnv)) {
    bad('node_name_env', `must be an environment variable name, got ${JSON.stringify(nodeNameEnv)}`);
  }
  if (nodeName !== undefined) {
    const problem = hostProblem(nodeName);
    if (problem !== undefined) bad('node_name', problem);
  } else {
    const fromEnv = env[nodeNameEnv];
    nodeName = fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
    const problem = nodeName === undefined ? undefined : hostProblem(nodeName);
    if (problem !== undefined) bad('node_name_env', `the node name in ${nodeNameEnv} ${problem}`);
  }
  const kubeletHost = given('kubelet_host') ?? nodeName ?? K8S_DEFAULTS.kubeletHostWithoutNodeName;
  if (given('kubelet_host') !== undefined) {
    const problem = hostProblem(kubeletHost);
    if (problem !== undefined) bad('kubelet_host', problem);
  }

  const skipKubeletVerification = flag('skip_kubelet_verification');
  const settings: K8sSettings = {
    kubeletHost,
    kubeletPort,
    nodeName,
    kubeletCaPath: path('kubelet_ca_path', K8S_DEFAULTS.kubeletCaPath),
    skipKubeletVerification,
    tokenPath: path('token_path', K8S_DEFAULTS.tokenPath),
    maxPollAttempts,
    pollRetryIntervalMs,
    disableContainerSelectors: flag('disable_container_selectors'),
    podLevelFallback: flag('pod_level_fallback'),
  };
  if (skipKubeletVerification && given('kubelet_ca_path') !== undefined) {
    bad('kubelet_ca_path', 'cannot be used with skip_kubelet_verification=true (the CA would not be checked)');
  }
  if (problems.length > 0) throw new K8sOptionsError(problems);
  return Object.freeze(settings);
}
