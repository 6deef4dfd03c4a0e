import { performance } from 'node:perf_hooks';
import { Inject, Injectable, type OnApplicationShutdown, Optional } from '@nestjs/common';
import {
  CsrSigningPool,
  PkiError,
  SpiffeIdCache,
  X509SvidSigner,
  createIntermediateCa,
  importPublicKeySpki,
  parseCsrFast,
  signCsrs,
  type CsrSigningOutcome,
  type CsrToSign,
} from '@sigil/pki';
import { jwtAudienceProblem } from '@sigil/runtime';
import { SpiffeError, signJwtSvid, type JwtSvidAlgorithm, type SpiffeId } from '@sigil/spiffe';
import { CLOCK, type Clock } from '../common/clock.js';
import { type AuthorityKind } from './ca-key.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type CaKeyType, type ServerConfig } from '../config.js';
import { AUTHORITY_METRICS, noAuthorityMetrics, type AuthorityMetrics } from './authority-metrics.js';
import type { SharedJwtAuthority } from '../downstream/downstream-contract.js';
import { KeyManager } from './key-manager.js';

/** An X.509-SVID to sign: the SPIFFE ID, and the subject's key as a verified SPKI or as a CSR to verify. */
export interface SignX509SvidRequest {
  readonly spiffeId: SpiffeId;
  /** The subject's SubjectPublicKeyInfo DER, already verified (e.g. from a CSR checked elsewhere). */
  readonly spkiDer?: Uint8Array;
  /** A PKCS#10 CSR, PEM or DER; its self-signature is verified and only its public key is used. */
  readonly csr?: string | Uint8Array;
  readonly dnsNames?: readonly string[];
  /** Requested lifetime; defaults to the configured X.509-SVID TTL and never outlives the CA. */
  readonly ttlSeconds?: number;
}

export interface SignedX509Svid {
  /** Leaf first, then our CA certificate and the upstream intermediates when the CA is an intermediate. */
  readonly certificateChainDer: Buffer[];
  readonly expiresAt: Date;
}

export interface SignJwtSvidRequest {
  readonly spiffeId: SpiffeId;
  readonly audience: readonly string[];
  /** Requested lifetime; defaults to the configured JWT-SVID TTL and never outlives the JWT key. */
  readonly ttlSeconds?: number;
}

export interface SignedJwtSvid {
  readonly token: string;
  readonly expiresAt: Date;
}

/** A CA certificate for a downstream server's key, and the certificates above it. */
export interface SignedDownstreamCa {
  /** The new CA certificate first, then our CA certificate and the upstream intermediates (never a root). */
  readonly certificateChainDer: Buffer[];
  readonly expiresAt: Date;
}

/** The active X.509 CA as TLS needs it. */
export interface X509AuthorityChain {
  /** Our CA certificate, then the upstream intermediates; never a self-signed root of the upstream. */
  readonly certificateChainDer: Buffer[];
  readonly notAfter: Date;
}

/** A workload X.509-SVID to sign from an agent's CSR, for an entry already authorised. */
export interface CsrSvidRequest {
  /** The leaf's SPIFFE ID (the entry's, parsed). */
  readonly spiffeId: SpiffeId;
  /** The entry's SPIFFE ID as stored, which a URI SAN of the CSR must name, and whether that text is canonical. */
  readonly entrySpiffeId: string;
  readonly entrySpiffeIdCanonical: boolean;
  /** The PKCS#10 CSR; its self-signature is verified and only its public key is used. */
  readonly csr: string;
  /** The request field named in error messages, e.g. `csrs.3.csr`. */
  readonly field: string;
  readonly dnsNames: readonly string[];
  /** Requested lifetime; defaults to the configured X.509-SVID TTL and never outlives the CA. */
  readonly ttlSeconds?: number;
}

/** ES256 is SPIRE's default (P-256 keys); the other key types sign with their natural algorithm. */
const JWT_ALGORITHM: Readonly<Record<CaKeyType, JwtSvidAlgorithm>> = {
  'ec-p256': 'ES256',
  'ec-p384': 'ES384',
  'rsa-2048': 'RS256',
};

