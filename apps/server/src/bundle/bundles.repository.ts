import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { managerOf, type Transaction } from '../database/transaction.js';
import { BundleEntity } from './bundle.entity.js';
import type { StoredBundle } from './stored-bundle.js';

/** I/O of the `bundles` table. */
@Injectable()
export class BundlesRepository {
  constructor(private readonly dataSource: DataSource) {}

  async findByTrustDomain(trustDomain: string): Promise<StoredBundle | null> {
    return toStored(await this.dataSource.manager.findOneBy(BundleEntity, { trustDomain }));
  }

  /** Reads the row and locks it until the transaction ends, so its sequence is bumped by one writer at a time. */
  async findByTrustDomainForUpdate(tx: Transaction, trustDomain: string): Promise<StoredBundle | null> {
    return toStored(
      await managerOf(tx)
        .createQueryBuilder(BundleEntity, 'bundle')
        .setLock('pessimistic_write')
        .where('bundle.trustDomain = :trustDomain', { trustDomain })
        .getOne(),
    );
  }

  /** The stored `spiffe_sequence`, or null when the trust domain has no bundle. */
  async sequenceOf(trustDomain: string): Promise<string | null> {
    const rows: { sequence: string }[] = await this.dataSource.query(
      'SELECT sequence FROM bundles WHERE trust_domain = $1',
      [trustDomain],
    );
    return rows[0]?.sequence ?? null;
  }

  /** Up to `limit` bundles of trust domains other than `except`, after `afterTrustDomain`, by trust domain name. */
  async listExcept(except: string, afterTrustDomain: string | undefined, limit: number): Promise<StoredBundle[]> {
    const query = this.dataSource.manager
      .createQueryBuilder(BundleEntity, 'bundle')
      .where('bundle.trustDomain <> :except', { except });
    if (afterTrustDomain !== undefined) query.andWhere('bundle.trustDomain > :after', { after: afterTrustDomain });
    const rows = await query.orderBy('bundle.trustDomain', 'ASC').limit(limit).getMany();
    return rows.map((row) => ({ ...row }));
  }

  /** The number of bundles of trust domains other than `except`. */
  async countExcept(except: string): Promise<number> {
    return this.dataSource.manager
      .createQueryBuilder(BundleEntity, 'bundle')
      .where('bundle.trustDomain <> :except', { except })
      .getCount();
  }

  /** Deletes the trust domain's bundle; false when there was none. */
  async delete(tx: Transaction, trustDomain: string): Promise<boolean> {
    const result = await managerOf(tx).delete(BundleEntity, { trustDomain });
    return (result.affected ?? 0) > 0;
  }

  async save(tx: Transaction, bundle: StoredBundle): Promise<void> {
    const row: BundleEntity = {
      ...bundle,
      x509Authorities: [...bundle.x509Authorities],
      jwtAuthorities: bundle.jwtAuthorities.map(({ kid, jwk }) => ({ kid, jwk: { ...jwk } })),
      taintedAuthorities: [...(bundle.taintedAuthorities ?? [])],
    };
    await managerOf(tx).upsert(BundleEntity, row, ['trustDomain']);
  }
}

function toStored(row: BundleEntity | null): StoredBundle | null {
  return row === null ? null : { ...row };
}
