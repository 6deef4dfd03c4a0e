import type { AttestationRequestBody, AttestationResponse } from '@sigil/agent-api';
import type { ServerClient } from '../../client/server-client.js';

/**
 * A node attestor, the agent side (SPIRE's agent `nodeattestor` plug-in): it produces the evidence that proves this
 * node's identity to the server's attestor of the same type, and answers that attestor's challenge if it asks one.
 * The agent adds its CSR, sends the request and keeps the SVID; everything else (retries, storage, re-attestation)
 * lives outside the plug-in.
 *
 * An attestor is a folder beside this file, listed once in `NODE_ATTESTORS` (node-attestors.ts).
 */
export interface NodeAttestor {
  /** SPIRE's plug-in name (`join_token`, `x509pop`), as the server's attestor and the stored state name it. */
  readonly type: string;
  /** The path segment of its routes: `POST /agent/v1/attest/<route>` (and `…/<route>/challenge`). */
  readonly route: string;
  /**
   * The evidence of the attestation request (its fields besides `csr`). An attestor whose server side asks a
   * challenge first sends its challenge request with `challenge` and answers what comes back.
   */
  evidence(challenge: (request: object) => Promise<unknown>): Promise<object>;
  /**
   * Set for a single-use credential (a join token): the node cannot attest with it again once it is used, so the
   * agent remembers its digest and tells the operator how to get another.
   */
  readonly singleUse?: SingleUseCredential;
}

export interface SingleUseCredential {
  /** SHA-256 (hex) of the credential: what the agent stores instead of the credential. */
  readonly sha256: string;
  /** What it is, for messages: `join token`. */
  readonly name: string;
  /** How to get another one: `generate a new one with 'sigil-server token generate'`. */
  readonly renewal: string;
  /** The flag that passes it: `--join-token`. */
  readonly flag: string;
}

/** The attestation requests of the server client. */
export type AttestationApi = Pick<ServerClient, 'attest' | 'attestationChallenge'>;

/** Attests this node with `attestor` and the agent's CSR (its new key, no SAN). */
export async function attestNode(
  api: AttestationApi,
  attestor: NodeAttestor,
  csrPem: string,
): Promise<AttestationResponse> {
  const evidence = await attestor.evidence((request) => api.attestationChallenge(attestor.route, request));
  const body: AttestationRequestBody = { ...evidence, csr: csrPem };
  return api.attest(attestor.route, body);
}

/**
 * Refuses options an attestor does not take (`--node-attestor k8s_psat:token_pth=…` would otherwise fall back to the
 * default path without a word): every attestor factory calls it first.
 *
 * @throws Error `node attestor <type>: unknown option "<name>" (known: …)`
 */
export function checkNodeAttestorOptions(
  type: string,
  options: Readonly<Record<string, string>>,
  known: readonly string[],
): void {
  const unknown = Object.keys(options).find((name) => !known.includes(name));
  if (unknown !== undefined) {
    const names = known.length > 0 ? known.join(', ') : 'none';
    throw new Error(`node attestor ${type}: unknown option ${JSON.stringify(unknown)} (known: ${names})`);
  }
}
