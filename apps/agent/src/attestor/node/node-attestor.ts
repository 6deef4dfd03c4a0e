import { type KeyObject, createPrivateKey, createPublicKey, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { pemBlocks, PEM_LABEL } from '@sigil/pki';
import { type NodeAttestationConfig } from '../../config.js';
import { type AttestationResponse } from '@sigil/agent-api';
import { type ServerClient } from '../../client/server-client.js';

/** The attestation requests of the server client. */
export type AttestationApi = Pick<ServerClient, 'attestJoinToken' | 'x509popChallenge' | 'attestX509pop'>;

/**
 * Attests this node to the server with the configured method and the agent's CSR (its new key, no SAN).
 *
 * - join token: the token is single-use; the server issues `spiffe://<td>/sigil/agent/join_token/<token id>`.
 * - x509pop (SPIRE's x509pop node attestor): the agent sends its certificate chain, the server answers with a random
 *   nonce, and the agent proves it holds the leaf's private key by signing it (ECDSA with SHA-256, DER signature;
 *   or RSA PKCS#1 v1.5 with SHA-256). The files are read at every attestation, so a renewed certificate on disk is
 *   used for the next re-attestation.
 */
export async function attestNode(
  api: AttestationApi,
  method: NodeAttestationConfig,
  csrPem: string,
): Promise<AttestationResponse> {
  if (method.method === 'join_token') return api.attestJoinToken(method.token, csrPem);
  const { chain, key } = await readX509popCredentials(method.certFile, method.keyFile);
  const challenge = await api.x509popChallenge(chain);
  return api.attestX509pop(challenge.challengeId, signX509popNonce(key, challenge.nonce), csrPem);
}

/** Signs the x509pop nonce with the leaf's key: ECDSA (DER) or RSA PKCS#1 v1.5, both over SHA-256. */
export function signX509popNonce(key: KeyObject, nonce: Uint8Array): Uint8Array {
  if (key.asymmetricKeyType !== 'ec' && key.asymmetricKeyType !== 'rsa') {
    throw new Error(`x509pop key: must be an EC or RSA key, got ${String(key.asymmetricKeyType)}`);
  }
  return new Uint8Array(sign('sha256', nonce, key));
}

/** Reads the x509pop certificate chain (PEM, leaf first) and the leaf's private key, and checks that they match. */
export async function readX509popCredentials(
  certFile: string,
  keyFile: string,
): Promise<{ chain: Uint8Array[]; key: KeyObject }> {
  const chain = pemBlocks(await readFile(certFile, 'utf8'))
    .filter((block) => block.label === PEM_LABEL.certificate)
    .map((block) => block.der);
  if (chain.length === 0) throw new Error(`x509pop certificate: ${certFile} holds no CERTIFICATE block`);
  const key = createPrivateKey(await readFile(keyFile, 'utf8'));
  const leaf = new X509Certificate(chain[0] as Uint8Array);
  const fromKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const fromLeaf = leaf.publicKey.export({ type: 'spki', format: 'der' });
  if (!fromKey.equals(fromLeaf)) {
    throw new Error(`x509pop key: ${keyFile} is not the private key of the first certificate of ${certFile}`);
  }
  return { chain, key };
}
