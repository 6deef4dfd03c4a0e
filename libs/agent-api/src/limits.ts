/**
 * Limits of the agent API that both sides must agree on: the server refuses past them, the agent never sends past
 * them. Limits that already have a home (the CSR size in @sigil/pki, the JWT audience rule in @sigil/runtime) are
 * re-exported from it, not copied.
 */

export { CSR_MAX_BYTES } from '@sigil/pki';
export { JWT_SVID_MAX_AUDIENCES, JWT_SVID_MAX_AUDIENCE_BYTES } from '@sigil/runtime';

/** Most CSRs one `POST /agent/v1/svids/x509` takes (SPIRE's agent sends at most its per-IP CSR limit, 500, too). */
export const MAX_CSR_BATCH = 500;

/**
 * X.509 batches sigil-agent keeps at the server at once: it prepares the next batch and checks the last one while the
 * server signs. Below the server's default `agent_sign_max_in_flight` (4), which refuses more with 429.
 */
export const AGENT_SIGN_BATCHES_IN_FLIGHT = 2;
