import { createPrivateKey, createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import type * as X509 from '@peculiar/x509';
import { type BundleSource, x509AuthorityViews } from './bundle.js';
import {
  type CertificateView,
  type ChainItem,
  CertificateFormatError,
  notACertificateMessage,
  KEY_USAGE,
  OID_AUTHORITY_KEY_IDENTIFIER,
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  basicConstraints as readBasicConstraints,
  derChainItem,
  issuerIdsOf,
  keyUsage as readKeyUsage,
  parseCertificate,
  signedBy,
  subjectAltNameUris,
} from './certificate.js';
import { SpiffeError, quote } from './errors.js';
import { loadX509 } from './lazy-modules.js';
import { MAX_X509_SVID_CHAIN_LENGTH } from './peer-chain.js';
import { bytesEqual, splitDer } from './pem.js';
import { SpiffeId } from './spiffe-id.js';

type CryptoKey = webcrypto.CryptoKey;

/** A parsed X.509-SVID with its private key, as handed out by the Workload API (X509-SVID.md). */
export interface X509Svid {
  /** The SPIFFE ID of the leaf's URI SAN. */
  readonly spiffeId: SpiffeId;
  /**
   * The leaf first, then the intermediates (never the root). From `parseX509Svid`, built on first access (loading
   * @peculiar/x509 then); `certificateChainDer` gives the DER without that.
   */
  readonly certificates: readonly X509.X509Certificate[];
  /** The leaf's private key, usable for signing (extractable, so it can be written out). */
  readonly privateKey: CryptoKey;
  /** The Workload API `hint`, if any. */
  readonly hint?: string;
}

/** The result of `verifyX509Svid`. */
export interface VerifiedX509Svid {
  readonly spiffeId: SpiffeId;
  /** The leaf, the intermediates used, and the trusted root from the bundle, in that order (built on first access). */
  readonly verifiedChain: X509.X509Certificate[];
  /**
   * What the leaf certifies, read without building {@link verifiedChain} (which loads @peculiar/x509 and parses every
   * certificate again): its validity and SubjectPublicKeyInfo (DER).
   */
  readonly leaf: { readonly notBefore: Date; readonly notAfter: Date; readonly spki: Uint8Array };
  /**
   * The authority IDs that issued the chain as given, leaf first ({@link chainIssuerIds} of it), from the certificates
   * verification read (worked out on first access).
   *
   * @throws CertificateFormatError on access when an Authority Key Identifier is not DER, as chainIssuerIds does.
   */
  readonly chainIssuerIds: readonly string[];
}

/** Options of `verifyX509Svid`. */
export interface VerifyX509SvidOptions {
  /** The instant at which every certificate must be valid; defaults to the current time. */
  readonly now?: Date;
}

/** A certificate chain: parsed or DER certificates (leaf first), or their DER concatenation. */
export type CertificateChainInput = Uint8Array | readonly (Uint8Array | X509.X509Certificate)[];

// Critical extensions this verifier understands; RFC 5280 §4.2 requires rejecting a certificate with any other.
const HANDLED_CRITICAL_EXTENSIONS = new Set([
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  '2.5.29.37', // extKeyUsage: not enforced, as go-spiffe verifies with "any" extended key usage
  '2.5.29.14', // subjectKeyIdentifier
  OID_AUTHORITY_KEY_IDENTIFIER,
]);

function invalid(message: string, cause?: unknown): SpiffeError {
  return new SpiffeError('ERR_X509_SVID_INVALID', message, cause === undefined ? undefined : { cause });
}

function notACertificate(what: string, error: unknown): SpiffeError {
  return invalid(notACertificateMessage(what, error), error);
}

/** Parses DER into a view; a failure is `ERR_X509_SVID_INVALID` saying which certificate is not one. */
function viewOf(der: Uint8Array, what: string): CertificateView {
  try {
    return parseCertificate(der);
  } catch (error) {
    throw notACertificate(what, error);
  }
}

/**
 * Who a check is about, in its error message: text, or a function giving it (a certificate's subject text needs
 * Node's parse of it, made only when a message is).
 */
type Role = string | (() => string);

function roleText(role: Role): string {
  return typeof role === 'string' ? role : role();
}

function parseChain(chain: CertificateChainInput): ChainItem[] {
  let items: readonly (Uint8Array | X509.X509Certificate)[];
  if (chain instanceof Uint8Array) {
    const split = splitDer(chain);
    if (typeof split === 'string') throw invalid(`certificate chain: ${split}`);
    items = split;
  } else if (Array.isArray(chain)) {
    items = chain;
  } else {
    throw invalid('certificate chain must be an array of certificates or der bytes');
  }
  if (items.length === 0) throw invalid('certificate chain is empty');
  if (items.length > MAX_X509_SVID_CHAIN_LENGTH) {
    throw invalid(`certificate chain holds more than ${MAX_X509_SVID_CHAIN_LENGTH} certificates`);
  }
  return items.map((item, i) => {
    if (item instanceof Uint8Array) return derChainItem(viewOf(item, `certificate ${i}`));
    // Not bytes: a caller that passes a parsed certificate has loaded @peculiar/x509 already.
    if (!(item instanceof loadX509().X509Certificate)) {
      throw invalid(`certificate ${i} must be an X509Certificate or der bytes`);
    }
    return { view: viewOf(new Uint8Array(item.rawData), `certificate ${i}`), certificate: () => item };
  });
}

/** `target[name]` as a getter computing `build()` on first access, enumerable like the plain field it stands for. */
function lazyField<T extends object, V>(target: T, name: string, build: () => V): T {
  let value: V | undefined;
  let done = false;
  return Object.defineProperty(target, name, {
    enumerable: true,
    get: () => {
      if (!done) {
        value = build();
        done = true;
      }
      return value;
    },
  });
}

// The DER of each chain `parseX509Svid` parsed, for certificateChainDer.
const svidChains = new WeakMap<X509Svid, readonly Uint8Array[]>();

/** An extension's value, or the rule its encoding breaks as `ERR_X509_SVID_INVALID`. */
function extensionOf<T>(read: () => T, role: Role): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof CertificateFormatError) throw invalid(`${roleText(role)}: ${error.message}`, error);
    throw error;
  }
}

