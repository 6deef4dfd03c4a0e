import type { AttestationRequestBody, NodeAttestorName } from './common.js';

/**
 * x509pop node attestation (SPIRE's `x509pop`): the agent presents a certificate chain, the server answers with a
 * nonce, the agent signs it with the leaf's key.
 */
export const X509POP_ATTESTOR: NodeAttestorName = Object.freeze({ type: 'x509pop', route: 'x509pop' });

/** `POST /agent/v1/attest/x509pop/challenge`. */
export interface X509popChallengeRequestBody {
  /** Base64 DER certificates: the leaf, then intermediates. */
  readonly certificates: readonly string[];
}

/** The answer to {@link X509popChallengeRequestBody}. */
export interface X509popChallengeBody {
  readonly challenge_id: string;
  /** Base64 of the random bytes to sign. */
  readonly nonce: string;
}

/** `POST /agent/v1/attest/x509pop`: the answer to a challenge. */
export interface X509popAnswerBody extends AttestationRequestBody {
  readonly challenge_id: string;
  /** Base64 signature over the nonce with the leaf's key (ECDSA with SHA-256, DER; or RSA PKCS#1 v1.5 SHA-256). */
  readonly signature: string;
}

/** The challenge as the agent uses it. */
export interface X509popChallenge {
  readonly challengeId: string;
  readonly nonce: Uint8Array;
}

/**
 * Reads the server's challenge.
 *
 * @throws Error when `challenge_id` or `nonce` is not a string
 */
export function parseX509popChallenge(body: unknown): X509popChallenge {
  const { challenge_id: challengeId, nonce } = (body ?? {}) as Partial<Record<keyof X509popChallengeBody, unknown>>;
  if (typeof challengeId !== 'string' || typeof nonce !== 'string') {
    throw new Error('server answer: x509pop challenge must have challenge_id and nonce strings');
  }
  return { challengeId, nonce: new Uint8Array(Buffer.from(nonce, 'base64')) };
}
