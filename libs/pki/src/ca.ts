import type { webcrypto } from 'node:crypto';
import { loadX509, TrustDomain } from '@sigil/spiffe';
import { signCertificate } from './certificate.js';
import { PkiError } from './errors.js';
import { exportPublicKeySpki, isKeyPairOf, keyTypeOf } from './keys.js';
import { privateKeyFromPem } from './pem.js';
import { certificatesFromPem } from './pem-certificates.js';
import { signingCaProfile } from './signing-ca.js';
import {
  SVID_BACKDATE_SECONDS,
  generateSerialNumber,
  subjectKeyIdentifier,
  validateNow,
  validateTtlSeconds,
  type SigningCaProfile,
} from './svid-profile.js';
import type { x509 } from './x509-lib.js';

/** SPIRE's default CA lifetime: 24 hours. */
export const DEFAULT_CA_TTL_SECONDS = 24 * 60 * 60;

/** A CA certificate, parsed and as DER. */
export interface CaCertificate {
  readonly certificate: x509.X509Certificate;
  readonly der: Uint8Array;
}

/** A CA certificate with its private key: what signs intermediates and X.509-SVIDs. */
export interface CaCredential extends CaCertificate {
  readonly privateKey: webcrypto.CryptoKey;
}

/** An upstream CA loaded from PEM, with the certificates that followed it in the file (its chain, if any). */
export interface LoadedCa extends CaCredential {
  readonly chain: readonly x509.X509Certificate[];
}

/** Input of {@link createRootCa}. */
export interface CreateRootCaParams {
  readonly trustDomain: TrustDomain;
  readonly keys: webcrypto.CryptoKeyPair;
  /** Lifetime, default 24 h. */
  readonly ttlSeconds?: number;
  readonly now: Date;
  /** Subject DN (e.g. `CN=Example CA, O=Example`); the caller then owns its uniqueness per key. */
  readonly subject?: string;
}

/** Input of {@link createIntermediateCa}. */
export interface CreateIntermediateCaParams {
  readonly trustDomain: TrustDomain;
  /** The intermediate's public key; its private key stays with whoever generated it. */
  readonly publicKey: webcrypto.CryptoKey;
  /** The signing CA; its certificate parsed or as DER. */
  readonly issuer: {
    readonly certificate: x509.X509Certificate | Uint8Array;
    readonly privateKey: webcrypto.CryptoKey;
  };
  /** Lifetime, default 24 h, capped at the issuer's notAfter. */
  readonly ttlSeconds?: number;
  readonly now: Date;
  readonly subject?: string;
}

function invalid(message: string): PkiError {
  return new PkiError('ERR_PKI_INVALID_INPUT', message);
}

/**
 * The default CA subject, `C=US, O=Sigil, OU=<trust domain>, serialNumber=<32 random hex digits>`: the random
 * serialNumber makes it unique per CA key (libs/pki/README.md, Certificate profiles), so relying parties never confuse two CA generations.
 */
function defaultCaSubject(trustDomain: TrustDomain): x509.JsonNameParams {
  return [
    { '2.5.4.6': ['US'] },
    { '2.5.4.10': ['Sigil'] },
    { '2.5.4.11': [trustDomain.name] },
    { '2.5.4.5': [{ printableString: Buffer.from(generateSerialNumber()).toString('hex') }] },
  ];
}

