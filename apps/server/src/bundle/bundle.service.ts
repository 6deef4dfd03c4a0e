import { createPublicKey } from 'node:crypto';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { TrustBundle, TrustDomain, type SpiffeJwks } from '@sigil/spiffe';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import type { Transaction } from '../database/transaction.js';
import { BundlesRepository } from './bundles.repository.js';
import type { StoredBundle, StoredJwtAuthority } from './stored-bundle.js';

/** The authorities our trust domain publishes: CA root certificates and JWT public keys. */
export interface OwnAuthorities {
  /** DER of each X.509 authority (our self-signed roots, or the upstream roots). */
  readonly x509Authorities: readonly Uint8Array[];
  /** Each JWT key's `kid` and SubjectPublicKeyInfo DER. */
  readonly jwtAuthorities: readonly { readonly kid: string; readonly publicKeyDer: Uint8Array }[];
  /** Authority IDs of the tainted keys among them, sent to agents with the bundle (not part of the SPIFFE bundle). */
  readonly taintedAuthorities: readonly string[];
}

/** A foreign trust domain's bundle as stored (`bundle set`), and when it was last set. */
export interface FederatedBundle {
  readonly bundle: TrustBundle;
  readonly updatedAt: Date;
}

const MAX_REFRESH_HINT_SECONDS = 300;

/**
 * `spiffe_refresh_hint`: 5 minutes (SPIRE's bundle endpoint default), but at most a twelfth of the CA TTL, so relying
 * parties refetch at least four times between a key's preparation (1/2) and its activation (5/6 of the lifetime).
 */
export function refreshHintFor(caTtlSeconds: number): number {
  return Math.max(1, Math.min(MAX_REFRESH_HINT_SECONDS, Math.floor(caTtlSeconds / 12)));
}

/**
 * Our own trust bundle. The key manager writes the authorities inside its journal transaction
 * ({@link replaceOwnAuthorities}), which bumps `spiffe_sequence` by one on every change; every replica serves the
 * bundle from memory and reloads it when the stored sequence moves ({@link refreshOwn}).
 */
@Injectable()
export class BundleService {
  private readonly logger = new Logger(BundleService.name);
  private readonly trustDomain: ServerConfig['trustDomain'];
  private readonly refreshHintSeconds: number;
  private own: TrustBundle | undefined;
  private ownTainted: readonly string[] = [];
  private readonly ownChangeListeners = new Set<(sequence: number) => void>();

  constructor(
    private readonly bundles: BundlesRepository,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'trustDomain' | 'caTtlSeconds'>,
  ) {
    this.trustDomain = config.trustDomain;
    this.refreshHintSeconds = refreshHintFor(config.caTtlSeconds);
  }

  /**
   * Stores `authorities` as our bundle when they differ from the stored ones, with the sequence increased by one
   * (1 for the first bundle). Runs in the caller's transaction, which must hold the rotation lock.
   *
   * @returns the sequence number now stored, and whether it changed.
   */
  async replaceOwnAuthorities(
    tx: Transaction,
    authorities: OwnAuthorities,
    now: Date,
  ): Promise<{ changed: boolean; sequence: number }> {
    // Several intermediates under one upstream root publish that root once.
    const x509Authorities = [...new Set(authorities.x509Authorities.map((der) => Buffer.from(der).toString('base64')))];
    const jwtAuthorities: StoredJwtAuthority[] = authorities.jwtAuthorities.map(({ kid, publicKeyDer }) => ({
      kid,
      jwk: publicJwk(publicKeyDer),
    }));
    const taintedAuthorities = [...authorities.taintedAuthorities].sort();
    const stored = await this.bundles.findByTrustDomainForUpdate(tx, this.trustDomain.name);
    // A taint moves the sequence too: that is how every replica reloads it and every agent's sync hears of it.
    const unchanged =
      stored !== null &&
      stored.refreshHintSeconds === this.refreshHintSeconds &&
      sameJson(stored.x509Authorities, x509Authorities) &&
      sameJson(stored.jwtAuthorities, jwtAuthorities) &&
      sameJson(stored.taintedAuthorities ?? [], taintedAuthorities);
    if (unchanged) return { changed: false, sequence: Number(stored.sequence) };

    const sequence = stored === null ? 1 : Number(stored.sequence) + 1;
    await this.bundles.save(tx, {
      trustDomain: this.trustDomain.name,
      x509Authorities,
      jwtAuthorities,
      taintedAuthorities,
      refreshHintSeconds: this.refreshHintSeconds,
      sequence: String(sequence),
      updatedAt: now,
    });
    return { changed: true, sequence };
  }

  /** Reloads our bundle when the stored sequence differs from the one in memory; true when it reloaded. */
  async refreshOwn(): Promise<boolean> {
    const sequence = await this.bundles.sequenceOf(this.trustDomain.name);
    if (sequence === null || (this.own !== undefined && this.own.sequenceNumber === Number(sequence))) return false;
    const row = await this.bundles.findByTrustDomain(this.trustDomain.name);
    if (row === null) return false;
    this.own = toTrustBundle(row);
    this.ownTainted = row.taintedAuthorities ?? [];
    this.logger.log({
      msg: 'trust bundle loaded',
      trustDomain: this.trustDomain.name,
      sequence: this.own.sequenceNumber,
      x509Authorities: this.own.x509Authorities.length,
      jwtAuthorities: this.own.jwtAuthorities.size,
      taintedAuthorities: this.ownTainted,
    });
    for (const listener of [...this.ownChangeListeners]) listener(this.own.sequenceNumber ?? 0);
    return true;
  }

