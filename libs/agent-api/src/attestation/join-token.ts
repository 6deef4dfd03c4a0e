import type { AttestationRequestBody, NodeAttestorName } from './common.js';

/** Join token node attestation (SPIRE's `join_token`): a single-use token printed by `token generate`. */
export const JOIN_TOKEN_ATTESTOR: NodeAttestorName = Object.freeze({ type: 'join_token', route: 'join-token' });

/** Longest join token the server reads. */
export const JOIN_TOKEN_MAX_LENGTH = 256;

/** `POST /agent/v1/attest/join-token`. */
export interface JoinTokenAttestationBody extends AttestationRequestBody {
  /** The join token (a secret). */
  readonly token: string;
}
