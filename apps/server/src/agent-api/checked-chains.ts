import { createHash } from 'node:crypto';

/** The outcome of checking a certificate chain, and when it holds: every certificate of the chain is valid then. */
export interface CheckedChain<T> {
  readonly value: T;
  readonly validFromMs: number;
  readonly validUntilMs: number;
  /** False for an outcome not to remember (it is returned all the same); remembered by default. */
  readonly remember?: boolean;
}

/**
 * Outcomes of certificate chain checks that passed, by the chain's DER bytes (and a scope, such as the bundle they
 * were checked against), for checks that depend on nothing else but the time: parsing a chain in full with
 * @peculiar/x509 costs milliseconds, and a caller presenting the same chain again (an agent's SVID on each new
 * connection, an x509pop certificate on each attestation) gets the remembered outcome while the time is inside every
 * certificate's validity; otherwise the chain is checked again, with the errors a first check gives. Failures are
 * not remembered. Bounded: the least recently used is forgotten first, and a forgotten chain only costs one check
 * more.
 */
export class CheckedChains<T> {
  private readonly entries = new Map<string, CheckedChain<T>>();

  constructor(private readonly maxEntries: number) {
    if (!(maxEntries >= 1)) throw new RangeError('checked chains: maxEntries must be at least 1');
  }

  /** Chains remembered (for tests). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The outcome for `chain` (DER, in the order checked) in `scope`: remembered, or from `check`, which throws when
   * the chain does not pass.
   */
  get(chain: readonly Uint8Array[], nowMs: number, check: () => CheckedChain<T>, scope = ''): T {
    const key = chainKey(chain, scope);
    const known = this.remembered(key, nowMs);
    if (known !== undefined) return known.value;
    const checked = check();
    if (checked.remember === false) return checked.value;
    this.entries.set(key, checked);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    return checked.value;
  }

  /** The remembered outcome for `chain` in `scope` at `nowMs`, if there is one; nothing is checked. */
  find(chain: readonly Uint8Array[], nowMs: number, scope = ''): T | undefined {
    return this.remembered(chainKey(chain, scope), nowMs)?.value;
  }

  /** The entry under `key` while valid at `nowMs`, made the most recently used; an entry out of its validity is dropped. */
  private remembered(key: string, nowMs: number): CheckedChain<T> | undefined {
    const known = this.entries.get(key);
    this.entries.delete(key);
    if (known === undefined || nowMs < known.validFromMs || nowMs > known.validUntilMs) return undefined;
    this.entries.set(key, known);
    return known;
  }
}

function chainKey(chain: readonly Uint8Array[], scope: string): string {
  const hash = createHash('sha256').update(scope).update('\0');
  // DER is self-delimiting, so the concatenation names the chain unambiguously.
  for (const der of chain) hash.update(der);
  return hash.digest('base64');
}
