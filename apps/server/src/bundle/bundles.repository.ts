import { Injectable } from '@nestjs/common';
import { DataSource, type EntityManager } from 'typeorm';
import { BundleEntity } from './bundle.entity.js';

/** I/O of the `bundles` table. */
@Injectable()
export class BundlesRepository {
  constructor(private readonly dataSource: DataSource) {}

  findByTrustDomain(
    trustDomain: string,
    manager: EntityManager = this.dataSource.manager,
  ): Promise<BundleEntity | null> {
    return manager.findOneBy(BundleEntity, { trustDomain });
  }

  /** Reads the row and locks it until the transaction ends, so its sequence is bumped by one writer at a time. */
  findByTrustDomainForUpdate(manager: EntityManager, trustDomain: string): Promise<BundleEntity | null> {
    return manager
      .createQueryBuilder(BundleEntity, 'bundle')
      .setLock('pessimistic_write')
      .where('bundle.trustDomain = :trustDomain', { trustDomain })
      .getOne();
  }

  /** The stored `spiffe_sequence`, or null when the trust domain has no bundle. */
  async sequenceOf(trustDomain: string): Promise<string | null> {
    const rows: { sequence: string }[] = await this.dataSource.query(
      'SELECT sequence FROM bundles WHERE trust_domain = $1',
      [trustDomain],
    );
    return rows[0]?.sequence ?? null;
  }

  async save(manager: EntityManager, bundle: BundleEntity): Promise<void> {
    await manager.upsert(BundleEntity, bundle, ['trustDomain']);
  }
}