/**
 * Signs X.509-SVIDs and JWT-SVIDs with the active keys of the {@link KeyManager}. X.509 leaves go through the fast
 * `X509SvidSigner`, one per active CA key; lifetimes are capped by the signing key's remaining life. Agents' CSR
 * chunks ({@link signX509SvidCsrs}) are signed on `signing_workers` worker threads (every core), or on the event
 * loop when that is 0; each chunk is signed with the key active when it is handed over.
 */
@Injectable()
export class CaService implements OnApplicationShutdown {
  private signer: { keyId: string; signer: X509SvidSigner } | undefined;
  private readonly pool: CsrSigningPool | undefined;
  /** Leaf SPIFFE IDs parsed on the event loop (signing without workers). */
  private readonly leafIds = new SpiffeIdCache();

  constructor(
    private readonly keys: KeyManager,
    @Inject(CLOCK) private readonly clock: Clock,
    @Inject(SERVER_CONFIG)
    private readonly config: Pick<
      ServerConfig,
      'trustDomain' | 'x509SvidTtlSeconds' | 'jwtSvidTtlSeconds' | 'jwtIssuer'
    > &
      Partial<Pick<ServerConfig, 'signingWorkers'>>,
    @Optional() @Inject(AUTHORITY_METRICS) private readonly metrics: AuthorityMetrics = noAuthorityMetrics,
  ) {
    const workers = config.signingWorkers ?? 0;
    this.pool = workers > 0 ? new CsrSigningPool(workers) : undefined;
  }

  /** Ends the signing workers. */
  async onApplicationShutdown(): Promise<void> {
    await this.pool?.close();
  }

  /** Signing worker threads running now (0 without workers; they start with the first chunk). */
  get signingWorkersRunning(): number {
    return this.pool?.running ?? 0;
  }

  /** True once the X.509 CA and the JWT key are active (for `/readyz`). */
  isReady(): boolean {
    return this.keys.isReady();
  }

  /**
   * When the active and prepared keys of each kind expire, as last loaded (the `/metrics` gauges operators alert on:
   * an active key close to its end with no prepared one means rotation is stuck).
   */
  authorityExpiries(): { kind: AuthorityKind; state: 'active' | 'prepared'; notAfter: Date }[] {
    const expiries: { kind: AuthorityKind; state: 'active' | 'prepared'; notAfter: Date }[] = [];
    for (const kind of ['x509', 'jwt'] as const) {
      const slots = this.keys.slots(kind);
      for (const state of ['active', 'prepared'] as const) {
        const key = slots[state];
        if (key !== undefined) expiries.push({ kind, state, notAfter: key.notAfter });
      }
    }
    return expiries;
  }

  /** Signs an X.509-SVID with the active CA key. */
  signX509Svid(request: SignX509SvidRequest): SignedX509Svid {
    const started = performance.now();
    this.checkTrustDomain(request.spiffeId);
    if ((request.spkiDer === undefined) === (request.csr === undefined)) {
      throw new AppError('invalid_argument', 'request: must carry exactly one of spkiDer or csr');
    }
    const { key } = this.keys.signingAuthority('x509');
    const now = this.now();
    const ttlSeconds = this.ttl(request.ttlSeconds, this.config.x509SvidTtlSeconds, key.notAfter, now);
    const params = { spiffeId: request.spiffeId, dnsNames: request.dnsNames ?? [], ttlSeconds, now };
    const signer = this.x509Signer();
    let leaf: Buffer;
    try {
      leaf =
        request.csr !== undefined
          ? signer.signCsr(request.csr, params)
          : signer.sign({ ...params, spkiDer: request.spkiDer! });
    } catch (error) {
      throw asInvalidArgument(error, request.csr !== undefined ? 'csr' : 'spkiDer');
    }
    this.metrics.svidSigned('x509', (performance.now() - started) / 1000);
    // A self-signed CA is the root relying parties hold, so the chain is the leaf alone; an intermediate travels along.
    const intermediates = key.upstreamChainDer.length > 0 ? this.x509Authority().certificateChainDer : [];
    return {
      certificateChainDer: [leaf, ...intermediates],
      expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
    };
  }

