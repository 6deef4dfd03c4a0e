import 'reflect-metadata';
import {
  constants,
  createHash,
  createPublicKey,
  verify,
  type KeyObject,
  type X509Certificate as NodeX509Certificate,
} from 'node:crypto';
import { isCaCertificate } from '@sigil/pki';
import { x509 } from '@sigil/spiffe/x509';
import { nodeCertificateFromDer } from '@sigil/spiffe';
import type { AgentSelector } from '../../agents/agent.js';
import { AppError } from '../../common/errors.js';
import { CheckedChains } from '../../agent-api/checked-chains.js';

/**
 * x509pop node attestation, with the facts of SPIRE's x509pop attestor: the agent presents a certificate chain that
 * must lead to a CA of the configured bundle; its leaf must be meant for signatures; the agent then signs a random
 * nonce with the leaf's key. The agent ID uses the SHA-1 fingerprint of the leaf, the selectors name the leaf's
 * subject CN and the fingerprint of every CA above it.
 */

/** Longest chain accepted: leaf and intermediates. */
export const X509POP_MAX_CERTIFICATES = 8;

/**
 * Most DER bytes a chain may hold in all. Node certificates are 0.5 to 2 KiB each (RSA-4096 included), so a real
 * chain is a few KiB; an unauthenticated caller must not make the server parse and hash 8 certificates of 12 KiB.
 */
export const X509POP_MAX_CHAIN_BYTES = 32 * 1024;

/**
 * Most signature checks one chain may cost. Walking a chain of n certificates takes n checks when each issuer is
 * found at the first try; more are needed only when several candidates share the issuer's name and no key
 * identifier tells them apart, which a forged chain arranges on purpose (every certificate named like the CA).
 */
export const X509POP_MAX_SIGNATURE_CHECKS = 2 * X509POP_MAX_CERTIFICATES;

/** RSA moduli accepted in a caller's certificates, in bits. */
export const X509POP_RSA_MODULUS_BITS = { min: 2048, max: 4096 } as const;

/** RSA public exponents must be below this (Go's crypto/x509, hence SPIRE, refuses exponents of 2^31 and more). */
export const X509POP_RSA_MAX_EXPONENT = 2n ** 31n;

/** EC curves accepted in a caller's certificates (OpenSSL names of P-256 and P-384). */
const X509POP_EC_CURVES: readonly string[] = ['prime256v1', 'secp384r1'];

/**
 * Why a key of a caller's certificate is not used for any signature check, or undefined when it may be. The budget
 * of {@link X509POP_MAX_SIGNATURE_CHECKS} counts checks; this bounds what each one costs: an RSA key with a
 * modulus of 4096 bits or less and a small exponent (a 3,070-bit exponent makes one check ~80 times dearer),
 * P-256 or P-384, or Ed25519 where `allowEd25519`.
 */
export function x509popKeyRefusal(key: KeyObject, allowEd25519: boolean): string | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa': {
      const bits = details.modulusLength ?? 0;
      const { min, max } = X509POP_RSA_MODULUS_BITS;
      if (bits < min || bits > max) return `rsa key of ${bits} bits (accepted: ${min} to ${max})`;
      const exponent = details.publicExponent ?? 0n;
      if (exponent >= X509POP_RSA_MAX_EXPONENT) {
        return `rsa key with a ${exponent.toString(2).length}-bit public exponent (accepted: below 2^31, e.g. 65537)`;
      }
      return undefined;
    }
    case 'ec':
      return details.namedCurve !== undefined && X509POP_EC_CURVES.includes(details.namedCurve)
        ? undefined
        : `ec key on curve ${String(details.namedCurve)} (accepted: P-256, P-384)`;
    case 'ed25519':
      return allowEd25519 ? undefined : 'ed25519 key (accepted: EC or RSA)';
    default:
      return `${String(key.asymmetricKeyType)} key (accepted: RSA, EC${allowEd25519 ? ', Ed25519' : ''})`;
  }
}

