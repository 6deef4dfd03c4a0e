import { SpiffeError, quote } from './errors.js';
import {
  isJwtKeyType,
  jwtAuthorityKeysEqual,
  normaliseJwtAuthorityKey,
  spkiToJwk,
  type JwtAuthorityKey,
} from './jwk.js';
import { bytesEqual, concatBytes, decodeBase64, decodePemBlocks, encodePem, splitDer, toBytes } from './pem.js';
import { TrustDomain } from './trust-domain.js';
import type * as X509 from '@peculiar/x509';
import {
  type CertificateView,
  type ChainItem,
  notACertificateMessage,
  derChainItem,
  parseCertificate as parseCertificateView,
} from './certificate.js';
import { loadX509 } from './lazy-modules.js';

/**
 * Looks up the trust bundle of a trust domain (go-spiffe `x509bundle.Source` / `jwtbundle.Source`).
 * Implementations throw `SpiffeError` `ERR_BUNDLE_NOT_FOUND` when they hold no bundle for it.
 */
export interface BundleSource {
  getBundleForTrustDomain(trustDomain: TrustDomain): TrustBundle;
}

/** One key of a SPIFFE bundle in JWKS form (SPIFFE_Trust_Domain_and_Bundle.md §4.2, X509-SVID.md §6). */
export interface SpiffeJwk {
  readonly use: 'x509-svid' | 'jwt-svid';
  readonly kty: string;
  readonly kid?: string;
  readonly x5c?: readonly string[];
  readonly [parameter: string]: unknown;
}

/** A SPIFFE bundle in JWKS form (SPIFFE_Trust_Domain_and_Bundle.md §4.1). */
export interface SpiffeJwks {
  readonly keys: readonly SpiffeJwk[];
  readonly spiffe_sequence?: number;
  readonly spiffe_refresh_hint?: number;
}

/** The parts of a trust bundle; every field is optional. */
export interface TrustBundleInit {
  /** Root (signing) certificates of X.509-SVIDs, parsed or DER. Duplicates are dropped. */
  readonly x509Authorities?: Iterable<X509.X509Certificate | Uint8Array>;
  /** JWT-SVID signing keys by key ID. */
  readonly jwtAuthorities?: Iterable<readonly [string, unknown]> | Readonly<Record<string, unknown>>;
  /** `spiffe_sequence`: increases on every change of the bundle. */
  readonly sequenceNumber?: number;
  /** `spiffe_refresh_hint`: how often consumers should refetch, in seconds. */
  readonly refreshHintSeconds?: number;
}

/** An X.509 authority: its DER, its parsed view, and its @peculiar/x509 object (built on first use). */
interface X509Authority extends ChainItem {
  readonly der: Uint8Array;
}

// Reads a bundle's private authorities; set by TrustBundle's static block.
let authorityItems: (bundle: TrustBundle) => readonly ChainItem[];

// The authorities this module made: `#copy` hands them to `create` again without re-parsing.
const authorities = new WeakSet<object>();

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError('ERR_BUNDLE_INVALID', message, cause === undefined ? undefined : { cause });
}

/**
 * An authority whose public key Node can read: `toJwks` publishes every authority's key parameters, so a certificate
 * that parses but carries an unreadable key (an EC point off its curve, say) would break every later `toJwks`.
 */
function checkedAuthority(item: ChainItem, what: string): X509Authority {
  try {
    spkiToJwk(item.view.spki);
  } catch (error) {
    throw invalid(`${what} has a public key that cannot be read`, error);
  }
  const authority: X509Authority = { ...item, der: item.view.der };
  authorities.add(authority);
  return authority;
}

function parseView(der: Uint8Array, what: string): CertificateView {
  try {
    const view = parseCertificateView(der);
    // Built now, once per authority: a bundle refuses what OpenSSL cannot read, and its views sign many chains.
    void view.node;
    return view;
  } catch (error) {
    throw invalid(notACertificateMessage(what, error), error);
  }
}

function parseCertificate(der: Uint8Array, what: string): X509Authority {
  return checkedAuthority(derChainItem(parseView(der, what)), what);
}

