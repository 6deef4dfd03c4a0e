import { SpiffeError, quote } from './errors.js';
import { SpiffeId } from './spiffe-id.js';
import { checkTrustDomainName, lowercaseAscii } from './id-rules.js';

/**
 * A SPIFFE trust domain (SPIFFE-ID.md §2.1): the authority of every SPIFFE ID it issues. Exists only if its name
 * parsed; the name is always lowercase.
 */
export class TrustDomain {
  readonly #name: string;

  private constructor(name: string) {
    this.#name = name;
  }

  /**
   * Parses a trust domain from a bare name (`example.org`) or from a SPIFFE ID string, whose trust domain is taken
   * (`spiffe://example.org/web`). The name is case-insensitive on input (SPIFFE-ID.md §2.4) and kept lowercase.
   *
   * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID` naming the broken rule.
   */
  static parse(nameOrId: string): TrustDomain {
    if (typeof nameOrId !== 'string') {
      throw new SpiffeError('ERR_TRUST_DOMAIN_INVALID', 'trust domain must be a string');
    }
    if (nameOrId.includes(':/')) {
      try {
        return SpiffeId.parse(nameOrId).trustDomain;
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        throw new SpiffeError('ERR_TRUST_DOMAIN_INVALID', message, { cause: error });
      }
    }
    const name = lowercaseAscii(nameOrId);
    const failure = checkTrustDomainName(name);
    if (failure !== undefined) {
      throw new SpiffeError('ERR_TRUST_DOMAIN_INVALID', `invalid trust domain ${quote(nameOrId)}: ${failure}`);
    }
    return new TrustDomain(name);
  }

  /** The trust domain name, e.g. `example.org`. */
  get name(): string {
    return this.#name;
  }

  /** The SPIFFE ID string of the trust domain, e.g. `spiffe://example.org` (the bundle map key). */
  idString(): string {
    return `spiffe://${this.#name}`;
  }

  /** The SPIFFE ID of the trust domain itself (no path), as carried by its signing certificates. */
  id(): SpiffeId {
    return SpiffeId.fromPath(this, '');
  }

  /** True when both name the same trust domain. */
  equals(other: TrustDomain): boolean {
    return other instanceof TrustDomain && other.#name === this.#name;
  }

  /** The trust domain name. */
  toString(): string {
    return this.#name;
  }

  toJSON(): string {
    return this.#name;
  }
}
