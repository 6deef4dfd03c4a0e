import { createHash } from 'node:crypto';
import { JOIN_TOKEN_ATTESTOR, type JoinTokenAttestationBody } from '@sigil/agent-api';
import { checkNodeAttestorOptions, type NodeAttestor } from '../node-attestor.js';

/** SHA-256 of a join token in hex: what the agent remembers of a token instead of the token itself. */
export function joinTokenDigest(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Join token node attestation: the token is single-use; the server issues
 * `spiffe://<td>/sigil/agent/join_token/<token id>`. Option `token`.
 */
export function joinTokenAttestor(options: Readonly<Record<string, string>>): NodeAttestor {
  checkNodeAttestorOptions(JOIN_TOKEN_ATTESTOR.type, options, ['token']);
  const token = options['token'];
  if (token === undefined) throw new Error('join token attestor: option token is required');
  return {
    type: JOIN_TOKEN_ATTESTOR.type,
    route: JOIN_TOKEN_ATTESTOR.route,
    evidence: async (): Promise<Omit<JoinTokenAttestationBody, 'csr'>> => ({ token }),
    singleUse: {
      sha256: joinTokenDigest(token),
      name: 'join token',
      renewal: "generate a new one with 'sigil-server token generate'",
      flag: '--join-token',
    },
  };
}