/** What a verified x509pop chain proves once the agent shows it holds the leaf's key. */
export interface X509popEvidence {
  /** Lowercase hex SHA-1 of the leaf's DER (SPIRE's fingerprint). */
  readonly fingerprint: string;
  /** `x509pop:subject:cn:<CN>` and `x509pop:ca:fingerprint:<hex>` of each CA certificate of the verified chain. */
  readonly selectors: readonly AgentSelector[];
  readonly publicKey: KeyObject;
}

const sha1Hex = (der: ArrayBuffer | Uint8Array): string =>
  createHash('sha1')
    .update(der instanceof Uint8Array ? der : new Uint8Array(der))
    .digest('hex');

const refused = (message: string): AppError => new AppError('permission_denied', `x509pop: ${message}`);

/** Parses the trusted CA bundle (the `x509popCaBundle` file); at least one certificate, each a CA. */
export function parseX509popCaBundle(pem: string, source: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`x509pop ca bundle ${source}: holds no PEM certificate`);
  return blocks.map((block, index) => {
    let certificate: x509.X509Certificate;
    try {
      certificate = new x509.X509Certificate(block);
    } catch (error) {
      throw new Error(`x509pop ca bundle ${source}: certificate ${index} does not parse`, { cause: error });
    }
    if (!isCaCertificate(certificate)) throw new Error(`x509pop ca bundle ${source}: certificate ${index} is not a ca`);
    return certificate;
  });
}

/**
 * Verifies an x509pop chain (leaf first, then intermediates in any order) up to one of `roots`, at `now`: every
 * signature and validity period, CA flags and keyCertSign above the leaf, path length constraints, and a leaf
 * whose key usage allows digital signatures.
 *
 * Anyone may call this (certificates are not secret), so its cost is bounded before anything is trusted: the chain's
 * size ({@link X509POP_MAX_CERTIFICATES}, {@link X509POP_MAX_CHAIN_BYTES}), then a walk to a root on Node's native
 * certificates, where a candidate issuer must pass OpenSSL's issuer check (subject name = issuer name, subject key
 * identifier = authority key identifier when both are present, keyCertSign when key usage is present) before its
 * signature is checked, at most {@link X509POP_MAX_SIGNATURE_CHECKS} times. Only a chain that reaches a root is
 * parsed in full for the remaining checks, whose outcome `checked` (one per `roots`) may remember.
 *
 * @throws AppError `invalid_argument` for certificates that do not parse or are too many or too large,
 *   `permission_denied` for a chain that does not verify.
 */
export async function verifyX509popChain(
  certificatesDer: readonly Uint8Array[],
  roots: readonly x509.X509Certificate[],
  now: Date,
  checked?: X509popCheckedPaths,
): Promise<X509popEvidence> {
  if (certificatesDer.length === 0 || certificatesDer.length > X509POP_MAX_CERTIFICATES) {
    throw new AppError('invalid_argument', `certificates: must hold 1 to ${X509POP_MAX_CERTIFICATES} certificates`);
  }
  const chainBytes = certificatesDer.reduce((sum, der) => sum + der.length, 0);
  if (chainBytes > X509POP_MAX_CHAIN_BYTES) {
    throw new AppError(
      'invalid_argument',
      `certificates: ${chainBytes} bytes of der in all, more than the ${X509POP_MAX_CHAIN_BYTES}-byte limit`,
    );
  }
  return checked ? checked.verify(certificatesDer, roots, now) : checkPath(walk(certificatesDer, roots), now).evidence;
}

/** Parses the presented chain (Node's parser) and walks it to a root of `roots`. */
function walk(certificatesDer: readonly Uint8Array[], roots: readonly x509.X509Certificate[]): PathCertificate[] {
  const chain = certificatesDer.map((der, index) => {
    try {
      return nodeCertificateFromDer(der);
    } catch {
      throw new AppError('invalid_argument', `certificates.${index}: not a der x.509 certificate`);
    }
  });
  return findPathToRoot(chain, roots);
}