function toAuthority(value: X509.X509Certificate | Uint8Array, index: number): X509Authority {
  if (authorities.has(value)) return value as unknown as X509Authority;
  if (value instanceof Uint8Array) return parseCertificate(value, `x509 authority ${index}`);
  // Not bytes: a caller that passes a parsed certificate has loaded @peculiar/x509 already.
  if (value instanceof loadX509().X509Certificate) {
    const what = `x509 authority ${index}`;
    return checkedAuthority({ view: parseView(toBytes(value.rawData), what), certificate: () => value }, what);
  }
  throw invalid(`x509 authority ${index} must be an X509Certificate or der bytes`);
}

function checkCount(value: number | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw invalid(`${field} must be a non-negative integer no larger than 2^53-1, got ${quote(String(value))}`);
  }
  return value;
}

/**
 * The trust bundle of one trust domain: its X.509 authorities (root certificates), its JWT authorities (public keys
 * by `kid`), and the `spiffe_sequence` and `spiffe_refresh_hint` of SPIFFE_Trust_Domain_and_Bundle.md §4.1.
 * Immutable: the `with…` methods return a new bundle. A bundle is also the `BundleSource` of its own trust domain.
 */
export class TrustBundle implements BundleSource {
  readonly #trustDomain: TrustDomain;
  readonly #x509: readonly X509Authority[];
  readonly #jwt: ReadonlyMap<string, JwtAuthorityKey>;
  readonly #sequenceNumber: number | undefined;
  readonly #refreshHintSeconds: number | undefined;

  static {
    authorityItems = (bundle) => bundle.#x509;
  }

  private constructor(
    trustDomain: TrustDomain,
    x509Authorities: readonly X509Authority[],
    jwtAuthorities: ReadonlyMap<string, JwtAuthorityKey>,
    sequenceNumber: number | undefined,
    refreshHintSeconds: number | undefined,
  ) {
    this.#trustDomain = trustDomain;
    this.#x509 = x509Authorities;
    this.#jwt = jwtAuthorities;
    this.#sequenceNumber = sequenceNumber;
    this.#refreshHintSeconds = refreshHintSeconds;
  }

  /**
   * Builds a bundle from its parts, checking each: certificates must parse, JWT keys must be EC or RSA public keys
   * with a non-empty `kid`, the counters non-negative integers.
   *
   * @throws SpiffeError `ERR_BUNDLE_INVALID` naming the bad part.
   */
  static create(trustDomain: TrustDomain, init: TrustBundleInit = {}): TrustBundle {
    if (!(trustDomain instanceof TrustDomain)) throw invalid('trust domain must be a parsed TrustDomain');
    const authorities = dedupe([...(init.x509Authorities ?? [])].map(toAuthority));
    const source = init.jwtAuthorities ?? [];
    const entries =
      Symbol.iterator in source ? [...(source as Iterable<readonly [string, unknown]>)] : Object.entries(source);
    const jwt = new Map<string, JwtAuthorityKey>();
    for (const [kid, jwk] of entries) {
      if (typeof kid !== 'string' || kid.length === 0) throw invalid('jwt authority kid must be a non-empty string');
      if (jwt.has(kid)) throw invalid(`jwt authority kid ${quote(kid)} appears twice`);
      const key = normaliseJwtAuthorityKey(jwk);
      if (typeof key === 'string') throw invalid(`jwt authority ${quote(kid)}: ${key}`);
      jwt.set(kid, key);
    }
    return new TrustBundle(
      trustDomain,
      authorities,
      jwt,
      checkCount(init.sequenceNumber, 'sequence number'),
      checkCount(init.refreshHintSeconds, 'refresh hint'),
    );
  }

