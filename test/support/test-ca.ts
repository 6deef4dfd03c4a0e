/**
 * A throwaway certificate authority for tests (in the spirit of go-spiffe's internal/test/ca.go), built directly on
 * @peculiar/x509 and WebCrypto so it does not depend on @sigil/pki. Every field of the certificates it makes can be
 * overridden, so tests can provoke each verification failure. Validity defaults are relative to the `now` the CA was
 * created with; tests pass a fixed date and never sleep.
 */
import { randomBytes, webcrypto } from 'node:crypto';
// The one @peculiar/x509 setup (reflect-metadata first, Node's WebCrypto as the provider) is @sigil/spiffe's.
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import { x509 } from '@sigil/spiffe/x509';

type CryptoKeyPair = webcrypto.CryptoKeyPair;

/** Key algorithms the test CA can generate. */
export type TestKeyAlgorithm = 'P-256' | 'P-384' | 'RSA-2048';

/** A fixed instant for tests that do not care which one. */
export const TEST_NOW = new Date('2030-01-01T00:00:00Z');

export const KeyUsage = x509.KeyUsageFlags;

/** Overridable fields of a certificate. `null` leaves an extension out entirely. */
export interface CertificateOptions {
  subject?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** URI SANs; defaults to the SPIFFE ID of the certificate. An empty array leaves the SAN extension out. */
  uris?: string[];
  dnsNames?: string[];
  /** basicConstraints cA; `null` omits the extension. */
  isCa?: boolean | null;
  pathLength?: number;
  /** keyUsage flags (see `KeyUsage`); `null` omits the extension. */
  keyUsage?: number | null;
  /** extKeyUsage OIDs; `null` omits the extension. */
  extKeyUsage?: string[] | null;
  extraExtensions?: x509.Extension[];
  keyAlgorithm?: TestKeyAlgorithm;
  /** Sign with this key instead of the issuer's (to forge a bad signature). */
  signingKey?: webcrypto.CryptoKey;
  /** The public key to certify instead of a fresh one (the matching private key is then unknown). */
  keys?: CryptoKeyPair;
}

/** A leaf made by the test CA, with its key and its chain up to (not including) the root. */
export interface TestSvid {
  certificate: x509.X509Certificate;
  keys: CryptoKeyPair;
  /** Leaf first, then the intermediates of the issuing CA; the root is not included. */
  chain: x509.X509Certificate[];
  chainDer(): Uint8Array[];
  privateKeyPkcs8(): Promise<Uint8Array>;
}

/** Generates a key pair of the given algorithm (extractable, so tests can export PKCS#8). */
export async function generateTestKeys(algorithm: TestKeyAlgorithm = 'P-256'): Promise<CryptoKeyPair> {
  const params =
    algorithm === 'RSA-2048'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : { name: 'ECDSA', namedCurve: algorithm };
  return (await webcrypto.subtle.generateKey(params, true, ['sign', 'verify'])) as CryptoKeyPair;
}

