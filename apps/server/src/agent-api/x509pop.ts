import 'reflect-metadata';
import { constants, createHash, createPublicKey, verify, webcrypto, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { AgentSelector } from '../agents/agent.entity.js';
import { AppError } from '../common/errors.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/**
 * x509pop node attestation, with the facts of SPIRE's x509pop attestor: the agent presents a certificate chain that
 * must lead to a CA of the configured bundle; its leaf must be meant for signatures; the agent then signs a random
 * nonce with the leaf's key. The agent ID uses the SHA-1 fingerprint of the leaf, the selectors name the leaf's
 * subject CN and the fingerprint of every CA above it.
 */

/** Longest chain accepted: leaf and intermediates. */
export const X509POP_MAX_CERTIFICATES = 8;

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
    if (!isCa(certificate)) throw new Error(`x509pop ca bundle ${source}: certificate ${index} is not a ca`);
    return certificate;
  });
}

/**
 * Verifies an x509pop chain (leaf first, then intermediates in any order) up to one of `roots`, at `now`: every
 * signature and validity period, CA flags and keyCertSign above the leaf, path length constraints, and a leaf
 * whose key usage allows digital signatures.
 *
 * @throws AppError `invalid_argument` for certificates that do not parse, `permission_denied` for a chain that
 *   does not verify.
 */
export async function verifyX509popChain(
  certificatesDer: readonly Uint8Array[],
  roots: readonly x509.X509Certificate[],
  now: Date,
): Promise<X509popEvidence> {
  if (certificatesDer.length === 0 || certificatesDer.length > X509POP_MAX_CERTIFICATES) {
    throw new AppError('invalid_argument', `certificates: must hold 1 to ${X509POP_MAX_CERTIFICATES} certificates`);
  }
  const chain = certificatesDer.map((der, index) => {
    try {
      return new x509.X509Certificate(der);
    } catch {
      throw new AppError('invalid_argument', `certificates.${index}: not a der x.509 certificate`);
    }
  });
  const [leaf, ...intermediates] = chain as [x509.X509Certificate, ...x509.X509Certificate[]];
  const usage = leaf.getExtension(x509.KeyUsagesExtension);
  if (usage === null || !(usage.usages & x509.KeyUsageFlags.digitalSignature)) {
    throw refused('leaf certificate is not meant for digital signatures (key usage lacks digitalSignature)');
  }
  const publicKey = createPublicKey({ key: Buffer.from(leaf.publicKey.rawData), format: 'der', type: 'spki' });
  if (publicKey.asymmetricKeyType !== 'ec' && publicKey.asymmetricKeyType !== 'rsa') {
    throw refused(`leaf key type ${String(publicKey.asymmetricKeyType)} is not supported (use EC or RSA)`);
  }
  checkValidity(leaf, 'leaf certificate', now);

  const above: x509.X509Certificate[] = [];
  let pool = intermediates;
  let current = leaf;
  for (;;) {
    const root = await findIssuer(current, roots);
    const next = root ?? (await findIssuer(current, pool));
    if (next === undefined) {
      throw refused(`certificate chain does not lead to a trusted ca (no issuer found for "${current.subject}")`);
    }
    const role = `${root ? 'root' : 'intermediate'} certificate "${next.subject}"`;
    if (!isCa(next)) throw refused(`${role} is not a ca`);
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
    if (root) break;
    pool = pool.filter((candidate) => candidate !== next);
    current = next;
  }

  const selectors: AgentSelector[] = [];
  const commonName = leaf.subjectName.getField('CN')[0];
  if (commonName) selectors.push({ type: 'x509pop', value: `subject:cn:${commonName}` });
  for (const fingerprint of new Set(above.map((certificate) => sha1Hex(certificate.rawData)))) {
    selectors.push({ type: 'x509pop', value: `ca:fingerprint:${fingerprint}` });
  }
  return { fingerprint: sha1Hex(leaf.rawData), selectors, publicKey };
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

function isCa(certificate: x509.X509Certificate): boolean {
  return certificate.getExtension(x509.BasicConstraintsExtension)?.ca === true;
}

function checkValidity(certificate: x509.X509Certificate, role: string, now: Date): void {
  if (now.getTime() > certificate.notAfter.getTime()) {
    throw refused(`${role} expired at ${certificate.notAfter.toISOString()}`);
  }
  if (now.getTime() < certificate.notBefore.getTime()) {
    throw refused(`${role} is not valid before ${certificate.notBefore.toISOString()}`);
  }
}

/** The candidate whose subject is the certificate's issuer and whose key verifies its signature. */
async function findIssuer(
  certificate: x509.X509Certificate,
  candidates: readonly x509.X509Certificate[],
): Promise<x509.X509Certificate | undefined> {
  const issuer = Buffer.from(certificate.issuerName.toArrayBuffer());
  for (const candidate of candidates) {
    if (!issuer.equals(Buffer.from(candidate.subjectName.toArrayBuffer()))) continue;
    try {
      if (await certificate.verify({ publicKey: candidate.publicKey, signatureOnly: true })) return candidate;
    } catch {
      // A key that cannot check this signature algorithm is not the issuer.
    }
  }
  return undefined;
}
