import {
  type BundleSource,
  type TrustBundle,
  type TrustBundleSet,
  type TrustDomain,
  type X509Svid,
} from '@sigil/spiffe';
import { WorkloadApiError } from './errors.js';
import { type X509Context } from './responses.js';
import { type SourceOptions, SourceWatch } from './source-watch.js';

/** Options of {@link X509Source.create}. */
export interface X509SourceOptions extends SourceOptions {
  /** Chooses the SVID `getX509Svid()` returns; default: the first, the workload's default identity. */
  readonly picker?: (svids: readonly X509Svid[]) => X509Svid;
}

/**
 * The workload's current X.509-SVIDs and X.509 bundles, kept up to date from a `FetchX509SVID` watch (go-spiffe
 * `workloadapi.X509Source`). It is the source the TLS helpers present and verify with, and a `BundleSource` for
 * `verifyX509Svid`.
 *
 * @example
 * ```ts
 * const source = await X509Source.create({ timeoutMs: 30_000 });
 * console.log(source.getX509Svid().spiffeId.toString());
 * await source.close();
 * ```
 */
export class X509Source implements BundleSource {
  private context: X509Context | undefined;
  private watch: SourceWatch | undefined;
  private readonly listeners = new Set<(context: X509Context) => void>();

  private constructor(private readonly picker: (svids: readonly X509Svid[]) => X509Svid) {}

  /**
   * Opens the watch and resolves once the first X.509 context has arrived.
   *
   * @throws WorkloadApiError `ERR_ADDRESS_INVALID`, `ERR_TIMEOUT`, or the `ERR_RPC_FAILED` that ended the watch;
   * the signal's reason when `signal` aborts.
   */
  static async create(options: X509SourceOptions = {}): Promise<X509Source> {
    const source = new X509Source(options.picker ?? ((svids) => svids[0] as X509Svid));
    source.watch = await SourceWatch.start(
      'x509 source',
      options,
      (client) => client.watchX509Context.bind(client),
      (context) => source.apply(context),
    );
    return source;
  }

  /**
   * The SVID to present: the picker's choice among the current SVIDs.
   *
   * @throws WorkloadApiError `ERR_CLOSED` after `close()`.
   */
  getX509Svid(): X509Svid {
    const svids = this.current().svids;
    const svid = this.picker(svids);
    if (!svids.includes(svid))
      throw new WorkloadApiError('ERR_ARGUMENT_INVALID', 'x509 source: picker must return one of the svids');
    return svid;
  }

  /** Every current SVID, the default identity first. */
  getX509Svids(): readonly X509Svid[] {
    return this.current().svids;
  }

  /**
   * The current X.509 bundle of `trustDomain`.
   *
   * @throws SpiffeError `ERR_BUNDLE_NOT_FOUND` when the workload holds none; WorkloadApiError `ERR_CLOSED`.
   */
  getBundleForTrustDomain(trustDomain: TrustDomain): TrustBundle {
    return this.current().bundles.getBundleForTrustDomain(trustDomain);
  }

  /** Every current X.509 bundle, by trust domain. */
  getBundles(): TrustBundleSet {
    return this.current().bundles;
  }

  /** Calls `listener` with the new context after every update; returns the function that stops it. */
  onUpdate(listener: (context: X509Context) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** True once `close()` has been called. */
  get isClosed(): boolean {
    return this.watch?.isStopped ?? false;
  }

  /** Stops the watch (and the client, if the source made it); the getters then throw `ERR_CLOSED`. */
  async close(): Promise<void> {
    this.listeners.clear();
    await this.watch?.stop();
  }

  private apply(context: X509Context): void {
    this.context = context;
    for (const listener of this.listeners) listener(context);
  }

  private current(): X509Context {
    if (this.isClosed) throw new WorkloadApiError('ERR_CLOSED', 'x509 source is closed');
    return this.context as X509Context;
  }
}
