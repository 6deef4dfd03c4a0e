import { Code, ConnectError, type HandlerContext } from '@connectrpc/connect';
import { type RateLimitedLog, truncateForLog } from '@sigil/logging';
import { type Selector } from '@sigil/runtime';
import { WorkloadAttestationError } from '../../attestor/workload/workload-attestor.js';
import { PEER_CREDENTIALS, type PeerCredentials } from '../peer-credentials.js';
import { type AgentBundles } from './workload-responses.js';

/**
 * Finds the selectors of the calling process: the enabled workload attestors (`CompositeWorkloadAttestor`), behind
 * the per-uid attestation limit.
 */
export interface CallerAttestor {
  /**
   * Rejects when the caller cannot be attested, e.g. its pid exited or was reused, or when `signal` (the call's:
   * its client cancelled it) aborts before the attestation starts.
   */
  attest(caller: PeerCredentials, signal?: AbortSignal): Promise<readonly Selector[]>;
}

/**
 * How every service on the agent's socket (the Workload API, Envoy SDS) identifies its caller: the peer credentials
 * the kernel gave for the connection, attested by the enabled workload attestors. One implementation, so the two
 * services cannot drift apart on who a caller is or on what a failed attestation answers (`UNAVAILABLE`, as SPIRE).
 */
export class CallerAttestation {
  constructor(
    private readonly attestor: CallerAttestor,
    /** Failures, a few lines per uid and interval: every caller can fail as often as it calls. */
    private readonly limitedLog: Pick<RateLimitedLog, 'warn'>,
    private readonly logger: { debug(message: string): void },
  ) {}

  /** The caller's peer credentials, read from the kernel when its connection was accepted. */
  callerOf(context: HandlerContext): PeerCredentials {
    const caller = context.values.get(PEER_CREDENTIALS);
    if (caller === undefined) {
      throw new ConnectError('caller peer credentials are unavailable on this connection', Code.Internal);
    }
    return caller;
  }

  /** The caller's selectors; `UNAVAILABLE` when it cannot be attested (logged, rate limited per uid). */
  async attest(context: HandlerContext, method: string): Promise<readonly Selector[]> {
    const caller = this.callerOf(context);
    try {
      const selectors = await this.attestor.attest(caller, context.signal);
      this.logger.debug(`${method}: pid ${caller.pid} uid ${caller.uid} attested with ${selectors.length} selectors`);
      return selectors;
    } catch (error) {
      this.limitedLog.warn(`attestation failed, uid ${caller.uid}`, {
        msg: 'workload attestation failed',
        method,
        pid: caller.pid,
        uid: caller.uid,
        ...(error instanceof WorkloadAttestationError && error.attestor !== undefined && { attestor: error.attestor }),
        reason: truncateForLog((error as Error).message),
      });
      throw new ConnectError(`workload attestation failed: ${(error as Error).message}`, Code.Unavailable);
    }
  }
}

/** The agent's bundles, or `UNAVAILABLE` while it has none (not attested or not synced yet). */
export function readyBundles(cache: { bundles(): AgentBundles | undefined }): AgentBundles {
  const bundles = cache.bundles();
  if (bundles === undefined) {
    throw new ConnectError('the agent is not ready yet: it has no trust bundle', Code.Unavailable);
  }
  return bundles;
}
