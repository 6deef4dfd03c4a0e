import { Inject, Injectable, Logger } from '@nestjs/common';
import { BundleService } from '../bundle/bundle.service.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { parseFederatedTrustDomain } from './federated-bundle-rules.js';
import {
  type FederationRelationship,
  type FederationRelationshipInput,
  parseFederationRelationship,
} from './federation-relationship-rules.js';
import {
  FederationRelationshipsRepository,
  type StoredFederationRelationship,
} from './federation-relationships.repository.js';

export type { StoredFederationRelationship } from './federation-relationships.repository.js';

/**
 * Federation relationships (SPIRE's `federation create|update|delete|list|show`): where each foreign trust domain's
 * bundle endpoint is and how to authenticate it. The bundles themselves stay in `bundles` (FederationService).
 */
@Injectable()
export class FederationRelationshipsService {
  private readonly logger = new Logger(FederationRelationshipsService.name);

  constructor(
    private readonly relationships: FederationRelationshipsRepository,
    private readonly bundles: BundleService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  list(): Promise<StoredFederationRelationship[]> {
    return this.relationships.list();
  }

  async get(trustDomain: string): Promise<StoredFederationRelationship> {
    const parsed = parseFederatedTrustDomain(trustDomain);
    const found = await this.relationships.find(parsed.name);
    if (found === undefined) throw notFound(parsed.name);
    return found;
  }

  /** @throws AppError `already_exists` when the trust domain has a relationship. */
  async create(input: FederationRelationshipInput): Promise<StoredFederationRelationship> {
    const now = this.clock.now();
    const stored = { ...this.parse(input), createdAt: now, updatedAt: now };
    if (!(await this.relationships.insert(stored))) {
      throw new AppError(
        'already_exists',
        `trust_domain: ${stored.trustDomain.name} already has a federation relationship`,
      );
    }
    this.logger.log({ msg: 'federation relationship created', ...describe(stored) });
    return stored;
  }

  /** Replaces the endpoint settings of an existing relationship. */
  async update(input: FederationRelationshipInput): Promise<StoredFederationRelationship> {
    const relationship = this.parse(input);
    const existing = await this.get(relationship.trustDomain.name);
    const stored = { ...relationship, createdAt: existing.createdAt, updatedAt: this.clock.now() };
    if (!(await this.relationships.update(stored))) throw notFound(stored.trustDomain.name);
    this.logger.log({ msg: 'federation relationship updated', ...describe(stored) });
    return stored;
  }

  /** Deletes the relationship; the trust domain's bundle stays (delete it with `bundle delete`), as in SPIRE. */
  async delete(trustDomain: string): Promise<string> {
    const parsed = parseFederatedTrustDomain(trustDomain);
    if (!(await this.relationships.delete(parsed.name))) throw notFound(parsed.name);
    this.logger.log({ msg: 'federation relationship deleted', trustDomain: parsed.name });
    return parsed.name;
  }

  private parse(input: FederationRelationshipInput): FederationRelationship {
    const relationship = parseFederationRelationship(input);
    this.bundles.refuseOwn(relationship.trustDomain);
    return relationship;
  }
}

function describe(relationship: FederationRelationship): Record<string, string> {
  return {
    trustDomain: relationship.trustDomain.name,
    bundleEndpointUrl: relationship.bundleEndpointUrl,
    profile: relationship.bundleEndpointProfile,
    ...(relationship.endpointSpiffeId && { endpointSpiffeId: relationship.endpointSpiffeId.toString() }),
  };
}

function notFound(trustDomain: string): AppError {
  return new AppError('not_found', `no federation relationship for trust domain ${trustDomain}`);
}