function basicConstraints(cert: CertificateView, role: Role): { ca: boolean; pathLength?: number } | null {
  return extensionOf(() => readBasicConstraints(cert), role);
}

function keyUsage(cert: CertificateView, role: Role): number | null {
  return extensionOf(() => readKeyUsage(cert), role);
}

function idFromView(cert: CertificateView): SpiffeId {
  let uris: string[];
  try {
    uris = subjectAltNameUris(cert);
  } catch (error) {
    if (error instanceof CertificateFormatError && error.message.startsWith('certificate must not')) {
      throw invalid(error.message, error);
    }
    throw invalid('certificate subject alternative name extension cannot be parsed', error);
  }
  if (uris.length !== 1) throw invalid(`certificate must have exactly one uri san, got ${uris.length}`);
  try {
    return SpiffeId.parse(uris[0] as string);
  } catch (error) {
    throw invalid(`certificate uri san is not a spiffe id: ${(error as Error).message}`, error);
  }
}

/**
 * The SPIFFE ID of a certificate: its one URI SAN (X509-SVID.md §2).
 *
 * @throws SpiffeError `ERR_X509_SVID_INVALID` when the certificate has no or several URI SANs, or the URI is not a
 * SPIFFE ID.
 */
export function idFromCertificate(certificate: X509.X509Certificate | Uint8Array): SpiffeId {
  return idFromView((parseChain([certificate])[0] as ChainItem).view);
}

function checkCriticalExtensions(cert: CertificateView, role: Role): void {
  for (const extension of cert.extensions) {
    if (extension.critical && !HANDLED_CRITICAL_EXTENSIONS.has(extension.oid)) {
      throw invalid(`${roleText(role)} has an unsupported critical extension ${extension.oid}`);
    }
  }
}

