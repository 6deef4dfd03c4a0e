import { Inject, Injectable, Logger } from '@nestjs/common';
import type { TrustBundle } from '@sigil/spiffe';
import { BundleService, type FederatedBundle } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { decodePageToken, encodePageToken } from '../common/page-token.js';
import { EntriesService, type FederatingEntriesEffect } from '../entries/entries.service.js';
import {
  parseFederatedBundle,
  parseFederatedTrustDomain,
  type FederatedBundleFormat,
} from './federated-bundle-rules.js';

export interface FederatedBundlePage {
  readonly bundles: readonly FederatedBundle[];
  readonly nextPageToken?: string;
}

/**
 * Foreign trust domains' bundles set by hand (SPIRE's `bundle list|show|set|delete|count`). A change reaches the
 * agents through the registry's revisions: setting or deleting a bundle gives every entry that federates with its
 * trust domain a new revision in the same transaction, so agents holding those entries sync again at once and
 * receive the bundles as they now are.
 */
@Injectable()
export class FederationService {
  private readonly logger = new Logger(FederationService.name);

  constructor(
    private readonly bundles: BundleService,
    private readonly entries: EntriesService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  async list(page: { pageSize: number; pageToken?: string }): Promise<FederatedBundlePage> {
    const after =
      page.pageToken === undefined || page.pageToken === ''
        ? undefined
        : decodePageToken(page.pageToken, (key) => isTrustDomainName(key));
    const found = await this.bundles.listFederated(after, page.pageSize + 1);
    const bundles = found.slice(0, page.pageSize);
    const last = bundles.at(-1);
    return found.length > page.pageSize && last
      ? { bundles, nextPageToken: encodePageToken(last.bundle.trustDomain.name) }
      : { bundles };
  }

  async count(): Promise<number> {
    return this.bundles.countFederated();
  }

  async get(trustDomain: string): Promise<FederatedBundle> {
    const parsed = parseFederatedTrustDomain(trustDomain);
    const found = await this.bundles.federatedBundle(parsed);
    if (found === undefined) throw notFound(parsed.name);
    return found;
  }

  /** Creates or replaces the bundle of a foreign trust domain, after checking it (federated-bundle-rules.ts). */
  async set(trustDomain: string, format: FederatedBundleFormat, text: string): Promise<FederatedBundle> {
    const bundle = parseFederatedBundle(parseFederatedTrustDomain(trustDomain), format, text);
    return this.store(bundle, 'federated bundle set');
  }

  /**
   * Stores a bundle fetched from a bundle endpoint (already checked by the same rules as {@link set}) when it differs
   * from the stored one: authorities, refresh hint, and the sequence when the endpoint sent one. Every replica
   * fetches, so an unchanged bundle writes nothing and announces nothing.
   *
   * @returns the stored bundle when it changed, undefined when it was the same.
   */
  async storeFetched(bundle: TrustBundle): Promise<FederatedBundle | undefined> {
    const stored = await this.bundles.federatedBundle(bundle.trustDomain);
    if (stored !== undefined && sameBundle(stored.bundle, bundle)) return undefined;
    return this.store(bundle, 'federated bundle fetched and changed');
  }

  private async store(bundle: TrustBundle, msg: string): Promise<FederatedBundle> {
    const { result, entryIds } = await this.entries.writeWithFederatingEntries(
      bundle.trustDomain.name,
      'announce',
      (tx) => this.bundles.storeFederated(tx, bundle, this.clock.now()),
    );
    this.logger.log({
      msg,
      trustDomain: bundle.trustDomain.name,
      sequence: result.bundle.sequenceNumber,
      x509Authorities: bundle.x509Authorities.length,
      jwtAuthorities: bundle.jwtAuthorities.size,
      federatingEntries: entryIds.length,
    });
    return result;
  }

  /**
   * Deletes the bundle of a foreign trust domain; `effect` says what becomes of the entries that federate with it.
   *
   * @returns the trust domain's name and the ids of the entries deleted or dissociated.
   */
  async delete(
    trustDomain: string,
    effect: Exclude<FederatingEntriesEffect, 'announce'>,
  ): Promise<{ trustDomain: string; entryIds: string[] }> {
    const parsed = parseFederatedTrustDomain(trustDomain);
    const { entryIds } = await this.entries.writeWithFederatingEntries(parsed.name, effect, async (tx) => {
      if (!(await this.bundles.deleteFederated(tx, parsed))) throw notFound(parsed.name);
    });
    this.logger.log({
      msg: 'federated bundle deleted',
      trustDomain: parsed.name,
      mode: effect,
      entries: entryIds.length,
    });
    return { trustDomain: parsed.name, entryIds: effect === 'restrict' ? [] : entryIds };
  }
}

/** Same contents; a fetched bundle without `spiffe_sequence` is compared without the stored one's. */
function sameBundle(stored: TrustBundle, fetched: TrustBundle): boolean {
  return (fetched.sequenceNumber === undefined ? stored.withSequenceNumber(undefined) : stored).equals(fetched);
}

function isTrustDomainName(key: string): boolean {
  try {
    return parseFederatedTrustDomain(key).name === key;
  } catch {
    return false;
  }
}

function notFound(trustDomain: string): AppError {
  return new AppError('not_found', `no federated bundle for trust domain ${trustDomain}`);
}