  /**
   * Parses a SPIFFE bundle in JWKS form (SPIFFE_Trust_Domain_and_Bundle.md §4, X509-SVID.md §6, JWT-SVID.md §6):
   * `keys` must be an array; an `x509-svid` key must carry exactly one base64 DER certificate in `x5c`; a `jwt-svid`
   * key must carry a unique `kid`; keys with an unknown `use` or an unknown key type are ignored, as the standard
   * requires. A key without `use` is rejected, as SPIRE does, since it is most likely a mistake of the publisher.
   *
   * @param jwks JSON text, its UTF-8 bytes, or the already parsed object.
   * @throws SpiffeError `ERR_BUNDLE_INVALID` naming the key entry and the broken rule.
   */
  static parseJwks(trustDomain: TrustDomain, jwks: string | Uint8Array | object): TrustBundle {
    let document: unknown = jwks;
    if (typeof jwks === 'string' || jwks instanceof Uint8Array) {
      try {
        document = JSON.parse(typeof jwks === 'string' ? jwks : new TextDecoder('utf-8', { fatal: true }).decode(jwks));
      } catch (error) {
        throw invalid('bundle is not valid json', error);
      }
    }
    if (typeof document !== 'object' || document === null || Array.isArray(document)) {
      throw invalid('bundle must be a json object');
    }
    const { keys, spiffe_sequence: sequence, spiffe_refresh_hint: refreshHint } = document as Record<string, unknown>;
    if (!Array.isArray(keys)) throw invalid('bundle must have a keys array');
    for (const [field, value] of [
      ['spiffe_sequence', sequence],
      ['spiffe_refresh_hint', refreshHint],
    ] as const) {
      if (value !== undefined && typeof value !== 'number') throw invalid(`${field} must be an integer`);
    }

    const x509Authorities: X509Authority[] = [];
    const jwtAuthorities: [string, JwtAuthorityKey][] = [];
    keys.forEach((entry: unknown, i) => {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw invalid(`key entry ${i} must be a json object`);
      }
      const key = entry as Record<string, unknown>;
      if (key.use === undefined || key.use === '') throw invalid(`key entry ${i} is missing use`);
      if (typeof key.use !== 'string') throw invalid(`key entry ${i} use must be a string`);
      if (key.use === 'x509-svid') {
        const x5c = key.x5c;
        const count = Array.isArray(x5c) ? x5c.length : 0;
        if (!Array.isArray(x5c) || count !== 1) {
          throw invalid(`x509-svid key entry ${i} must have exactly one x5c certificate, got ${count}`);
        }
        const der = typeof x5c[0] === 'string' ? decodeBase64(x5c[0]) : undefined;
        if (der === undefined) throw invalid(`x509-svid key entry ${i} x5c is not valid base64`);
        x509Authorities.push(parseCertificate(der, `x509-svid key entry ${i} x5c`));
      } else if (key.use === 'jwt-svid') {
        if (typeof key.kid !== 'string' || key.kid.length === 0)
          throw invalid(`jwt-svid key entry ${i} is missing kid`);
        // SPIFFE_Trust_Domain_and_Bundle.md §4.2.1: a client must ignore a key of a type it does not know.
        if (!isJwtKeyType(key.kty)) return;
        if (jwtAuthorities.some(([kid]) => kid === key.kid)) {
          throw invalid(`jwt-svid key entry ${i} repeats kid ${quote(key.kid)}`);
        }
        const normalised = normaliseJwtAuthorityKey(key);
        if (typeof normalised === 'string') throw invalid(`jwt-svid key entry ${i}: ${normalised}`);
        jwtAuthorities.push([key.kid, normalised]);
      }
      // Any other use: SPIFFE_Trust_Domain_and_Bundle.md §4.2.2 says to ignore the entry.
    });

