import { randomBytes, randomUUID, type webcrypto } from 'node:crypto';
import { nodeCertificateFromDer } from '@sigil/spiffe';
import { readFile } from 'node:fs/promises';
import { Inject, Injectable } from '@nestjs/common';
import {
  createIntermediateCa,
  createRootCa,
  exportPrivateKeyPkcs8,
  exportPublicKeySpki,
  generateKeyPair,
  importPrivateKeyPkcs8,
  loadCaFromPem,
  subjectKeyIdentifier,
  type LoadedCa,
} from '@sigil/pki';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { KeyEncryptionKey } from '../kek/key-encryption-key.js';
import type { AuthorityKind, CaKey } from './ca-key.js';
import type { NewCaKey } from './ca-keys.repository.js';
import { UpstreamSigilAuthority, type UpstreamAuthorities } from './upstream-sigil.js';

/** `kid` of a JWT key: 24 random bytes in base64url (32 characters). */
const KID_BYTES = 24;

/** The additional authenticated data that binds a sealed private key to its journal row. */
export function sealingContext(key: Pick<CaKey, 'id' | 'kind'>): string {
  return `ca_keys/${key.id}/${key.kind}`;
}

type AuthorityConfig = Pick<
  ServerConfig,
  'trustDomain' | 'caKeyType' | 'caTtlSeconds' | 'upstreamCa' | 'upstreamSigil'
>;

/**
 * Makes new CA keys for the journal: a key pair of the configured type, for X.509 a CA certificate (self-signed, or
 * an intermediate signed by the upstream CA read from its PEM files at each creation, so a renewed upstream
 * certificate is picked up), the private key sealed with the key-encryption key. Also opens sealed keys.
 */
@Injectable()
export class AuthorityKeyFactory {
  private readonly upstreamSigil: UpstreamSigilAuthority | undefined;

  constructor(
    @Inject(SERVER_CONFIG) private readonly config: AuthorityConfig,
    private readonly kek: KeyEncryptionKey,
  ) {
    const upstreamSigil = config.upstreamSigil;
    this.upstreamSigil =
      upstreamSigil === undefined ? undefined : new UpstreamSigilAuthority({ ...config, upstreamSigil });
  }

  /** True when X.509 keys are signed by an upstream Sigil server, over the network. */
  get signsRemotely(): boolean {
    return this.upstreamSigil !== undefined;
  }

  /**
   * Upstream authority sigil: the authority IDs of the upstream server's tainted keys (asked over mTLS with this
   * server's X509-SVID, the upstream server authenticated against `trusted`, the upstream roots stored); undefined
   * for any other authority.
   */
  upstreamTaintedAuthorities(trusted: readonly Uint8Array[]): Promise<Set<string>> | undefined {
    return this.upstreamSigil?.taintedAuthorities(trusted);
  }

  /**
   * Upstream authority sigil: the upstream bundle's X.509 and JWT authorities now, from an upstream server
   * authenticated against `trusted` (the upstream roots stored); see {@link UpstreamSigilAuthority.authorities}.
   */
  async upstreamAuthorities(trusted: readonly Uint8Array[], now: Date): Promise<UpstreamAuthorities> {
    if (this.upstreamSigil === undefined) throw new Error('upstream authority sigil is not configured');
    return this.upstreamSigil.authorities(trusted, now);
  }

  /**
   * A new prepared key of `kind`, valid from `now` for the CA TTL (an upstream CA may shorten it). `upstreamRoots`:
   * the upstream roots already stored, which an upstream Sigil server must chain to (empty at bootstrap).
   */
  async create(kind: AuthorityKind, now: Date, upstreamRoots: readonly Uint8Array[] = []): Promise<NewCaKey> {
    const id = randomUUID();
    const keys = await generateKeyPair(this.config.caKeyType);
    const publicKeyDer = Buffer.from(exportPublicKeySpki(keys.publicKey));
    const base = { id, kind, state: 'prepared' as const, tainted: false, revoked: false, createdAt: now };
    const sealed = await this.seal({ id, kind }, keys.privateKey);
    const common = { ...base, keyType: this.config.caKeyType, encryptedPrivateKey: sealed, publicKeyDer };

    if (kind === 'jwt') {
      // JWT keys carry no certificate: their validity is whole seconds from now, the CA TTL long.
      const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000);
      const kid = randomBytes(KID_BYTES).toString('base64url');
      const asked = new Date(notBefore.getTime() + this.config.caTtlSeconds * 1000);
      // Upstream authority sigil: in the upstream's bundle (so in every bundle of the trust domain) before it signs,
      // until the expiry the upstream server stored (cut to its downstream_ca_max_ttl, as our CA's lifetime is).
      const published = await this.upstreamSigil?.publishJwtAuthority(
        { kid, publicKeyDer, notAfter: asked },
        now,
        upstreamRoots,
      );
      const notAfter = published?.notAfter ?? asked;
      return {
        ...common,
        authorityId: kid,
        certificateDer: null,
        upstreamChain: null,
        upstreamAuthorities: null,
        notBefore,
        notAfter,
        activatedAt: null,
      };
    }

