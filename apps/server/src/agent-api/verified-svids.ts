import { createHash } from 'node:crypto';

/** An agent SVID that verified against our bundle. */
export interface PresentedSvid {
  readonly spiffeId: string;
  readonly serialNumber: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** The bundle sequence it verified against: a bundle change verifies it again. */
  readonly bundleSequence: number;
}

/** A verification's result and when it holds: every certificate of the verified chain is valid then. */
export interface SvidVerification {
  readonly svid: PresentedSvid;
  readonly validFromMs: number;
  readonly validUntilMs: number;
}

/**
 * Agent SVIDs verified on earlier connections, by the bytes of the chain presented (issue 16, finding 8: 1,000
 * connections of one agent each verified the same chain, 3-5 ms of CPU apiece, and held the event loop for 3-5 s).
 * A verification depends only on those bytes, the bundle and the time, so its result is reused for the same bytes
 * while the bundle sequence is the same and the time is inside every certificate's validity; otherwise the chain is
 * verified again, with the errors a first verification gives. Failures are not remembered. Bounded: the least
 * recently used is forgotten first, and a forgotten SVID only costs one verification more.
 */
export class VerifiedSvidCache {
  private readonly entries = new Map<string, SvidVerification>();

  constructor(private readonly maxEntries: number) {
    if (!(maxEntries >= 1)) throw new RangeError('verified SVID cache: maxEntries must be at least 1');
  }

  /** SVIDs remembered (for tests). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The SVID of `chain` (DER, leaf first): remembered, or from `verify`, which throws when the chain does not verify.
   */
  verified(
    chain: readonly Uint8Array[],
    bundleSequence: number,
    nowMs: number,
    verify: () => SvidVerification,
  ): PresentedSvid {
    const hash = createHash('sha256');
    // DER is self-delimiting, so the concatenation names the chain unambiguously.
    for (const der of chain) hash.update(der);
    const key = hash.digest('base64');
    const known = this.entries.get(key);
    this.entries.delete(key);
    if (
      known !== undefined &&
      known.svid.bundleSequence === bundleSequence &&
      nowMs >= known.validFromMs &&
      nowMs <= known.validUntilMs
    ) {
      this.entries.set(key, known);
      return known.svid;
    }
    const verification = verify();
    this.entries.set(key, verification);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    return verification.svid;
  }
}