/** How many verified paths (and how many presented chains) an {@link X509popCheckedPaths} remembers. */
export const X509POP_CHECKED_PATHS = 1024;

/**
 * The outcome of the checks of chains that passed them, for the CA bundles they were checked against: parsing a
 * certificate in full costs about 2 ms, ten times the walk, and the walk itself (Node's parse of each certificate and
 * a signature check per step) about 1 ms; an unauthenticated caller can only repeat the certificates it holds
 * (certificates are public, but new ones need a CA's key), as an agent repeats its own. Two levels, each a
 * {@link CheckedChains} of at most {@link X509POP_CHECKED_PATHS}, least recently used forgotten first:
 * - by the chain exactly as presented (its DER bytes, in order) and the roots: a chain presented again is not parsed
 *   at all, since the walk's outcome depends on those bytes alone;
 * - by the path the walk found: the same path presented another way (other certificates beside it, another order)
 *   costs the walk again, not the full checks.
 * Both remember only chains that passed, with the period in which every certificate of the path is valid: outside it
 * the chain is checked again (and refused with the reason).
 */
export class X509popCheckedPaths {
  private readonly presented: CheckedChains<X509popEvidence>;
  private readonly paths: CheckedChains<CheckedPath>;
  /** A digest of each roots list seen, the scope of {@link presented}. */
  private readonly rootScopes = new WeakMap<readonly x509.X509Certificate[], string>();

  constructor(capacity = X509POP_CHECKED_PATHS) {
    this.presented = new CheckedChains(capacity);
    this.paths = new CheckedChains(capacity);
  }

  /** How many paths are remembered (for tests). */
  get size(): number {
    return this.paths.size;
  }

  /** How many presented chains are remembered (for tests). */
  get presentedSize(): number {
    return this.presented.size;
  }

  /** {@link verifyX509popChain}'s evidence for a chain that passed its size checks, remembered while valid. */
  verify(certificatesDer: readonly Uint8Array[], roots: readonly x509.X509Certificate[], now: Date): X509popEvidence {
    return this.presented.get(
      certificatesDer,
      now.getTime(),
      () => {
        const path = walk(certificatesDer, roots);
        const checked = this.check(path, now);
        return {
          value: checked.evidence,
          validFromMs: checked.validFromMs,
          validUntilMs: checked.validUntilMs,
          remember: isExactPresentation(certificatesDer, path),
        };
      },
      this.scopeOf(roots),
    );
  }

  /**
   * The evidence remembered for a chain presented exactly so before, while valid at `now`, without any check: what a
   * caller may get before it waits for its turn to have a chain checked.
   */
  known(
    certificatesDer: readonly Uint8Array[],
    roots: readonly x509.X509Certificate[],
    now: Date,
  ): X509popEvidence | undefined {
    return this.presented.find(certificatesDer, now.getTime(), this.scopeOf(roots));
  }

  /** {@link checkPath}'s outcome for `path` at `now`, remembered while the path is valid. */
  private check(path: readonly PathCertificate[], now: Date): CheckedPath {
    return this.paths.get(
      path.map((certificate) => certificate.native.raw),
      now.getTime(),
      () => {
        const checked = checkPath(path, now);
        return { value: checked, validFromMs: checked.validFromMs, validUntilMs: checked.validUntilMs };
      },
    );
  }

  private scopeOf(roots: readonly x509.X509Certificate[]): string {
    let scope = this.rootScopes.get(roots);
    if (scope === undefined) {
      const hash = createHash('sha256');
      for (const root of roots) hash.update(new Uint8Array(root.rawData));
      scope = hash.digest('base64');
      this.rootScopes.set(roots, scope);
    }
    return scope;
  }
}

/**
 * Whether a presented chain holds only certificates of its path, each once: only such presentations are remembered
 * as presented, since anyone can pad a public chain with other public certificates (or repeat one) into as many new
 * presentations as it likes and push real nodes' chains out of what is remembered. A padded chain is still
 * accepted; it costs the walk every time.
 */