function caSubject(trustDomain: TrustDomain, subject: string | undefined): x509.JsonNameParams | string {
  if (subject === undefined) return defaultCaSubject(trustDomain);
  if (typeof subject !== 'string' || subject.trim() === '') throw invalid('subject: must be a non-empty dn string');
  try {
    new (loadX509().Name)(subject);
  } catch (error) {
    throw new PkiError('ERR_PKI_INVALID_INPUT', `subject: not a valid dn: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return subject;
}

function checkTrustDomain(trustDomain: unknown): TrustDomain {
  if (!(trustDomain instanceof TrustDomain)) throw invalid('trustDomain: must be a parsed TrustDomain');
  return trustDomain;
}

/** The CA certificate profile (libs/pki/README.md): cA=true, keyCertSign + cRLSign (+digitalSignature), URI SAN `spiffe://<td>`, SKI. */
function caExtensions(trustDomain: TrustDomain, spkiDer: Uint8Array, authorityKeyId?: Uint8Array): x509.Extension[] {
  const {
    AuthorityKeyIdentifierExtension,
    BasicConstraintsExtension,
    KeyUsageFlags,
    KeyUsagesExtension,
    SubjectAlternativeNameExtension,
    SubjectKeyIdentifierExtension,
  } = loadX509();
  const keyUsage = KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign | KeyUsageFlags.digitalSignature;
  const extensions: x509.Extension[] = [
    new BasicConstraintsExtension(true, undefined, true),
    new KeyUsagesExtension(keyUsage, true),
    new SubjectKeyIdentifierExtension(Buffer.from(subjectKeyIdentifier(spkiDer)).toString('hex'), false),
  ];
  if (authorityKeyId !== undefined) {
    extensions.push(new AuthorityKeyIdentifierExtension(Buffer.from(authorityKeyId).toString('hex'), false));
  }
  extensions.push(new SubjectAlternativeNameExtension([{ type: 'url', value: trustDomain.idString() }], false));
  return extensions;
}

function wholeSeconds(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

/**
 * Creates a self-signed root CA certificate for a trust domain, signed with `keys.privateKey` (SHA-256, or SHA-384
 * for P-384). Not-before is backdated 10 s; not-after is now + ttl.
 *
 * @throws PkiError `ERR_PKI_INVALID_INPUT` for bad input, `ERR_KEY_INVALID` for an unsupported key.
 */
export async function createRootCa(params: CreateRootCaParams): Promise<CaCredential> {
  const trustDomain = checkTrustDomain(params.trustDomain);
  const ttlSeconds = validateTtlSeconds(params.ttlSeconds ?? DEFAULT_CA_TTL_SECONDS);
  const now = validateNow(params.now).getTime();
  const { publicKey, privateKey } = params.keys ?? {};
  if (!publicKey || !privateKey) throw new PkiError('ERR_KEY_INVALID', 'keys: must be a CryptoKeyPair');
  keyTypeOf(privateKey);
  const spkiDer = exportPublicKeySpki(publicKey);
  if (!isKeyPairOf(privateKey, spkiDer)) {
    throw new PkiError('ERR_KEY_INVALID', 'keys: privateKey is not the private half of publicKey');
  }
  const subject = new (loadX509().Name)(caSubject(trustDomain, params.subject));
  const { certificate, der } = await signCertificate({
    serial: generateSerialNumber(),
    notBefore: wholeSeconds(now - SVID_BACKDATE_SECONDS * 1000),
    notAfter: wholeSeconds(now + ttlSeconds * 1000),
    subject,
    issuerDer: new Uint8Array(subject.toArrayBuffer()),
    spkiDer,
    extensions: caExtensions(trustDomain, spkiDer),
    signingKey: privateKey,
    issuerSpkiDer: spkiDer,
  });
  return { certificate, der, privateKey };
}

/**
 * Creates an intermediate CA certificate for a trust domain, signed by `issuer`; not-after is capped at the
 * issuer's, and the AKI is the issuer's key identifier.
 *
 * @throws PkiError `ERR_CA_INVALID` when the issuer is not a usable CA (not a CA, expired, other trust domain,
 * key mismatch), `ERR_PKI_INVALID_INPUT` for bad input.
 */
export async function createIntermediateCa(params: CreateIntermediateCaParams): Promise<CaCertificate> {
  const trustDomain = checkTrustDomain(params.trustDomain);
  const ttlSeconds = validateTtlSeconds(params.ttlSeconds ?? DEFAULT_CA_TTL_SECONDS);
  const now = validateNow(params.now).getTime();
  const issuerCertificate = params.issuer?.certificate;
  const issuer: SigningCaProfile = signingCaProfile(
    issuerCertificate instanceof Uint8Array ? parseIssuerDer(issuerCertificate) : issuerCertificate,
  );
  if (issuer.trustDomain && !issuer.trustDomain.equals(trustDomain)) {
    throw new PkiError(
      'ERR_CA_INVALID',
      `issuer: belongs to trust domain "${issuer.trustDomain.name}", not "${trustDomain.name}"`,
    );
  }
  if (issuer.notAfter.getTime() <= now) {
    throw new PkiError('ERR_CA_INVALID', `issuer: expired at ${issuer.notAfter.toISOString()}, cannot sign`);
  }
  const signingKey = params.issuer.privateKey;
  keyTypeOf(signingKey);
  if (!isKeyPairOf(signingKey, issuer.spkiDer)) {
    throw new PkiError('ERR_CA_INVALID', 'issuer.privateKey: does not match the issuer certificate');
  }
  const spkiDer = exportPublicKeySpki(params.publicKey);
  keyTypeOf(params.publicKey);
  return signCertificate({
    serial: generateSerialNumber(),
    notBefore: wholeSeconds(now - SVID_BACKDATE_SECONDS * 1000),
    notAfter: wholeSeconds(Math.min(now + ttlSeconds * 1000, issuer.notAfter.getTime())),
    subject: new (loadX509().Name)(caSubject(trustDomain, params.subject)),
    issuerDer: issuer.subjectDer,
    spkiDer,
    extensions: caExtensions(trustDomain, spkiDer, issuer.keyIdentifier),
    signingKey,
    issuerSpkiDer: issuer.spkiDer,
  });
}

function parseIssuerDer(der: Uint8Array): x509.X509Certificate {
  try {
    return new (loadX509().X509Certificate)(der.slice());
  } catch (error) {
    throw new PkiError('ERR_CA_INVALID', 'issuer.certificate: not a DER certificate', { cause: error });
  }
}

/**
 * Loads an upstream CA from PEM: the first certificate is the CA (cA=true, keyCertSign), any following ones are
 * its chain; the key is one PKCS#8 "PRIVATE KEY" block that must match the CA certificate.
 *
 * @throws PkiError `ERR_PEM_INVALID`/`ERR_CERTIFICATE_INVALID`/`ERR_KEY_INVALID` for unreadable input,
 * `ERR_CA_INVALID` when the certificate is not a CA or the key does not match it.
 */
export async function loadCaFromPem(certificatePem: string, privateKeyPem: string): Promise<LoadedCa> {
  const [certificate, ...chain] = certificatesFromPem(certificatePem) as [
    x509.X509Certificate,
    ...x509.X509Certificate[],
  ];
  const profile = signingCaProfile(certificate);
  const privateKey = await privateKeyFromPem(privateKeyPem);
  if (!isKeyPairOf(privateKey, profile.spkiDer)) {
    throw new PkiError('ERR_CA_INVALID', 'privateKey: does not match the ca certificate public key');
  }
  return { certificate, der: new Uint8Array(certificate.rawData), privateKey, chain };
}