  /**
   * Signs workload X.509-SVIDs from agents' CSRs with the active CA key (one key for the whole chunk, the one active
   * now): each CSR's signature verified, a URI SAN in it must name the entry's ID, the leaf gets the entry's ID, DNS
   * names and TTL. One result per request, in order: the SVID, or the AppError that refused it (the others go on).
   */
  async signX509SvidCsrs(requests: readonly CsrSvidRequest[]): Promise<(SignedX509Svid | AppError)[]> {
    if (requests.length === 0) return [];
    const started = performance.now();
    let authority;
    try {
      authority = this.keys.signingAuthority('x509');
    } catch (error) {
      // No active key yet: each CSR is refused with it, as one by one (the batch's other results go on).
      if (error instanceof AppError) return requests.map(() => error);
      throw error;
    }
    const { key, privateKey } = authority;
    // Taken with the key, before any await: a rotation meanwhile must not pair another CA's chain with this leaf.
    const intermediates = key.upstreamChainDer.length > 0 ? this.x509Authority().certificateChainDer : [];
    const now = this.now();
    const results = new Array<SignedX509Svid | AppError>(requests.length);
    const items: CsrToSign[] = [];
    const positions: number[] = [];
    const expiries: Date[] = [];
    requests.forEach((request, index) => {
      try {
        this.checkTrustDomain(request.spiffeId);
        const ttlSeconds = this.ttl(request.ttlSeconds, this.config.x509SvidTtlSeconds, key.notAfter, now);
        items.push({
          csr: request.csr,
          entrySpiffeId: request.entrySpiffeId,
          entrySpiffeIdCanonical: request.entrySpiffeIdCanonical,
          spiffeId: request.spiffeId.toString(),
          dnsNames: request.dnsNames,
          ttlSeconds,
          field: request.field,
        });
        positions.push(index);
        expiries.push(new Date(now.getTime() + ttlSeconds * 1000));
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        results[index] = error;
      }
    });
    const outcomes: CsrSigningOutcome[] =
      this.pool === undefined
        ? await signCsrs(this.x509Signer(), now, items, this.leafIds)
        : await this.pool.sign({ id: key.id, certificateDer: key.certificateDer!, privateKey }, now, items);
    let signed = 0;
    outcomes.forEach((outcome, position) => {
      const index = positions[position]!;
      if (!outcome.ok) {
        results[index] = new AppError('invalid_argument', outcome.message);
        return;
      }
      signed += 1;
      results[index] = {
        certificateChainDer: [asBuffer(outcome.leafDer), ...intermediates],
        expiresAt: expiries[position]!,
      };
    });
    // The chunk's time shared among its leaves (they are signed together).
    const seconds = (performance.now() - started) / 1000;
    for (let i = 0; i < signed; i++) this.metrics.svidSigned('x509', seconds / signed);
    return results;
  }

  /**
   * Publishes a downstream server's JWT key in our bundle until it expires ({@link KeyManager.publishDownstreamJwtAuthority}),
   * for a caller the downstream guard authenticated; returns it as stored (its expiry cut to `maxLifetimeSeconds`).
   */
  publishDownstreamJwtAuthority(
    caller: string,
    key: SharedJwtAuthority,
    limits: { readonly maxLifetimeSeconds: number; readonly maxPerCaller: number },
  ): Promise<SharedJwtAuthority> {
    return this.keys.publishDownstreamJwtAuthority(caller, key, limits);
  }

  /** Our bundle's JWT authorities with their expiry, ours and the shared ones ({@link KeyManager.bundleJwtAuthorities}). */
  bundleJwtAuthorities(): Promise<SharedJwtAuthority[]> {
    return this.keys.bundleJwtAuthorities();
  }

  /** Signs a JWT-SVID with the active JWT key and its `kid`. */
  async signJwtSvid(request: SignJwtSvidRequest): Promise<SignedJwtSvid> {
    const started = performance.now();
    this.checkTrustDomain(request.spiffeId);
    const audienceProblem = jwtAudienceProblem(request.audience);
    if (audienceProblem !== undefined) throw new AppError('invalid_argument', audienceProblem);
    const { key, privateKey } = this.keys.signingAuthority('jwt');
    const now = this.now();
    const ttlSeconds = this.ttl(request.ttlSeconds, this.config.jwtSvidTtlSeconds, key.notAfter, now);
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
    let token: string;
    try {
      token = await signJwtSvid({
        spiffeId: request.spiffeId,
        audience: [...request.audience],
        privateKey,
        kid: key.authorityId,
        alg: JWT_ALGORITHM[key.keyType],
        issuedAt: now,
        expiresAt,
        ...(this.config.jwtIssuer !== undefined && { issuer: this.config.jwtIssuer }),
      });
    } catch (error) {
      throw asInvalidArgument(error, 'jwt-svid');
    }
    this.metrics.svidSigned('jwt', (performance.now() - started) / 1000);
    return { token, expiresAt };
  }

