import { k8sPsatClusterNameProblem } from '@sigil/agent-api';
import { NodeAttestorOptionError } from '../node-attestor.js';

/** The options of `--node-attestor k8s_psat:…`, SPIRE's names; list values are `;`-separated. */
export const K8S_PSAT_OPTION_NAMES = [
  'cluster',
  'service_account_allow_list',
  'audience',
  'kube_config_file',
  'allowed_pod_label_keys',
  'allowed_node_label_keys',
] as const;

/** The audience projected tokens must be minted for when `audience` is not set (SPIRE's is `spire-server`). */
export const K8S_PSAT_DEFAULT_AUDIENCE = 'sigil-server';

/** The checked options. */
export interface K8sPsatOptions {
  readonly cluster: string;
  /** `<namespace>:<service account>` names allowed to attest. */
  readonly serviceAccounts: ReadonlySet<string>;
  readonly audience: string;
  /** Undefined: the in-cluster configuration. */
  readonly kubeConfigFile: string | undefined;
  readonly allowedPodLabelKeys: ReadonlySet<string>;
  readonly allowedNodeLabelKeys: ReadonlySet<string>;
}

// Kubernetes object name rules (k8s.io/apimachinery validation): a DNS-1123 label for namespaces, a DNS-1123
// subdomain for service accounts and label key prefixes, a qualified name for the rest of a label key.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

export const isNamespace = (name: string): boolean => name.length <= 63 && DNS_LABEL.test(name);
const isServiceAccountName = (name: string): boolean => name.length <= 253 && DNS_SUBDOMAIN.test(name);
/** A pod or node name (DNS-1123 subdomain): checked before it goes into an API path. */
export const isObjectName = (name: string): boolean => name.length <= 253 && DNS_SUBDOMAIN.test(name);

/** A label key: `[<DNS subdomain prefix>/]<name>` with a name of at most 63 characters. */
export function isLabelKey(key: string): boolean {
  const slash = key.lastIndexOf('/');
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return false;
  return name.length <= 63 && QUALIFIED_NAME.test(name);
}

/** A `;`-separated list: empty items are refused (a stray `;` is a typo, not an intent). */
function listOption(options: Readonly<Record<string, string>>, name: string): string[] {
  const text = options[name];
  if (text === undefined) return [];
  const items = text.split(';').map((item) => item.trim());
  if (items.some((item) => item === '')) {
    throw new NodeAttestorOptionError(
      name,
      `must be items separated by ';' with none empty, got ${JSON.stringify(text)}`,
    );
  }
  return items;
}

function labelKeys(options: Readonly<Record<string, string>>, name: string): Set<string> {
  const keys = listOption(options, name);
  const bad = keys.find((key) => !isLabelKey(key));
  if (bad !== undefined) {
    throw new NodeAttestorOptionError(name, `${JSON.stringify(bad)} is not a Kubernetes label key ([prefix/]name)`);
  }
  return new Set(keys);
}

/**
 * Checks the options of the server's `k8s_psat` attestor.
 *
 * @throws NodeAttestorOptionError naming the option and what is wrong with it
 */
export function parseK8sPsatOptions(options: Readonly<Record<string, string>>): K8sPsatOptions {
  const cluster = options['cluster'];
  if (cluster === undefined) {
    throw new NodeAttestorOptionError(
      'cluster',
      'required: the name agents of this cluster give (k8s_psat is enabled once per cluster)',
    );
  }
  const clusterProblem = k8sPsatClusterNameProblem(cluster);
  if (clusterProblem !== undefined) throw new NodeAttestorOptionError('cluster', clusterProblem);

  const accounts = listOption(options, 'service_account_allow_list');
  if (accounts.length === 0) {
    throw new NodeAttestorOptionError(
      'service_account_allow_list',
      "required: the agents' service accounts as <namespace>:<name>, separated by ';'",
    );
  }
  for (const account of accounts) {
    const [namespace, name, ...rest] = account.split(':');
    if (
      rest.length > 0 ||
      namespace === undefined ||
      name === undefined ||
      !isNamespace(namespace) ||
      !isServiceAccountName(name)
    ) {
      throw new NodeAttestorOptionError(
        'service_account_allow_list',
        `${JSON.stringify(account)} is not <namespace>:<service account name> (Kubernetes names)`,
      );
    }
  }

  const audience = options['audience'] ?? K8S_PSAT_DEFAULT_AUDIENCE;
  if (!/^[\x21-\x7e]{1,256}$/.test(audience)) {
    throw new NodeAttestorOptionError(
      'audience',
      `must be 1 to 256 printable characters without spaces, got ${JSON.stringify(audience)}`,
    );
  }
  const kubeConfigFile = options['kube_config_file'];
  if (kubeConfigFile !== undefined && kubeConfigFile.trim() === '') {
    throw new NodeAttestorOptionError(
      'kube_config_file',
      'must be a path (leave it out for the in-cluster configuration)',
    );
  }
  return {
    cluster,
    serviceAccounts: new Set(accounts),
    audience,
    kubeConfigFile,
    allowedPodLabelKeys: labelKeys(options, 'allowed_pod_label_keys'),
    allowedNodeLabelKeys: labelKeys(options, 'allowed_node_label_keys'),
  };
}