    if (this.upstreamSigil !== undefined) {
      // Asked again for every new key: each preparation gets a CA (and the upstream roots) signed at that time.
      const signed = await this.upstreamSigil.signCa(keys, now, upstreamRoots);
      const certificate = nodeCertificateFromDer(signed.certificateDer);
      return {
        ...common,
        authorityId: Buffer.from(subjectKeyIdentifier(publicKeyDer)).toString('hex'),
        certificateDer: signed.certificateDer,
        upstreamChain: signed.upstreamChainDer.map((der) => der.toString('base64')),
        upstreamAuthorities: signed.upstreamAuthoritiesDer.map((der) => der.toString('base64')),
        notBefore: new Date(certificate.validFrom),
        notAfter: new Date(certificate.validTo),
        activatedAt: null,
      };
    }
    const upstream = await this.loadUpstream();
    const ca =
      upstream === undefined
        ? await createRootCa({ trustDomain: this.config.trustDomain, keys, ttlSeconds: this.config.caTtlSeconds, now })
        : await createIntermediateCa({
            trustDomain: this.config.trustDomain,
            publicKey: keys.publicKey,
            issuer: upstream,
            ttlSeconds: this.config.caTtlSeconds,
            now,
          });
    return {
      ...common,
      authorityId: Buffer.from(subjectKeyIdentifier(publicKeyDer)).toString('hex'),
      certificateDer: Buffer.from(ca.der),
      upstreamChain:
        upstream === undefined
          ? null
          : [upstream.der, ...upstream.chain.map((certificate) => new Uint8Array(certificate.rawData))].map((der) =>
              Buffer.from(der).toString('base64'),
            ),
      upstreamAuthorities: null,
      notBefore: ca.certificate.notBefore,
      notAfter: ca.certificate.notAfter,
      activatedAt: null,
    };
  }

  /** Opens a journal row's sealed private key; fails when the KEK differs or the row's data was moved or altered. */
  async unseal(row: Pick<CaKey, 'id' | 'kind' | 'keyType' | 'encryptedPrivateKey'>): Promise<webcrypto.CryptoKey> {
    let pkcs8: Buffer;
    try {
      pkcs8 = await this.kek.decrypt(row.encryptedPrivateKey, sealingContext(row));
    } catch (error) {
      throw new Error(
        `ca key ${row.id} (${row.kind}): its private key cannot be opened with the key-encryption key from ` +
          `${describeSource(this.kek)} (it was sealed with another key-encryption key, or the row was altered)`,
        { cause: error },
      );
    }
    try {
      return await importPrivateKeyPkcs8(pkcs8, row.keyType);
    } finally {
      pkcs8.fill(0);
    }
  }

  private async seal(row: Pick<CaKey, 'id' | 'kind'>, privateKey: webcrypto.CryptoKey): Promise<Buffer> {
    const pkcs8 = exportPrivateKeyPkcs8(privateKey);
    try {
      return await this.kek.encrypt(pkcs8, sealingContext(row));
    } finally {
      pkcs8.fill(0);
    }
  }

  private async loadUpstream(): Promise<LoadedCa | undefined> {
    const upstream = this.config.upstreamCa;
    if (upstream === undefined) return undefined;
    const [certificatePem, keyPem] = await Promise.all([
      readUpstreamFile('upstream_ca_cert_file', upstream.certFile),
      readUpstreamFile('upstream_ca_key_file', upstream.keyFile),
    ]);
    return loadCaFromPem(certificatePem, keyPem);
  }
}

async function readUpstreamFile(key: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`${key} ${path}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: error,
    });
  }
}

function describeSource(kek: KeyEncryptionKey): string {
  return kek.source.kind === 'env' ? kek.source.name : kek.source.path;
}