  /**
   * Signs the CSR's public key as an intermediate CA of our trust domain (SPIRE's `SignDownstreamX509CA`): cA=true
   * with no path length limit (a downstream server may itself have downstreams), keyCertSign + cRLSign, URI SAN
   * `spiffe://<td>`, a subject of its own; only the CSR's key is used, never its names. The lifetime is `ttlSeconds`,
   * cut at our active CA's not-after.
   */
  async signDownstreamX509Ca(request: { csr: Uint8Array; ttlSeconds: number }): Promise<SignedDownstreamCa> {
    let spkiDer: Buffer;
    try {
      spkiDer = parseCsrFast(request.csr).spkiDer;
    } catch (error) {
      throw asInvalidArgument(error, 'csr');
    }
    const { key, privateKey } = this.keys.signingAuthority('x509');
    // Taken with the key, before any await: a rotation meanwhile must not pair another CA's chain with this one.
    const above = this.x509Authority().certificateChainDer;
    const now = this.now();
    const ttlSeconds = this.ttl(request.ttlSeconds, this.config.x509SvidTtlSeconds, key.notAfter, now);
    let ca;
    try {
      ca = await createIntermediateCa({
        trustDomain: this.config.trustDomain,
        publicKey: await importPublicKeySpki(spkiDer),
        issuer: { certificate: key.certificateDer!, privateKey },
        ttlSeconds,
        now,
      });
    } catch (error) {
      throw asInvalidArgument(error, 'csr');
    }
    return {
      certificateChainDer: [Buffer.from(ca.der), ...above],
      expiresAt: ca.certificate.notAfter,
    };
  }

  /** The active X.509 CA's certificate chain, for TLS (the server's own SVID is issued with {@link signX509Svid}). */
  x509Authority(): X509AuthorityChain {
    const { key } = this.keys.signingAuthority('x509');
    const upstreamIntermediates = key.upstreamChainDer.slice(0, -1);
    return { certificateChainDer: [key.certificateDer!, ...upstreamIntermediates], notAfter: key.notAfter };
  }

  private x509Signer(): X509SvidSigner {
    const { key, privateKey } = this.keys.signingAuthority('x509');
    if (this.signer?.keyId !== key.id) {
      this.signer = { keyId: key.id, signer: X509SvidSigner.create({ certificate: key.certificateDer!, privateKey }) };
    }
    return this.signer.signer;
  }

  private checkTrustDomain(spiffeId: SpiffeId): void {
    if (!spiffeId.trustDomain.equals(this.config.trustDomain)) {
      throw new AppError(
        'invalid_argument',
        `spiffeId: must be in trust domain ${this.config.trustDomain.name}, got ${spiffeId.toString()}`,
      );
    }
  }

  /** Certificates carry whole seconds; signing at a whole second keeps `expiresAt` equal to the leaf's not-after. */
  private now(): Date {
    return new Date(Math.floor(this.clock.now().getTime() / 1000) * 1000);
  }

  private ttl(requested: number | undefined, fallback: number, keyNotAfter: Date, now: Date): number {
    const ttl = requested ?? fallback;
    if (!Number.isSafeInteger(ttl) || ttl <= 0) {
      throw new AppError('invalid_argument', `ttlSeconds: must be a positive whole number of seconds, got ${ttl}`);
    }
    const remaining = Math.floor((keyNotAfter.getTime() - now.getTime()) / 1000);
    if (remaining <= 0) throw new AppError('unavailable', 'ca: the active key has expired, rotation is overdue');
    return Math.min(ttl, remaining);
  }
}

/** A worker's leaf arrives as a Uint8Array: a Buffer view on the same bytes, not a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function asInvalidArgument(error: unknown, field: string): unknown {
  if (error instanceof PkiError || error instanceof SpiffeError) {
    return new AppError('invalid_argument', `${field}: ${error.message}`, { cause: error });
  }
  return error;
}
