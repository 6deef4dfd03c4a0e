import type { BundleFetchError } from './bundle-endpoint-client.js';

/**
 * The federation bundle fetcher's metrics hook, implemented by the health module's MetricsService and provided under
 * {@link FEDERATION_METRICS} from a global module; without a provider the fetcher reports to
 * {@link noFederationMetrics}.
 */
export interface FederationMetrics {
  /** A fetch of `trustDomain`'s bundle succeeded at `at`; `changed` when the bundle stored changed. */
  bundleFetched(trustDomain: string, at: Date, changed: boolean): void;
  /** A fetch of `trustDomain`'s bundle failed; the last good bundle stays. */
  bundleFetchFailed(trustDomain: string, reason: BundleFetchError['reason']): void;
}

/** Nest injection token of the {@link FederationMetrics} implementation. */
export const FEDERATION_METRICS = Symbol('FEDERATION_METRICS');

export const noFederationMetrics: FederationMetrics = {
  bundleFetched: () => undefined,
  bundleFetchFailed: () => undefined,
};
