/**
 * Node attestation on the wire, common to every attestor: an agent without an SVID sends `POST
 * /agent/v1/attest/<route>` with its CSR and the attestor's evidence; an attestor with a challenge step is first
 * asked `POST /agent/v1/attest/<route>/challenge`. Each attestor's own messages are in a file of this folder.
 */

/** Where the node attestation routes live; `<route>` is the attestor's route segment. */
export const ATTESTATION_PATH_PREFIX = '/agent/v1/attest';

/** `POST /agent/v1/attest/<route>`: the attestation request of the attestor at `route`. */
export const attestationPath = (route: string): string => `${ATTESTATION_PATH_PREFIX}/${route}`;

/** `POST /agent/v1/attest/<route>/challenge`: the challenge step of the attestor at `route`, when it has one. */
export const attestationChallengePath = (route: string): string => `${ATTESTATION_PATH_PREFIX}/${route}/challenge`;

/**
 * How an attestor is named: `type` is SPIRE's plug-in name (the agents' attestation type and the first segment of
 * the agent ID after `sigil/agent/`), `route` its segment in the attestation routes.
 */
export interface NodeAttestorName {
  readonly type: string;
  readonly route: string;
}

/** What every attestation request carries besides the attestor's evidence. */
export interface AttestationRequestBody {
  /** PEM PKCS#10 request for the agent's new key; the server assigns the SPIFFE ID. */
  readonly csr: string;
}