    return new TrustBundle(
      trustDomain,
      dedupe(x509Authorities),
      new Map(jwtAuthorities),
      checkCount(sequence as number | undefined, 'spiffe_sequence'),
      checkCount(refreshHint as number | undefined, 'spiffe_refresh_hint'),
    );
  }

  /**
   * Builds a bundle of X.509 authorities from PEM `CERTIFICATE` blocks, read by the strict PEM codec
   * ({@link decodePemBlocks}: explanatory text around the blocks is allowed, malformed armour is not).
   *
   * @throws SpiffeError `ERR_BUNDLE_INVALID` when the PEM is malformed, there is no block, or a block is not a
   * certificate or does not parse.
   */
  static fromX509Pem(trustDomain: TrustDomain, pem: string): TrustBundle {
    if (typeof pem !== 'string') throw invalid('pem bundle must be a string');
    const blocks = decodePemBlocks(pem);
    if (typeof blocks === 'string') throw invalid(blocks);
    if (blocks.length === 0) throw invalid('no CERTIFICATE pem block found');
    const ders = blocks.map((block, i) => {
      if (block.label !== 'CERTIFICATE') throw invalid(`pem block ${i} is a ${block.label}, expected CERTIFICATE`);
      return block.der;
    });
    return TrustBundle.create(trustDomain, {
      x509Authorities: ders.map((der, i) => parseCertificate(der, `pem block ${i}`)) as never[],
    });
  }

  /**
   * Builds a bundle of X.509 authorities from concatenated DER certificates, the form of the Workload API's
   * `bundle` and `federated_bundles` fields.
   *
   * @throws SpiffeError `ERR_BUNDLE_INVALID` when the bytes are not a sequence of DER certificates.
   */
  static fromX509Der(trustDomain: TrustDomain, der: Uint8Array): TrustBundle {
    if (!(der instanceof Uint8Array)) throw invalid('der bundle must be bytes');
    const items = splitDer(der);
    if (typeof items === 'string') throw invalid(`der bundle: ${items}`);
    return TrustBundle.create(trustDomain, {
      x509Authorities: items.map((item, i) => parseCertificate(item, `der certificate ${i}`)) as never[],
    });
  }

  /** The trust domain the bundle belongs to. */
  get trustDomain(): TrustDomain {
    return this.#trustDomain;
  }

  /** The X.509 authorities (root certificates), in insertion order (built on first access, loading @peculiar/x509). */
  get x509Authorities(): readonly X509.X509Certificate[] {
    return this.#x509.map((authority) => authority.certificate());
  }

  /** The JWT authorities (public keys) by key ID. */
  get jwtAuthorities(): ReadonlyMap<string, JwtAuthorityKey> {
    return new Map(this.#jwt);
  }

  /** `spiffe_sequence`, if set. */
  get sequenceNumber(): number | undefined {
    return this.#sequenceNumber;
  }

  /** `spiffe_refresh_hint` in seconds, if set. */
  get refreshHintSeconds(): number | undefined {
    return this.#refreshHintSeconds;
  }

  /** The DER form of each X.509 authority. */
  x509AuthoritiesDer(): Uint8Array[] {
    return this.#x509.map((authority) => authority.der.slice());
  }

  /** True when `certificate` (parsed or DER) is one of the X.509 authorities. */
  hasX509Authority(certificate: X509.X509Certificate | Uint8Array): boolean {
    const der = certificate instanceof Uint8Array ? certificate : toBytes(certificate.rawData);
    return this.#x509.some((authority) => bytesEqual(authority.der, der));
  }

  /** The JWT authority with key ID `kid`, if any. */
  findJwtAuthority(kid: string): JwtAuthorityKey | undefined {
    return this.#jwt.get(kid);
  }

  /** True when the bundle holds no authority at all (SPIFFE_Trust_Domain_and_Bundle.md §4.1.3: trust nothing). */
  isEmpty(): boolean {
    return this.#x509.length === 0 && this.#jwt.size === 0;
  }

  /** The X.509 authorities as PEM `CERTIFICATE` blocks (empty string if none). */
  x509Pem(): string {
    return encodePem(
      'CERTIFICATE',
      this.#x509.map((authority) => authority.der),
    );
  }

  /** The X.509 authorities as concatenated DER (the Workload API `bundle` form). */
  x509Der(): Uint8Array {
    return concatBytes(this.#x509.map((authority) => authority.der));
  }

  /**
   * The bundle in SPIFFE JWKS form: X.509 keys with `use: "x509-svid"`, the key parameters and one `x5c`, no `kid`;
   * JWT keys with `use: "jwt-svid"` and `kid`; then `spiffe_refresh_hint` and `spiffe_sequence` when set.
   */
  toJwks(): SpiffeJwks {
    const keys: SpiffeJwk[] = [
      ...this.#x509.map((authority) => {
        const { kty, ...parameters } = spkiToJwk(authority.view.spki);
        return {
          use: 'x509-svid' as const,
          kty: kty ?? '',
          ...parameters,
          x5c: [Buffer.from(authority.der).toString('base64')],
        };
      }),
      ...[...this.#jwt].map(([kid, key]) => ({ use: 'jwt-svid' as const, ...key, kid })),
    ];
    return {
      keys,
      ...(this.#refreshHintSeconds === undefined ? {} : { spiffe_refresh_hint: this.#refreshHintSeconds }),
      ...(this.#sequenceNumber === undefined ? {} : { spiffe_sequence: this.#sequenceNumber }),
    };
  }

  /** `toJwks()` as JSON text. */
  toJson(): string {
    return JSON.stringify(this.toJwks());
  }

  /** A copy with these X.509 authorities instead of the current ones. */
  withX509Authorities(authorities: Iterable<X509.X509Certificate | Uint8Array>): TrustBundle {
    return this.#copy({ x509Authorities: authorities });
  }

  /** A copy with these JWT authorities instead of the current ones. */
  withJwtAuthorities(
    authorities: Iterable<readonly [string, unknown]> | Readonly<Record<string, unknown>>,
  ): TrustBundle {
    return this.#copy({ jwtAuthorities: authorities });
  }

  /** A copy with another sequence number. */
  withSequenceNumber(sequenceNumber: number | undefined): TrustBundle {
    return this.#copy({ sequenceNumber });
  }

  /** A copy with another refresh hint. */
  withRefreshHintSeconds(refreshHintSeconds: number | undefined): TrustBundle {
    return this.#copy({ refreshHintSeconds });
  }

  #copy(changes: TrustBundleInit): TrustBundle {
    const current: TrustBundleInit = {
      // The authorities themselves, not re-parsed (see toAuthority).
      x509Authorities: this.#x509 as unknown as X509.X509Certificate[],
      jwtAuthorities: this.#jwt,
      sequenceNumber: this.#sequenceNumber,
      refreshHintSeconds: this.#refreshHintSeconds,
    };
    return TrustBundle.create(this.#trustDomain, { ...current, ...changes });
  }

  /** True when both bundles have the same trust domain, authorities (in any order) and counters. */
  equals(other: TrustBundle): boolean {
    if (!(other instanceof TrustBundle) || !this.#trustDomain.equals(other.#trustDomain)) return false;
    if (this.#sequenceNumber !== other.#sequenceNumber) return false;
    if (this.#refreshHintSeconds !== other.#refreshHintSeconds) return false;
    if (this.#x509.length !== other.#x509.length || this.#jwt.size !== other.#jwt.size) return false;
    if (!this.#x509.every((authority) => other.hasX509Authority(authority.der))) return false;
    for (const [kid, key] of this.#jwt) {
      const theirs = other.#jwt.get(kid);
      if (theirs === undefined || !jwtAuthorityKeysEqual(key, theirs)) return false;
    }
    return true;
  }

  /**
   * Returns this bundle for its own trust domain.
   *
   * @throws SpiffeError `ERR_BUNDLE_NOT_FOUND` for any other trust domain.
   */
  getBundleForTrustDomain(trustDomain: TrustDomain): TrustBundle {
    if (!this.#trustDomain.equals(trustDomain)) {
      throw new SpiffeError(
        'ERR_BUNDLE_NOT_FOUND',
        `no bundle for trust domain ${quote(String(trustDomain))}: this bundle is for ${quote(this.#trustDomain.name)}`,
      );
    }
    return this;
  }
}

/** The X.509 authorities of a bundle as verification reads them, without building @peculiar/x509 objects. */
export function x509AuthorityViews(bundle: TrustBundle): readonly ChainItem[] {
  return authorityItems(bundle);
}

function dedupe(authorities: X509Authority[]): X509Authority[] {
  return authorities.filter(
    (authority, i) => authorities.findIndex((other) => bytesEqual(other.der, authority.der)) === i,
  );
}
