import type { AuthorityKind } from './ca-key.js';

/** What happened to a CA key: SPIRE's prepared → active → old life, plus pruning and the operator's taint/revoke. */
export type AuthorityTransition = 'prepared' | 'activated' | 'retired' | 'pruned' | 'tainted' | 'revoked';

/**
 * Why an update of the upstream bundle (upstream authority sigil) was not followed: the local agent's Workload API
 * stream (the trigger) failed (`stream`), the upstream server could not be asked or authenticated, or answered
 * something unreadable (`upstream`), its roots were refused (`refused`: not self-signed CA certificates, too many,
 * or dropping the root our active or prepared key chains to), storing them failed (`store`), or asking the upstream
 * server for its tainted keys failed (`taints`). The last good roots stay published in every case. `jwt_publish`: the
 * upstream server did not take a new JWT key of ours (refused or not reached); our JWT keys stay as they are.
 */
export type UpstreamBundleFailure = 'stream' | 'upstream' | 'refused' | 'store' | 'taints' | 'jwt_publish';

/**
 * The authority's metrics hook. The CA calls it; the health module implements it with prom-client counters and
 * histograms and provides it under {@link AUTHORITY_METRICS} from a global module. Without a provider the
 * authority reports to {@link noAuthorityMetrics}.
 */
export interface AuthorityMetrics {
  /** An SVID was signed; `seconds` is how long signing took. */
  svidSigned(kind: AuthorityKind, seconds: number): void;
  /** This replica changed the key journal. */
  rotationEvent(kind: AuthorityKind, transition: AuthorityTransition): void;
  /** Upstream authority sigil: the upstream bundle's roots were followed at `at`; `changed` when ours changed. */
  upstreamBundleFollowed(at: Date, changed: boolean): void;
  /** Upstream authority sigil: an update of the upstream bundle failed; the last good roots stay. */
  upstreamBundleFailed(reason: UpstreamBundleFailure): void;
  /** Upstream authority sigil: the upstream server tainted the key that signed our CA, and we moved to a new CA. */
  upstreamTaintRotation(): void;
}

/** Nest injection token of the {@link AuthorityMetrics} implementation. */
export const AUTHORITY_METRICS = Symbol('AUTHORITY_METRICS');

/** Reports nowhere: the default until a metrics provider is registered. */
export const noAuthorityMetrics: AuthorityMetrics = {
  svidSigned: () => undefined,
  rotationEvent: () => undefined,
  upstreamBundleFollowed: () => undefined,
  upstreamBundleFailed: () => undefined,
  upstreamTaintRotation: () => undefined,
};