function isExactPresentation(certificatesDer: readonly Uint8Array[], path: readonly PathCertificate[]): boolean {
  const onPath = new Set(path.map((certificate) => Buffer.from(certificate.native.raw).toString('base64')));
  const presented = new Set(certificatesDer.map((der) => Buffer.from(der).toString('base64')));
  return presented.size === certificatesDer.length && [...presented].every((der) => onPath.has(der));
}

/** A path that passed {@link checkPath}, and when every certificate of it is valid. */
interface CheckedPath {
  readonly evidence: X509popEvidence;
  readonly validFromMs: number;
  readonly validUntilMs: number;
}

/** A certificate of the chain in both parsers' forms: Node's for the walk, @peculiar/x509's for the fields. */
interface PathCertificate {
  readonly native: NodeX509Certificate;
  readonly parsed: () => x509.X509Certificate;
}

/** The leaf, then the issuers found above it, the last one a root of `roots`. */
function findPathToRoot(
  chain: readonly NodeX509Certificate[],
  roots: readonly x509.X509Certificate[],
): PathCertificate[] {
  const trusted = roots.map((root) => ({ native: nativeOf(root), parsed: () => root }));
  const budget = { signatureChecks: X509POP_MAX_SIGNATURE_CHECKS };
  const [leaf, ...intermediates] = chain as [NodeX509Certificate, ...NodeX509Certificate[]];
  const asPath = (native: NodeX509Certificate): PathCertificate => {
    let parsed: x509.X509Certificate | undefined;
    return { native, parsed: () => (parsed ??= new x509.X509Certificate(native.raw)) };
  };
  const path: PathCertificate[] = [asPath(leaf)];
  let pool = intermediates.map(asPath);
  for (;;) {
    const current = path.at(-1)!.native;
    const root = findIssuer(current, trusted, budget, false);
    const next = root ?? findIssuer(current, pool, budget, true);
    if (next === undefined) {
      throw refused(
        `certificate chain does not lead to a trusted ca (no issuer found for "${current.subject.split('\n').join(', ')}")`,
      );
    }
    path.push(next);
    if (root) return path;
    pool = pool.filter((candidate) => candidate !== next);
  }
}

/** The checks of every field, on a path that leads to a root. */
function checkPath(path: readonly PathCertificate[], now: Date): CheckedPath {
  const leaf = path[0]!.parsed();
  const usage = leaf.getExtension(x509.KeyUsagesExtension);
  if (usage === null || !(usage.usages & x509.KeyUsageFlags.digitalSignature)) {
    throw refused('leaf certificate is not meant for digital signatures (key usage lacks digitalSignature)');
  }
  const publicKey = createPublicKey({ key: Buffer.from(leaf.publicKey.rawData), format: 'der', type: 'spki' });
  const keyRefusal = x509popKeyRefusal(publicKey, false);
  if (keyRefusal !== undefined) throw refused(`leaf certificate holds an unsupported ${keyRefusal}`);
  checkValidity(leaf, 'leaf certificate', now);

  const above: x509.X509Certificate[] = [];
  for (const [index, each] of path.entries()) {
    if (index === 0) continue;
    const next = each.parsed();
    const role = `${index === path.length - 1 ? 'root' : 'intermediate'} certificate "${next.subject}"`;
    if (!isCaCertificate(next)) throw refused(`${role} is not a ca`);
    const nextUsage = next.getExtension(x509.KeyUsagesExtension);
    if (nextUsage !== null && !(nextUsage.usages & x509.KeyUsageFlags.keyCertSign)) {
      throw refused(`${role} lacks keyCertSign key usage`);
    }
    checkValidity(next, role, now);
    const pathLength = next.getExtension(x509.BasicConstraintsExtension)?.pathLength;
    if (pathLength !== undefined && above.length > pathLength) {
      throw refused(`${role} allows ${pathLength} intermediate(s) below it, the chain has ${above.length}`);
    }
    above.push(next);
  }

  const selectors: AgentSelector[] = [];
  const commonName = leaf.subjectName.getField('CN')[0];
  if (commonName) selectors.push({ type: 'x509pop', value: `subject:cn:${commonName}` });
  for (const fingerprint of new Set(above.map((certificate) => sha1Hex(certificate.rawData)))) {
    selectors.push({ type: 'x509pop', value: `ca:fingerprint:${fingerprint}` });
  }
  const evidence: X509popEvidence = Object.freeze({
    fingerprint: sha1Hex(leaf.rawData),
    selectors: Object.freeze(selectors.map((selector) => Object.freeze(selector))),
    publicKey,
  });
  const certificates = [leaf, ...above];
  return {
    evidence,
    validFromMs: Math.max(...certificates.map((certificate) => certificate.notBefore.getTime())),
    validUntilMs: Math.min(...certificates.map((certificate) => certificate.notAfter.getTime())),
  };
}

