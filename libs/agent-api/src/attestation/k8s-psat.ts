import type { AttestationRequestBody, NodeAttestorName } from './common.js';

/**
 * Kubernetes projected service account token node attestation (SPIRE's `k8s_psat`): the agent, running in a pod,
 * sends the cluster's name and the token Kubernetes projected into its pod; the server asks the cluster's API server
 * (TokenReview) whose token it is, then reads the pod and its node.
 */
export const K8S_PSAT_ATTESTOR: NodeAttestorName = Object.freeze({ type: 'k8s_psat', route: 'k8s-psat' });

/**
 * Longest token the server reads, in characters (and the largest token file the agent reads, in bytes). A projected
 * token is a JWT of a fixed set of claims, about 1 KB; the cap leaves room for long names and issuers.
 */
export const K8S_PSAT_TOKEN_MAX_LENGTH = 16 * 1024;

/** Longest cluster name: it is a segment of the agent ID and a selector value. */
export const K8S_PSAT_CLUSTER_MAX_LENGTH = 128;

const CLUSTER_NAME = /^[A-Za-z0-9._-]+$/;

/**
 * The rule of a cluster name, on both sides: a SPIFFE ID path segment (letters, digits, `.`, `_`, `-`; not `.` or
 * `..`) of at most {@link K8S_PSAT_CLUSTER_MAX_LENGTH} characters, since it becomes
 * `spiffe://<td>/sigil/agent/k8s_psat/<cluster>/<node uid>`. Returns the problem, or undefined for a good name.
 */
export function k8sPsatClusterNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > K8S_PSAT_CLUSTER_MAX_LENGTH) return `must be at most ${K8S_PSAT_CLUSTER_MAX_LENGTH} characters`;
  if (!CLUSTER_NAME.test(name) || name === '.' || name === '..') {
    return `must be letters, digits, '.', '_' or '-' (a SPIFFE ID path segment), got ${JSON.stringify(name)}`;
  }
  return undefined;
}

/** `POST /agent/v1/attest/k8s-psat`: SPIRE's `PSATAttestationData` plus the CSR. */
export interface K8sPsatAttestationBody extends AttestationRequestBody {
  /** The cluster the agent runs in, as the server's `k8s_psat` attestor names it. */
  readonly cluster: string;
  /** The projected service account token (a secret: a bearer credential until it expires). */
  readonly token: string;
}
