import { SpiffeError, quote } from './errors.js';
import { TrustBundle, type BundleSource } from './bundle.js';
import type { TrustDomain } from './trust-domain.js';

/**
 * A set of trust bundles keyed by trust domain: the local bundle plus federated ones (go-spiffe `spiffebundle.Set`).
 * Adding a bundle replaces the one of the same trust domain.
 */
export class TrustBundleSet implements BundleSource, Iterable<TrustBundle> {
  readonly #bundles = new Map<string, TrustBundle>();

  constructor(bundles: Iterable<TrustBundle> = []) {
    for (const bundle of bundles) this.add(bundle);
  }

  /** Adds `bundle`, replacing any bundle of the same trust domain. */
  add(bundle: TrustBundle): this {
    if (!(bundle instanceof TrustBundle)) {
      throw new SpiffeError('ERR_BUNDLE_INVALID', 'bundle set accepts only TrustBundle values');
    }
    this.#bundles.set(bundle.trustDomain.name, bundle);
    return this;
  }

  /** The bundle of `trustDomain`, if held. */
  get(trustDomain: TrustDomain): TrustBundle | undefined {
    return this.#bundles.get(trustDomain.name);
  }

  /** True when a bundle of `trustDomain` is held. */
  has(trustDomain: TrustDomain): boolean {
    return this.#bundles.has(trustDomain.name);
  }

  /** Removes the bundle of `trustDomain`; true if there was one. */
  delete(trustDomain: TrustDomain): boolean {
    return this.#bundles.delete(trustDomain.name);
  }

  /** How many bundles are held. */
  get size(): number {
    return this.#bundles.size;
  }

  /** The bundles, sorted by trust domain name. */
  bundles(): TrustBundle[] {
    return [...this.#bundles.values()].sort((a, b) => (a.trustDomain.name < b.trustDomain.name ? -1 : 1));
  }

  [Symbol.iterator](): Iterator<TrustBundle> {
    return this.bundles()[Symbol.iterator]();
  }

  /**
   * The bundle of `trustDomain`.
   *
   * @throws SpiffeError `ERR_BUNDLE_NOT_FOUND` when none is held.
   */
  getBundleForTrustDomain(trustDomain: TrustDomain): TrustBundle {
    const bundle = this.get(trustDomain);
    if (bundle === undefined) {
      throw new SpiffeError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain ${quote(String(trustDomain))}`);
    }
    return bundle;
  }
}