/**
 * Checks the proof of possession: `signature` over the nonce with the leaf's key, ECDSA with SHA-256 (DER-encoded
 * signature) or RSA PKCS#1 v1.5 with SHA-256.
 */
export function isPossessionProven(publicKey: KeyObject, nonce: Uint8Array, signature: Uint8Array): boolean {
  try {
    const key =
      publicKey.asymmetricKeyType === 'ec'
        ? { key: publicKey, dsaEncoding: 'der' as const }
        : { key: publicKey, padding: constants.RSA_PKCS1_PADDING };
    return verify('sha256', nonce, key, signature);
  } catch {
    return false;
  }
}

function checkValidity(certificate: x509.X509Certificate, role: string, now: Date): void {
  if (now.getTime() > certificate.notAfter.getTime()) {
    throw refused(`${role} expired at ${certificate.notAfter.toISOString()}`);
  }
  if (now.getTime() < certificate.notBefore.getTime()) {
    throw refused(`${role} is not valid before ${certificate.notBefore.toISOString()}`);
  }
}

/**
 * The candidate that issued `certificate`: it passes OpenSSL's issuer check (names, key identifiers, key usage),
 * which costs no signature check, and its key verifies the certificate's signature; each signature check is taken
 * from `budget`. The key of an untrusted candidate (`untrusted`: one of the caller's) must pass
 * {@link x509popKeyRefusal} before it checks anything.
 */
function findIssuer<T extends { readonly native: NodeX509Certificate }>(
  certificate: NodeX509Certificate,
  candidates: readonly T[],
  budget: { signatureChecks: number },
  untrusted: boolean,
): T | undefined {
  for (const candidate of candidates) {
    if (!certificate.checkIssued(candidate.native)) continue;
    const keyRefusal = untrusted ? x509popKeyRefusal(candidate.native.publicKey, true) : undefined;
    if (keyRefusal !== undefined) {
      throw refused(
        `candidate issuer "${candidate.native.subject.split('\n').join(', ')}" holds an unsupported ${keyRefusal}`,
      );
    }
    if (budget.signatureChecks-- <= 0) {
      throw refused(
        `certificate chain needs more than ${X509POP_MAX_SIGNATURE_CHECKS} signature checks (too many candidate ` +
          `issuers named like "${certificate.issuer.split('\n').join(', ')}")`,
      );
    }
    try {
      if (certificate.verify(candidate.native.publicKey)) return candidate;
    } catch {
      // A key that cannot check this signature algorithm is not the issuer.
    }
  }
  return undefined;
}

const natives = new WeakMap<x509.X509Certificate, NodeX509Certificate>();

/** Node's parse of a trusted root, made once per root. */
function nativeOf(certificate: x509.X509Certificate): NodeX509Certificate {
  let native = natives.get(certificate);
  if (native === undefined) {
    native = nodeCertificateFromDer(new Uint8Array(certificate.rawData));
    natives.set(certificate, native);
  }
  return native;
}
