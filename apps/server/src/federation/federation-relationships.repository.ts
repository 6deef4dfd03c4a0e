import { Injectable } from '@nestjs/common';
import { DataSource, QueryFailedError } from 'typeorm';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { FederationRelationshipEntity } from './federation-relationship.entity.js';
import type { FederationRelationship } from './federation-relationship-rules.js';

/** A stored relationship with its times. */
export interface StoredFederationRelationship extends FederationRelationship {
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** I/O of the `federation_relationships` table. */
@Injectable()
export class FederationRelationshipsRepository {
  constructor(private readonly dataSource: DataSource) {}

  async list(): Promise<StoredFederationRelationship[]> {
    const rows = await this.dataSource.manager.find(FederationRelationshipEntity, { order: { trustDomain: 'ASC' } });
    return rows.map(toRelationship);
  }

  async find(trustDomain: string): Promise<StoredFederationRelationship | undefined> {
    const row = await this.dataSource.manager.findOneBy(FederationRelationshipEntity, { trustDomain });
    return row === null ? undefined : toRelationship(row);
  }

  /** Inserts the relationship; false when its trust domain already has one. */
  async insert(relationship: StoredFederationRelationship): Promise<boolean> {
    try {
      await this.dataSource.manager.insert(FederationRelationshipEntity, toRow(relationship));
      return true;
    } catch (error) {
      if (error instanceof QueryFailedError && (error.driverError as { code?: string }).code === '23505') return false;
      throw error;
    }
  }

  /** Replaces the stored relationship of the same trust domain (created_at kept); false when there is none. */
  async update(relationship: StoredFederationRelationship): Promise<boolean> {
    const { createdAt: _kept, ...row } = toRow(relationship);
    const result = await this.dataSource.manager.update(
      FederationRelationshipEntity,
      { trustDomain: row.trustDomain },
      row,
    );
    return (result.affected ?? 0) > 0;
  }

  async delete(trustDomain: string): Promise<boolean> {
    const result = await this.dataSource.manager.delete(FederationRelationshipEntity, { trustDomain });
    return (result.affected ?? 0) > 0;
  }
}

function toRow(relationship: StoredFederationRelationship): FederationRelationshipEntity {
  return Object.assign(new FederationRelationshipEntity(), {
    trustDomain: relationship.trustDomain.name,
    bundleEndpointUrl: relationship.bundleEndpointUrl,
    bundleEndpointProfile: relationship.bundleEndpointProfile,
    endpointSpiffeId: relationship.endpointSpiffeId?.toString() ?? null,
    createdAt: relationship.createdAt,
    updatedAt: relationship.updatedAt,
  });
}

function toRelationship(row: FederationRelationshipEntity): StoredFederationRelationship {
  return {
    trustDomain: TrustDomain.parse(row.trustDomain),
    bundleEndpointUrl: row.bundleEndpointUrl,
    bundleEndpointProfile: row.bundleEndpointProfile,
    ...(row.endpointSpiffeId !== null && { endpointSpiffeId: SpiffeId.parse(row.endpointSpiffeId) }),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}