function signingAlgorithm(key: webcrypto.CryptoKey): Algorithm | EcdsaParams {
  if (key.algorithm.name === 'ECDSA') {
    const curve = (key.algorithm as webcrypto.EcKeyAlgorithm).namedCurve;
    return { name: 'ECDSA', hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' } as EcdsaParams;
  }
  return { name: key.algorithm.name, hash: 'SHA-256' } as Algorithm;
}

interface Algorithm {
  name: string;
}
interface EcdsaParams extends Algorithm {
  hash: string;
}

let counter = 0;

/** A root or intermediate test CA for one trust domain. */
export class TestCa {
  private constructor(
    readonly trustDomain: TrustDomain,
    readonly certificate: x509.X509Certificate,
    readonly keys: CryptoKeyPair,
    readonly now: Date,
    readonly parent: TestCa | undefined,
  ) {}

  /** Creates a self-signed root CA for `trustDomain` (URI SAN `spiffe://<td>`, cA, keyCertSign + cRLSign). */
  static async create(trustDomain: string | TrustDomain, options: CertificateOptions & { now?: Date } = {}) {
    const td = typeof trustDomain === 'string' ? TrustDomain.parse(trustDomain) : trustDomain;
    const now = options.now ?? new Date();
    const keys = options.keys ?? (await generateTestKeys(options.keyAlgorithm));
    const subject = options.subject ?? `CN=Test Root CA ${++counter}, O=${td.name}`;
    const certificate = await buildCertificate({
      subject,
      issuer: subject,
      publicKey: keys.publicKey,
      signingKey: options.signingKey ?? keys.privateKey,
      issuerPublicKey: keys.publicKey,
      defaults: caDefaults(td, now),
      options,
    });
    return new TestCa(td, certificate, keys, now, undefined);
  }

  /** Creates an intermediate CA signed by this CA (same trust domain, cA, keyCertSign + cRLSign). */
  async createIntermediate(options: CertificateOptions = {}): Promise<TestCa> {
    const keys = options.keys ?? (await generateTestKeys(options.keyAlgorithm));
    const certificate = await buildCertificate({
      subject: options.subject ?? `CN=Test Intermediate CA ${++counter}, O=${this.trustDomain.name}`,
      issuer: this.certificate.subjectName,
      publicKey: keys.publicKey,
      signingKey: options.signingKey ?? this.keys.privateKey,
      issuerPublicKey: this.keys.publicKey,
      defaults: caDefaults(this.trustDomain, this.now),
      options,
    });
    return new TestCa(this.trustDomain, certificate, keys, this.now, this);
  }

  /**
   * Creates an X.509-SVID leaf for `spiffeId` signed by this CA: cA=false, digitalSignature, serverAuth +
   * clientAuth, one URI SAN. Every field can be overridden.
   */
  async createX509Svid(spiffeId: string, options: CertificateOptions = {}): Promise<TestSvid> {
    const keys = options.keys ?? (await generateTestKeys(options.keyAlgorithm));
    const certificate = await buildCertificate({
      subject: options.subject ?? `CN=Test Leaf ${++counter}, O=${this.trustDomain.name}`,
      issuer: this.certificate.subjectName,
      publicKey: keys.publicKey,
      signingKey: options.signingKey ?? this.keys.privateKey,
      issuerPublicKey: this.keys.publicKey,
      defaults: {
        notBefore: new Date(this.now.getTime() - 60_000),
        notAfter: new Date(this.now.getTime() + 3_600_000),
        uris: [spiffeId],
        isCa: false,
        keyUsage: x509.KeyUsageFlags.digitalSignature,
        extKeyUsage: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
      },
      options,
    });
    const chain = [certificate, ...this.intermediates()];
    return {
      certificate,
      keys,
      chain,
      chainDer: () => chain.map((cert) => new Uint8Array(cert.rawData)),
      privateKeyPkcs8: async () => new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    };
  }

  /** The root CA at the top of this CA's chain. */
  root(): TestCa {
    return this.parent === undefined ? this : this.parent.root();
  }

  /** This CA's certificate and its parents', up to but not including the root. */
  intermediates(): x509.X509Certificate[] {
    return this.parent === undefined ? [] : [this.certificate, ...this.parent.intermediates()];
  }

  /** A trust bundle holding the root certificate of this CA's chain. */
  bundle(): TrustBundle {
    return TrustBundle.create(this.trustDomain, { x509Authorities: [this.root().certificate] });
  }
}

interface Defaults {
  notBefore: Date;
  notAfter: Date;
  uris: string[];
  isCa: boolean;
  keyUsage: number;
  extKeyUsage: string[] | null;
}

function caDefaults(td: TrustDomain, now: Date): Defaults {
  return {
    notBefore: new Date(now.getTime() - 3_600_000),
    notAfter: new Date(now.getTime() + 24 * 3_600_000),
    uris: [td.idString()],
    isCa: true,
    keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
    extKeyUsage: null,
  };
}

async function buildCertificate(params: {
  subject: string;
  issuer: string | x509.Name;
  publicKey: webcrypto.CryptoKey;
  signingKey: webcrypto.CryptoKey;
  issuerPublicKey: webcrypto.CryptoKey;
  defaults: Defaults;
  options: CertificateOptions;
}): Promise<x509.X509Certificate> {
  const { defaults, options } = params;
  const isCa = options.isCa === undefined ? defaults.isCa : options.isCa;
  const keyUsage = options.keyUsage === undefined ? defaults.keyUsage : options.keyUsage;
  const extKeyUsage = options.extKeyUsage === undefined ? defaults.extKeyUsage : options.extKeyUsage;
  const uris = options.uris ?? defaults.uris;
  const names = [
    ...uris.map((value) => ({ type: 'url' as const, value })),
    ...(options.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    await x509.SubjectKeyIdentifierExtension.create(params.publicKey),
    await x509.AuthorityKeyIdentifierExtension.create(params.issuerPublicKey),
  ];
  if (isCa !== null) extensions.push(new x509.BasicConstraintsExtension(isCa, options.pathLength, true));
  if (keyUsage !== null) extensions.push(new x509.KeyUsagesExtension(keyUsage, true));
  if (extKeyUsage !== null) extensions.push(new x509.ExtendedKeyUsageExtension(extKeyUsage));
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names));
  extensions.push(...(options.extraExtensions ?? []));

  return x509.X509CertificateGenerator.create({
    serialNumber: `01${randomBytes(15).toString('hex')}`,
    subject: options.subject ?? params.subject,
    issuer: params.issuer,
    notBefore: options.notBefore ?? defaults.notBefore,
    notAfter: options.notAfter ?? defaults.notAfter,
    publicKey: params.publicKey,
    signingKey: params.signingKey,
    signingAlgorithm: signingAlgorithm(params.signingKey),
    extensions,
  });
}