/** Checks the leaf rules of X509-SVID.md §4 and §5.2 and returns the leaf's SPIFFE ID. */
function checkLeaf(leaf: CertificateView): SpiffeId {
  let id: SpiffeId;
  try {
    id = idFromView(leaf);
  } catch (error) {
    throw invalid(`leaf ${(error as Error).message}`, error);
  }
  if (id.isRoot()) {
    throw invalid(`leaf certificate spiffe id ${quote(id.toString())} must have a path (it names a trust domain)`);
  }
  if (basicConstraints(leaf, 'leaf certificate')?.ca === true)
    throw invalid('leaf certificate must not be a ca (basicConstraints cA=true)');
  const usage = keyUsage(leaf, 'leaf certificate');
  if (usage !== null) {
    if (usage & KEY_USAGE.keyCertSign) {
      throw invalid('leaf certificate must not have keyCertSign key usage');
    }
    if (usage & KEY_USAGE.cRLSign) throw invalid('leaf certificate must not have cRLSign key usage');
    if (!(usage & KEY_USAGE.digitalSignature)) {
      throw invalid('leaf certificate must have digitalSignature key usage');
    }
  }
  checkCriticalExtensions(leaf, 'leaf certificate');
  return id;
}

/** Checks that a signing certificate may sign (X509-SVID.md §4.1, §4.3). */
function checkSigningCertificate(cert: CertificateView, role: Role): void {
  if (basicConstraints(cert, role)?.ca !== true) {
    throw invalid(`${roleText(role)} must be a ca (basicConstraints cA=true)`);
  }
  const usage = keyUsage(cert, role);
  if (usage === null || !(usage & KEY_USAGE.keyCertSign)) {
    throw invalid(`${roleText(role)} must have keyCertSign key usage`);
  }
  checkCriticalExtensions(cert, role);
}

function checkValidity(cert: CertificateView, role: Role, now: Date): void {
  if (now.getTime() > cert.notAfter.getTime()) {
    throw invalid(`${roleText(role)} expired at ${cert.notAfter.toISOString()} (now is ${now.toISOString()})`);
  }
  if (now.getTime() < cert.notBefore.getTime()) {
    throw invalid(
      `${roleText(role)} is not valid before ${cert.notBefore.toISOString()} (now is ${now.toISOString()})`,
    );
  }
}

/** RFC 5280 §6.1.3 (b): the path length constraint of a CA bounds the intermediates below it. */
function checkPathLength(cert: CertificateView, role: Role, intermediatesBelow: number): void {
  const pathLength = basicConstraints(cert, role)?.pathLength;
  if (pathLength !== undefined && intermediatesBelow > pathLength) {
    throw invalid(
      `${roleText(role)} allows ${pathLength} intermediate(s) below it, the chain has ${intermediatesBelow}`,
    );
  }
}

/** Finds the candidate whose subject is `cert`'s issuer and whose key verifies `cert`'s signature. */
function findIssuer<T extends { readonly view: CertificateView }>(
  cert: CertificateView,
  candidates: readonly T[],
): T | undefined {
  for (const candidate of candidates) {
    if (!bytesEqual(candidate.view.subject, cert.issuer)) continue;
    try {
      if (signedBy(cert, candidate.view)) return candidate;
    } catch {
      // A key that cannot check this signature algorithm (or a certificate OpenSSL refuses) is simply not the issuer.
    }
  }
  return undefined;
}

/**
 * A certificate's subject as text, RDNs in certificate order joined by ", " (`C=US, O=Sigil, CN=…`), as
 * @peculiar/x509's `subject` reads.
 */
function subjectText(cert: CertificateView, what: string): string {
  let node;
  try {
    node = cert.node;
  } catch (error) {
    throw notACertificate(what, error);
  }
  // Node reads an empty subject (`SEQUENCE {}`, allowed in an SVID with its SAN) as undefined, not as ''.
  return (node.subject ?? '').split('\n').join(', ');
}

