import { type BundleSource, type TrustBundle, type TrustBundleSet, type TrustDomain } from '@sigil/spiffe';
import { type FetchJwtSvidParams } from './client.js';
import { WorkloadApiError } from './errors.js';
import { type WorkloadJwtSvid } from './responses.js';
import { type SourceOptions, SourceWatch } from './source-watch.js';

/** Options of {@link JwtSource.create}. */
export type JwtSourceOptions = SourceOptions;

/**
 * The JWT bundles of the workload's trust domain and federated ones, kept up to date from a `FetchJWTBundles` watch,
 * plus JWT-SVIDs fetched on demand (go-spiffe `workloadapi.JWTSource`). A `BundleSource` for
 * `parseAndValidateJwtSvid` and {@link validateBearerJwtSvid}.
 *
 * @example
 * ```ts
 * const source = await JwtSource.create();
 * const { token } = await source.fetchJwtSvid({ audience: 'spiffe://example.org/api' });
 * ```
 */
export class JwtSource implements BundleSource {
  private bundles: TrustBundleSet | undefined;
  private watch: SourceWatch | undefined;
  private readonly listeners = new Set<(bundles: TrustBundleSet) => void>();

  private constructor() {}

  /**
   * Opens the watch and resolves once the first JWT bundles have arrived.
   *
   * @throws WorkloadApiError `ERR_ADDRESS_INVALID`, `ERR_TIMEOUT`, or the `ERR_RPC_FAILED` that ended the watch;
   * the signal's reason when `signal` aborts.
   */
  static async create(options: JwtSourceOptions = {}): Promise<JwtSource> {
    const source = new JwtSource();
    source.watch = await SourceWatch.start(
      'jwt source',
      options,
      (client) => client.watchJwtBundles.bind(client),
      (bundles) => source.apply(bundles),
    );
    return source;
  }

  /** Fetches a JWT-SVID for `audience` through the Workload API (of `spiffeId`, or the default identity). */
  async fetchJwtSvid(params: FetchJwtSvidParams): Promise<WorkloadJwtSvid> {
    return this.running().client.fetchJwtSvid(params);
  }

  /** Fetches JWT-SVIDs for `audience`: one per identity, or only `spiffeId`'s. */
  async fetchJwtSvids(params: FetchJwtSvidParams): Promise<WorkloadJwtSvid[]> {
    return this.running().client.fetchJwtSvids(params);
  }

  /**
   * The current JWT bundle of `trustDomain`.
   *
   * @throws SpiffeError `ERR_BUNDLE_NOT_FOUND` when the workload holds none; WorkloadApiError `ERR_CLOSED`.
   */
  getBundleForTrustDomain(trustDomain: TrustDomain): TrustBundle {
    this.running();
    return (this.bundles as TrustBundleSet).getBundleForTrustDomain(trustDomain);
  }

  /** Every current JWT bundle, by trust domain. */
  getBundles(): TrustBundleSet {
    this.running();
    return this.bundles as TrustBundleSet;
  }

  /** Calls `listener` with the new bundles after every update; returns the function that stops it. */
  onUpdate(listener: (bundles: TrustBundleSet) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** True once `close()` has been called. */
  get isClosed(): boolean {
    return this.watch?.isStopped ?? false;
  }

  /** Stops the watch (and the client, if the source made it); the methods then throw `ERR_CLOSED`. */
  async close(): Promise<void> {
    this.listeners.clear();
    await this.watch?.stop();
  }

  private apply(bundles: TrustBundleSet): void {
    this.bundles = bundles;
    for (const listener of this.listeners) listener(bundles);
  }

  private running(): SourceWatch {
    if (this.watch === undefined || this.watch.isStopped)
      throw new WorkloadApiError('ERR_CLOSED', 'jwt source is closed');
    return this.watch;
  }
}
