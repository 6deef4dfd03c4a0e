import { SpiffeId, type TrustDomain } from '@sigil/spiffe';

/**
 * Sigil's own SPIFFE IDs, in one place: every server is `spiffe://<td>/sigil/server`, every agent
 * `spiffe://<td>/sigil/agent/<attestation method>/<method's own segments>`. Paths under `/sigil/` are reserved for
 * them: no registration entry and no join token may name one for a workload (SPIRE reserves `/spire/` the same way).
 */

/** Every path under this prefix is reserved for Sigil's servers and agents. */
export const SIGIL_RESERVED_PATH_PREFIX = '/sigil/';

/** The path of every agent's SPIFFE ID starts with this. */
export const SIGIL_AGENT_PATH_PREFIX = '/sigil/agent/';

const SERVER_SEGMENTS = ['sigil', 'server'] as const;

/** `spiffe://<td>/sigil/server`: the ID every Sigil server presents to agents (one for all replicas). */
export function sigilServerId(trustDomain: TrustDomain): SpiffeId {
  return SpiffeId.fromSegments(trustDomain, ...SERVER_SEGMENTS);
}

/**
 * `spiffe://<td>/sigil/agent/<method>/<segments…>`, e.g. `sigilAgentId(td, 'join_token', tokenId)`. Each segment is
 * checked as a SPIFFE path segment.
 */
export function sigilAgentId(trustDomain: TrustDomain, method: string, ...segments: string[]): SpiffeId {
  return SpiffeId.fromSegments(trustDomain, 'sigil', 'agent', method, ...segments);
}

/** Whether `id` names a Sigil agent of `trustDomain` (its path is under `/sigil/agent/`). */
export function isSigilAgentId(id: SpiffeId, trustDomain: TrustDomain): boolean {
  return id.isMemberOf(trustDomain) && id.path.startsWith(SIGIL_AGENT_PATH_PREFIX);
}

/** Whether a SPIFFE ID path is reserved for Sigil's servers and agents. */
export function isReservedSigilPath(path: string): boolean {
  return path.startsWith(SIGIL_RESERVED_PATH_PREFIX);
}
