import { SpiffeError, quote } from './errors.js';
import { MAX_SPIFFE_ID_BYTES, checkPath, checkPathSegment, checkTrustDomainName, lowercaseAscii } from './id-rules.js';
import { TrustDomain } from './trust-domain.js';
import { utf8LongerThan } from './utf8.js';

const SCHEME_PREFIX = 'spiffe://';
const RULE_EMPTY = 'cannot be empty';
const RULE_SCHEME_MISSING = 'scheme "spiffe" is missing';
const RULE_SCHEME_WRONG = 'scheme must be "spiffe"';
const RULE_SCHEME_SLASHES = 'scheme "spiffe:" must be followed by "//" and a trust domain';
const RULE_QUERY = 'query is not allowed';
const RULE_FRAGMENT = 'fragment is not allowed';
const RULE_LENGTH = `must be at most ${MAX_SPIFFE_ID_BYTES} bytes`;

/** The last trust domain an ID was parsed in: IDs come in runs of one trust domain, and it is immutable. */
let lastTrustDomain: TrustDomain | undefined;

function invalid(id: string, rule: string): SpiffeError {
  return new SpiffeError('ERR_SPIFFE_ID_INVALID', `invalid spiffe id ${quote(id)}: ${rule}`);
}

function schemeFailure(id: string): string {
  const colon = id.indexOf(':');
  const slash = id.indexOf('/');
  if (colon <= 0 || (slash !== -1 && slash < colon)) return RULE_SCHEME_MISSING;
  if (lowercaseAscii(id.slice(0, colon)) !== 'spiffe') return RULE_SCHEME_WRONG;
  return RULE_SCHEME_SLASHES;
}

/**
 * A SPIFFE ID (SPIFFE-ID.md §2): `spiffe://<trust domain><path>`. Exists only if it parsed: the scheme and trust
 * domain are lowercase, the path is empty (the trust domain's own ID) or a sequence of `/segment` with segments of
 * `[a-zA-Z0-9._-]`, and the whole ID is at most 2048 bytes.
 */
export class SpiffeId {
  readonly #trustDomain: TrustDomain;
  readonly #path: string;

  private constructor(trustDomain: TrustDomain, path: string) {
    this.#trustDomain = trustDomain;
    this.#path = path;
  }

  /**
   * Parses a SPIFFE ID. The scheme and trust domain are case-insensitive and normalised to lowercase; the path is
   * case-sensitive and kept as given (SPIFFE-ID.md §2.4).
   *
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` naming the broken rule.
   */
  static parse(id: string): SpiffeId {
    if (typeof id !== 'string') {
      throw new SpiffeError('ERR_SPIFFE_ID_INVALID', 'spiffe id must be a string');
    }
    if (id.length === 0) throw invalid(id, RULE_EMPTY);
    if (lowercaseAscii(id.slice(0, SCHEME_PREFIX.length)) !== SCHEME_PREFIX) throw invalid(id, schemeFailure(id));
    if (utf8LongerThan(id, MAX_SPIFFE_ID_BYTES)) throw invalid(id, RULE_LENGTH);

    const rest = id.slice(SCHEME_PREFIX.length);
    const authorityEnd = rest.search(/[/?#]/);
    const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd);
    const tail = authorityEnd === -1 ? '' : rest.slice(authorityEnd);

    const delimiter = tail.search(/[?#]/);
    if (delimiter !== -1) throw invalid(id, tail[delimiter] === '?' ? RULE_QUERY : RULE_FRAGMENT);

    const name = lowercaseAscii(authority);
    let trustDomain = lastTrustDomain;
    if (trustDomain?.name !== name) {
      const trustDomainFailure = checkTrustDomainName(name);
      if (trustDomainFailure !== undefined) throw invalid(id, trustDomainFailure);
      trustDomain = TrustDomain.parse(name);
    }

    const pathFailure = checkPath(tail);
    if (pathFailure !== undefined) throw invalid(id, pathFailure);

    lastTrustDomain = trustDomain;
    return new SpiffeId(trustDomain, tail);
  }

  /**
   * Builds the SPIFFE ID of `path` in `trustDomain`. The path is `''` (the trust domain's own ID) or starts with
   * `/`, with the segment rules of SPIFFE-ID.md §2.2.
   *
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` naming the broken rule.
   */
  static fromPath(trustDomain: TrustDomain, path: string): SpiffeId {
    if (!(trustDomain instanceof TrustDomain)) {
      throw new SpiffeError('ERR_SPIFFE_ID_INVALID', 'trust domain must be a parsed TrustDomain');
    }
    if (typeof path !== 'string') {
      throw new SpiffeError('ERR_SPIFFE_ID_INVALID', 'path must be a string');
    }
    const failure = checkPath(path);
    if (failure !== undefined) {
      throw new SpiffeError('ERR_SPIFFE_ID_INVALID', `invalid path ${quote(path)}: ${failure}`);
    }
    return SpiffeId.#withLengthChecked(trustDomain, path);
  }

  /**
   * Builds a SPIFFE ID from path segments, e.g. `fromSegments(td, 'ns', 'prod')` is `spiffe://<td>/ns/prod`; no
   * segments gives the trust domain's own ID. Each segment must be non-empty, not `.`/`..`, and of `[a-zA-Z0-9._-]`.
   *
   * @throws SpiffeError `ERR_SPIFFE_ID_INVALID` naming the broken rule.
   */
  static fromSegments(trustDomain: TrustDomain, ...segments: string[]): SpiffeId {
    if (!(trustDomain instanceof TrustDomain)) {
      throw new SpiffeError('ERR_SPIFFE_ID_INVALID', 'trust domain must be a parsed TrustDomain');
    }
    for (const segment of segments) {
      const failure = typeof segment === 'string' ? checkPathSegment(segment) : 'path segment must be a string';
      if (failure !== undefined) {
        throw new SpiffeError('ERR_SPIFFE_ID_INVALID', `invalid path segment ${quote(String(segment))}: ${failure}`);
      }
    }
    return SpiffeId.#withLengthChecked(trustDomain, segments.map((segment) => `/${segment}`).join(''));
  }

  static #withLengthChecked(trustDomain: TrustDomain, path: string): SpiffeId {
    const id = new SpiffeId(trustDomain, path);
    if (id.toString().length > MAX_SPIFFE_ID_BYTES) throw invalid(id.toString(), RULE_LENGTH);
    return id;
  }

  /** The trust domain the ID belongs to. */
  get trustDomain(): TrustDomain {
    return this.#trustDomain;
  }

  /** The path, `''` for the trust domain's own ID, otherwise starting with `/` (e.g. `/ns/prod/sa/web`). */
  get path(): string {
    return this.#path;
  }

  /** True for the trust domain's own ID (no path), which names a signing authority, never a workload. */
  isRoot(): boolean {
    return this.#path === '';
  }

  /** True when the ID belongs to `trustDomain`. */
  isMemberOf(trustDomain: TrustDomain): boolean {
    return this.#trustDomain.equals(trustDomain);
  }

  /** True when both are the same SPIFFE ID (trust domain and case-sensitive path). */
  equals(other: SpiffeId): boolean {
    return other instanceof SpiffeId && this.#trustDomain.equals(other.#trustDomain) && this.#path === other.#path;
  }

  /** The URI form, e.g. `spiffe://example.org/ns/prod`. */
  toString(): string {
    return `${SCHEME_PREFIX}${this.#trustDomain.name}${this.#path}`;
  }

  toJSON(): string {
    return this.toString();
  }
}