/** What a person reading a certificate wants first: its subject (as `describe` words it) and validity. */
export interface CertificateSummary {
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * The subject and validity of a DER certificate, without @peculiar/x509 (for a CLI that prints an SVID).
 *
 * @throws SpiffeError `ERR_X509_SVID_INVALID` when the bytes are not a DER certificate.
 */
export function certificateSummary(der: Uint8Array): CertificateSummary {
  const view = viewOf(der, 'certificate');
  return { subject: subjectText(view, 'certificate'), notBefore: view.notBefore, notAfter: view.notAfter };
}

function describe(kind: string, cert: ChainItem): string {
  return `${kind} certificate ${quote(subjectText(cert.view, `${kind} certificate`))}`;
}

/**
 * Verifies an X.509-SVID (X509-SVID.md §5): the leaf rules (exactly one URI SAN holding a SPIFFE ID with a path,
 * cA=false, no keyCertSign or cRLSign, digitalSignature when key usage is present), then RFC 5280 path validation
 * up to an X.509 authority in the bundle of the leaf's trust domain: every signature, every validity period at
 * `now`, intermediates that are CAs with keyCertSign, path length constraints, no unknown critical extension.
 *
 * Synchronous, for callers that cannot wait for a promise (a TLS `checkServerIdentity`); `verifyX509Svid` is the
 * same check behind a promise. There is one rule set: both run this function.
 *
 * @param chain The leaf first, then intermediates in any order (roots in the chain are ignored unless in the bundle).
 * @throws SpiffeError `ERR_X509_SVID_INVALID` naming the broken rule; `ERR_BUNDLE_NOT_FOUND` when `source` has no
 * bundle for the leaf's trust domain.
 */
export function verifyX509SvidSync(
  chain: CertificateChainInput,
  source: BundleSource,
  options: VerifyX509SvidOptions = {},
): VerifiedX509Svid {
  const now = options.now ?? new Date();
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw invalid('now must be a valid date');
  const given = parseChain(chain);
  const [leaf, ...intermediates] = given as [ChainItem, ...ChainItem[]];
  const spiffeId = checkLeaf(leaf.view);
  checkValidity(leaf.view, 'leaf certificate', now);

  const bundle = source.getBundleForTrustDomain(spiffeId.trustDomain);
  const roots = x509AuthorityViews(bundle);
  const verifiedChain = [leaf];
  let pool = intermediates;
  let current = leaf;
  for (;;) {
    const root = findIssuer(current.view, roots);
    if (root !== undefined) {
      const role = (): string => describe('root', root);
      checkValidity(root.view, role, now);
      checkPathLength(root.view, role, verifiedChain.length - 1);
      verifiedChain.push(root);
      const { notBefore, notAfter, spki } = leaf.view;
      // @peculiar/x509 reads the chain only here, after verification, and may refuse a certificate the strict DER
      // reader accepted (a trusted CA signed bytes it cannot read): that is still an invalid SVID, not a crash
      // (review R16 LOW-2).
      const verified = lazyField(
        { spiffeId, leaf: { notBefore, notAfter, spki } } as VerifiedX509Svid,
        'chainIssuerIds',
        () => issuerIdsOf(given.map((item) => item.view)),
      );
      return lazyField(verified, 'verifiedChain', () => {
        try {
          return verifiedChain.map((item) => item.certificate());
        } catch (error) {
          throw invalid(`a certificate of the verified chain cannot be read: ${(error as Error).message}`, error);
        }
      });
    }
    const next = findIssuer(current.view, pool);
    if (next === undefined) {
      throw invalid(
        `certificate chain does not chain to a trusted authority of ${spiffeId.trustDomain.name}` +
          ` (no issuer found for ${describe(current === leaf ? 'leaf' : 'intermediate', current)})`,
      );
    }
    const role = (): string => describe('intermediate', next);
    checkSigningCertificate(next.view, role);
    checkValidity(next.view, role, now);
    checkPathLength(next.view, role, verifiedChain.length - 1);
    verifiedChain.push(next);
    pool = pool.filter((cert) => cert !== next);
    current = next;
  }
}

/**
 * Verifies an X.509-SVID with the rules of {@link verifyX509SvidSync} (X509-SVID.md §5), reporting failures as a
 * rejected promise.
 *
 * @param chain The leaf first, then intermediates in any order (roots in the chain are ignored unless in the bundle).
 * @throws SpiffeError `ERR_X509_SVID_INVALID` naming the broken rule; `ERR_BUNDLE_NOT_FOUND` when `source` has no
 * bundle for the leaf's trust domain.
 */
export async function verifyX509Svid(
  chain: CertificateChainInput,
  source: BundleSource,
  options: VerifyX509SvidOptions = {},
): Promise<VerifiedX509Svid> {
  return verifyX509SvidSync(chain, source, options);
}

const EC_CURVES: Readonly<Record<string, string>> = { prime256v1: 'P-256', secp384r1: 'P-384', secp521r1: 'P-521' };

function importAlgorithm(key: KeyObject): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams | string {
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const namedCurve = EC_CURVES[key.asymmetricKeyDetails?.namedCurve ?? ''];
      return namedCurve === undefined
        ? 'private key curve is not P-256, P-384 or P-521'
        : { name: 'ECDSA', namedCurve };
    }
    case 'rsa':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    case 'rsa-pss':
      return { name: 'RSA-PSS', hash: 'SHA-256' };
    default:
      return `private key type ${String(key.asymmetricKeyType)} is not supported (use EC or RSA)`;
  }
}

