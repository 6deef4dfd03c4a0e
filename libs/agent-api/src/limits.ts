/**
 * Limits of the agent API that both sides must agree on: the server refuses past them, the agent never sends past
 * them.
 */

/** Most CSRs one `POST /agent/v1/svids/x509` takes (SPIRE's agent sends at most its per-IP CSR limit, 500, too). */
export const MAX_CSR_BATCH = 500;