  /** Calls `listener` with the new sequence whenever this replica loads a changed bundle; returns the unsubscriber. */
  onOwnBundleChange(listener: (sequence: number) => void): () => void {
    this.ownChangeListeners.add(listener);
    return () => this.ownChangeListeners.delete(listener);
  }

  /**
   * The stored bundles of these other (federated) trust domains as SPIFFE JWKS, by trust domain name; trust domains
   * with no stored bundle are left out.
   */
  async federatedJwks(trustDomains: readonly string[]): Promise<Map<string, SpiffeJwks>> {
    const found = new Map<string, SpiffeJwks>();
    for (const name of new Set(trustDomains)) {
      if (name === this.trustDomain.name) continue;
      const row = await this.bundles.findByTrustDomain(name);
      if (row === null) continue;
      found.set(name, toTrustBundle(row).toJwks());
    }
    return found;
  }

  /** The stored bundle of a foreign trust domain, if any. */
  async federatedBundle(trustDomain: TrustDomain): Promise<FederatedBundle | undefined> {
    if (trustDomain.equals(this.trustDomain)) return undefined;
    const row = await this.bundles.findByTrustDomain(trustDomain.name);
    return row === null ? undefined : toFederated(row);
  }

  /** Up to `limit` stored foreign bundles after the trust domain `after`, by trust domain name. */
  async listFederated(after: string | undefined, limit: number): Promise<FederatedBundle[]> {
    return (await this.bundles.listExcept(this.trustDomain.name, after, limit)).map(toFederated);
  }

  /** The number of stored foreign bundles. */
  async countFederated(): Promise<number> {
    return this.bundles.countExcept(this.trustDomain.name);
  }

  /**
   * Stores (creates or replaces) a foreign trust domain's bundle in the caller's transaction. Its `spiffe_sequence`
   * is kept when it has one; otherwise the stored one goes up by one (1 for a new bundle).
   *
   * @throws AppError `invalid_argument` for our own trust domain, whose bundle only the key manager writes.
   */
  async storeFederated(tx: Transaction, bundle: TrustBundle, now: Date): Promise<FederatedBundle> {
    this.refuseOwn(bundle.trustDomain);
    const stored = await this.bundles.findByTrustDomainForUpdate(tx, bundle.trustDomain.name);
    const sequence = bundle.sequenceNumber ?? (stored === null ? 1 : Number(stored.sequence) + 1);
    const row: StoredBundle = {
      trustDomain: bundle.trustDomain.name,
      x509Authorities: bundle.x509AuthoritiesDer().map((der) => Buffer.from(der).toString('base64')),
      jwtAuthorities: [...bundle.jwtAuthorities].map(([kid, jwk]) => ({ kid, jwk: { ...jwk } })),
      refreshHintSeconds: bundle.refreshHintSeconds ?? null,
      sequence: String(sequence),
      updatedAt: now,
    };
    await this.bundles.save(tx, row);
    return toFederated(row);
  }

  /**
   * Deletes a foreign trust domain's bundle in the caller's transaction; false when none was stored.
   *
   * @throws AppError `invalid_argument` for our own trust domain.
   */
  async deleteFederated(tx: Transaction, trustDomain: TrustDomain): Promise<boolean> {
    this.refuseOwn(trustDomain);
    return this.bundles.delete(tx, trustDomain.name);
  }

  /** @throws AppError `invalid_argument` for our own trust domain (no foreign bundle or relationship may name it). */
  refuseOwn(trustDomain: TrustDomain): void {
    if (trustDomain.equals(this.trustDomain)) {
      throw new AppError(
        'invalid_argument',
        `trust_domain: ${trustDomain.name} is this server's own trust domain; its bundle is managed by the server's authorities, not set by hand`,
      );
    }
  }

  /** Our trust bundle as last loaded. */
  ownBundle(): TrustBundle {
    if (this.own === undefined) {
      throw new AppError('unavailable', 'bundle: the trust bundle has not been loaded yet, the authority is starting');
    }
    return this.own;
  }

  /** Authority IDs of our tainted keys, as last loaded with the bundle. */
  ownTaintedAuthorities(): readonly string[] {
    return this.ownTainted;
  }

  /** Our bundle in the SPIFFE JWKS form, with `spiffe_sequence` and `spiffe_refresh_hint`. */
  ownJwks(): SpiffeJwks {
    return this.ownBundle().toJwks();
  }

  /** Our X.509 authorities as PEM certificates. */
  ownPem(): string {
    return this.ownBundle().x509Pem();
  }
}

function toTrustBundle(row: StoredBundle): TrustBundle {
  return TrustBundle.create(TrustDomain.parse(row.trustDomain), {
    x509Authorities: row.x509Authorities.map((der) => Buffer.from(der, 'base64')),
    jwtAuthorities: row.jwtAuthorities.map(({ kid, jwk }) => [kid, jwk] as const),
    sequenceNumber: Number(row.sequence),
    ...(row.refreshHintSeconds !== null && { refreshHintSeconds: row.refreshHintSeconds }),
  });
}

function toFederated(row: StoredBundle): FederatedBundle {
  return { bundle: toTrustBundle(row), updatedAt: row.updatedAt };
}

function publicJwk(spkiDer: Uint8Array): Record<string, string> {
  const jwk = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' }).export({ format: 'jwk' });
  return Object.fromEntries(
    Object.entries(jwk).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
  );
}

// jsonb does not keep object key order, so compare with keys sorted.
function sameJson(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonical(item)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}
