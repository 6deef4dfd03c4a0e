import { type KeyObject, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { nodeCertificateFromDer } from '@sigil/spiffe';
import { readFile } from 'node:fs/promises';
import {
  X509POP_ATTESTOR,
  parseX509popChallenge,
  type X509popAnswerBody,
  type X509popChallengeRequestBody,
} from '@sigil/agent-api';
import { pemBlocks, PEM_LABEL } from '@sigil/pki';
import { checkNodeAttestorOptions, type NodeAttestor } from '../node-attestor.js';

const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

/**
 * x509pop node attestation (SPIRE's x509pop node attestor): the agent sends its certificate chain, the server answers
 * with a random nonce, and the agent proves it holds the leaf's private key by signing it (ECDSA with SHA-256, DER
 * signature; or RSA PKCS#1 v1.5 with SHA-256). The files are read at every attestation, so a renewed certificate on
 * disk is used for the next re-attestation. Options `cert_file` (PEM chain, leaf first) and `key_file`.
 */
export function x509popAttestor(options: Readonly<Record<string, string>>): NodeAttestor {
  checkNodeAttestorOptions(X509POP_ATTESTOR.type, options, ['cert_file', 'key_file']);
  const { cert_file: certFile, key_file: keyFile } = options;
  if (certFile === undefined || keyFile === undefined) {
    throw new Error('x509pop attestor: options cert_file and key_file are required');
  }
  return {
    type: X509POP_ATTESTOR.type,
    route: X509POP_ATTESTOR.route,
    evidence: async (challenge): Promise<Omit<X509popAnswerBody, 'csr'>> => {
      const { chain, key } = await readX509popCredentials(certFile, keyFile);
      const request: X509popChallengeRequestBody = { certificates: chain.map(toBase64) };
      const { challengeId, nonce } = parseX509popChallenge(await challenge(request));
      return { challenge_id: challengeId, signature: toBase64(signX509popNonce(key, nonce)) };
    },
  };
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
  const leaf = nodeCertificateFromDer(chain[0] as Uint8Array);
  const fromKey = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const fromLeaf = leaf.publicKey.export({ type: 'spki', format: 'der' });
  if (!fromKey.equals(fromLeaf)) {
    throw new Error(`x509pop key: ${keyFile} is not the private key of the first certificate of ${certFile}`);
  }
  return { chain, key };
}