/**
 * Parses an X.509-SVID and its private key as the Workload API delivers them (`x509_svid`: DER chain, leaf first;
 * `x509_svid_key`: PKCS#8 DER), checking the leaf rules of X509-SVID.md, that every further certificate is a CA
 * with keyCertSign, and that the private key belongs to the leaf. It does not validate the chain against a bundle:
 * use `verifyX509Svid` for that.
 *
 * @throws SpiffeError `ERR_X509_SVID_INVALID` naming the broken rule.
 */
export async function parseX509Svid(
  certificates: CertificateChainInput,
  privateKeyPkcs8: Uint8Array,
  options: { hint?: string } = {},
): Promise<X509Svid> {
  const chain = parseChain(certificates);
  const [leaf, ...intermediates] = chain as [ChainItem, ...ChainItem[]];
  const spiffeId = checkLeaf(leaf.view);
  for (const cert of intermediates) checkSigningCertificate(cert.view, () => describe('intermediate', cert));

  if (!(privateKeyPkcs8 instanceof Uint8Array)) throw invalid('private key must be pkcs#8 der bytes');
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: Buffer.from(privateKeyPkcs8), format: 'der', type: 'pkcs8' });
  } catch (error) {
    throw invalid('private key is not a pkcs#8 der key', error);
  }
  const publicKey = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
  if (!bytesEqual(new Uint8Array(publicKey), leaf.view.spki)) {
    throw invalid('private key does not match the public key of the leaf certificate');
  }
  const algorithm = importAlgorithm(keyObject);
  if (typeof algorithm === 'string') throw invalid(algorithm);
  const privateKey = await webcrypto.subtle.importKey('pkcs8', privateKeyPkcs8, algorithm, true, ['sign']);

  if (options.hint !== undefined && typeof options.hint !== 'string') throw invalid('hint must be a string');
  const svid = lazyField(
    {
      spiffeId,
      privateKey,
      ...(options.hint === undefined || options.hint === '' ? {} : { hint: options.hint }),
    } as X509Svid,
    'certificates',
    () => chain.map((item) => item.certificate()),
  );
  svidChains.set(
    svid,
    chain.map((item) => item.view.der),
  );
  return svid;
}

/**
 * The DER of an X.509-SVID's certificates, leaf first, as `certificates` holds them; for an SVID from
 * `parseX509Svid`, without building the @peculiar/x509 objects (or loading that library). Copies.
 */
export function certificateChainDer(svid: Pick<X509Svid, 'certificates'>): Uint8Array[] {
  const known = svidChains.get(svid as X509Svid);
  if (known !== undefined) return known.map((der) => der.slice());
  return svid.certificates.map((certificate) => new Uint8Array(certificate.rawData));
}
