import { open } from 'node:fs/promises';
import {
  K8S_PSAT_ATTESTOR,
  K8S_PSAT_TOKEN_MAX_LENGTH,
  k8sPsatClusterNameProblem,
  type K8sPsatAttestationBody,
} from '@sigil/agent-api';
import { checkNodeAttestorOptions, type NodeAttestor } from '../node-attestor.js';

/** Where Kubernetes projects the agent's token by default (SPIRE's default is `/var/run/secrets/tokens/spire-agent`). */
export const K8S_PSAT_DEFAULT_TOKEN_PATH = '/var/run/secrets/tokens/sigil-agent';

const OPTIONS = ['cluster', 'token_path'];

/**
 * Kubernetes projected service account token node attestation (SPIRE's agent `k8s_psat`): sends the cluster name and
 * the token Kubernetes projects into the agent's pod. The file is read at every attestation, since the kubelet
 * rotates projected tokens. Options `cluster` (required) and `token_path` (default {@link K8S_PSAT_DEFAULT_TOKEN_PATH}).
 *
 * @throws Error naming the option when the options are wrong
 */
export function k8sPsatAttestor(options: Readonly<Record<string, string>>): NodeAttestor {
  checkNodeAttestorOptions(K8S_PSAT_ATTESTOR.type, options, OPTIONS);
  const cluster = options['cluster'];
  if (cluster === undefined) throw new Error('k8s_psat attestor: option cluster is required');
  const problem = k8sPsatClusterNameProblem(cluster);
  if (problem !== undefined) throw new Error(`k8s_psat attestor: option cluster: ${problem}`);
  const tokenPath = options['token_path'] ?? K8S_PSAT_DEFAULT_TOKEN_PATH;
  return {
    type: K8S_PSAT_ATTESTOR.type,
    route: K8S_PSAT_ATTESTOR.route,
    evidence: async (): Promise<Omit<K8sPsatAttestationBody, 'csr'>> => ({
      cluster,
      token: await readK8sPsatToken(tokenPath),
    }),
  };
}

/**
 * Reads the projected token. Errors name the file and what is wrong with it, never its content (the token is a
 * bearer credential).
 *
 * @throws Error for an unreadable, empty or oversized file
 */
export async function readK8sPsatToken(path: string): Promise<string> {
  let bytes: Buffer;
  try {
    const file = await open(path, 'r');
    try {
      // One byte past the cap tells an oversized file from one exactly at it, without reading a huge file whole.
      const buffer = Buffer.alloc(K8S_PSAT_TOKEN_MAX_LENGTH + 1);
      const { bytesRead } = await file.read(buffer, 0, buffer.length, 0);
      bytes = buffer.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new Error(`k8s_psat token ${path}: cannot be read (${code})`, { cause: error });
  }
  if (bytes.length > K8S_PSAT_TOKEN_MAX_LENGTH) {
    throw new Error(`k8s_psat token ${path}: larger than ${K8S_PSAT_TOKEN_MAX_LENGTH} bytes, not a projected token`);
  }
  // A projected token file holds the JWT alone; a hand-written one may end with a newline.
  const token = bytes.toString('utf8').trim();
  if (token.length === 0) throw new Error(`k8s_psat token ${path}: is empty`);
  return token;
}
