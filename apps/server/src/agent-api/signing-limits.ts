import { MAX_CSR_BATCH } from '@sigil/agent-api';

/**
 * The agent API's signing limits, in one place for the config loader, the signing budget and the DTOs. Each is per
 * agent and per server replica: N replicas allow an agent N times these rates (the state lives in each replica's
 * memory).
 */

export { MAX_CSR_BATCH };

/**
 * X.509-SVID CSRs per second per agent (`agent_sign_rate`), counted per CSR of a batch, duplicates included: SPIRE
 * charges `len(params)` of a BatchNewX509SVID against the same 500 per second per address.
 */
export const DEFAULT_AGENT_SIGN_RATE = 500;
/**
 * CSRs an agent may have signed at once after a quiet spell (`agent_sign_burst`): an agent starting with a few
 * thousand entries has them signed without waiting. At least {@link MAX_CSR_BATCH}, or a full batch could never pass.
 */
export const DEFAULT_AGENT_SIGN_BURST = 5_000;
/** JWT-SVIDs per second per agent (`agent_jwt_sign_rate`): their own budget, so JWT work never starves X.509. */
export const DEFAULT_AGENT_JWT_SIGN_RATE = 100;
/** JWT-SVIDs an agent may have signed at once (`agent_jwt_sign_burst`): a host's workloads starting together. */
export const DEFAULT_AGENT_JWT_SIGN_BURST = 1_000;
/**
 * X.509-SVID batches one agent may have in progress at once (`agent_sign_max_in_flight`); Sigil's agent sends at most
 * `AGENT_SIGN_BATCHES_IN_FLIGHT` (2) at a time, so more is a misbehaving or hostile caller holding the server's memory
 * and signing queue. Set to 1, an agent's second batch is refused (429) and it backs off: signing gets slower.
 */
export const DEFAULT_AGENT_SIGN_MAX_IN_FLIGHT = 4;

/**
 * The agent's own SVID renewal: its own small bucket, never charged by workload signing, so an agent whose X.509 or
 * JWT budget is spent still renews. An agent renews at half its SVID's lifetime; a few retries fit easily
 * (`agent_renew_rate`, `agent_renew_burst`).
 */
export const DEFAULT_AGENT_RENEW_RATE = 0.2;
export const DEFAULT_AGENT_RENEW_BURST = 10;

/**
 * CSRs and JWT requests waiting in the server's signing queue, over every agent. Past it, signing answers 503 (the
 * agent tries another replica or backs off): about five seconds of one core's signing (`signing_queue_max_items`, at
 * least a full batch, or a batch could never be queued).
 */
export const DEFAULT_SIGNING_QUEUE_MAX_ITEMS = 20_000;
/**
 * CSRs of one batch signed in one turn of the fair queue: a 1-CSR request of another agent waits for at most one
 * such chunk per busy agent (a few milliseconds each), not for whole 500-CSR batches.
 */
export const SIGNING_CHUNK_SIZE = 32;
/**
 * Chunks in progress at once without signing workers. X.509 chunks then run on the main thread; JWT-SVIDs are
 * signed by WebCrypto, off it, so several overlap. At most one chunk is started per turn of the event loop
 * (fair-queue.ts). With signing workers: {@link signingConcurrency}.
 */
export const SIGNING_CONCURRENCY = 4;

/** Most signing worker threads (`signing_workers`). */
export const MAX_SIGNING_WORKERS = 256;

/**
 * Signing worker threads by default: one per CPU the process may run on, so X.509-SVIDs are signed on every core;
 * none on a single CPU, where a worker would share the one core with the event loop and only add the hand-over.
 */
export function defaultSigningWorkers(cpus: number): number {
  return cpus > 1 ? Math.min(cpus, MAX_SIGNING_WORKERS) : 0;
}

/**
 * Chunks of the fair queue in progress at once: with workers, two per worker (one signing, the next one already
 * handed over, so no worker waits for the event loop between chunks), and never fewer than without.
 */
export function signingConcurrency(signingWorkers: number): number {
  return Math.max(SIGNING_CONCURRENCY, 2 * signingWorkers);
}
