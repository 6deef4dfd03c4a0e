import { Injectable } from '@nestjs/common';
import { DataSource, In } from 'typeorm';
import { managerOf, runInTransaction, type Transaction } from '../database/transaction.js';
import type { CaKey } from './ca-key.js';
import { CaKeyEntity } from './ca-key.entity.js';
import { SharedJwtAuthorityEntity, type SharedJwtAuthorityOrigin } from './shared-jwt-authority.entity.js';

/** A JWT authority of our trust domain whose private key another Sigil server holds, as stored. */
export type SharedJwtAuthorityRow = Readonly<SharedJwtAuthorityEntity>;

/** A journal row ready to insert; the revision comes from the database. */
export type NewCaKey = Omit<CaKey, 'revision'>;
/** The fields of a journal row that ever change. */
export type CaKeyChanges = Partial<
  Pick<CaKey, 'state' | 'tainted' | 'revoked' | 'activatedAt' | 'upstreamAuthorities'>
>;

// Advisory lock (two-int form) held by whoever changes the journal: "sigi" and 1 for the CA rotation.
const ROTATION_LOCK = [0x73696769, 1] as const;
/** The sequence every journal row's `revision` is taken from (migration Authority1764000100000). */
export const CA_KEYS_REVISION_SEQUENCE = 'ca_keys_revision_seq';
const NEXT_REVISION = () => `nextval('${CA_KEYS_REVISION_SEQUENCE}')`;

/** The CA key journal's I/O: reads, writes and the rotation lock. */
@Injectable()
export class CaKeysRepository {
  /** The JWT authorities shared with other Sigil servers, published in the bundle with the journal's keys. */
  readonly shared: SharedJwtAuthoritiesRepository;

  constructor(private readonly dataSource: DataSource) {
    this.shared = new SharedJwtAuthoritiesRepository(dataSource);
  }

  /**
   * Runs `work` in a transaction holding the rotation advisory lock (released at commit). With `wait: false` it
   * returns `{ acquired: false }` at once when another replica holds it; with `wait: true` it waits its turn.
   */
  async withRotationLock<T>(
    wait: boolean,
    work: (tx: Transaction) => Promise<T>,
  ): Promise<{ acquired: true; result: T } | { acquired: false }> {
    return runInTransaction(this.dataSource, undefined, async (tx) => {
      const manager = managerOf(tx);
      if (wait) {
        await manager.query('SELECT pg_advisory_xact_lock($1, $2)', [...ROTATION_LOCK]);
      } else {
        const rows: { locked: boolean }[] = await manager.query('SELECT pg_try_advisory_xact_lock($1, $2) AS locked', [
          ...ROTATION_LOCK,
        ]);
        if (rows[0]?.locked !== true) return { acquired: false };
      }
      return { acquired: true, result: await work(tx) };
    });
  }

  /** Every journal row, with its sealed private key, oldest first. */
  async listWithPrivateKeys(tx?: Transaction): Promise<CaKey[]> {
    const rows = await (tx === undefined ? this.dataSource.manager : managerOf(tx))
      .createQueryBuilder(CaKeyEntity, 'key')
      .addSelect('key.encryptedPrivateKey')
      .orderBy('key.notBefore', 'ASC')
      .addOrderBy('key.createdAt', 'ASC')
      .addOrderBy('key.id', 'ASC')
      .getMany();
    return rows.map((row): CaKey => ({ ...row }));
  }

  /** `<count>:<max revision>`: changes whenever a row is inserted, updated or deleted. */
  async journalVersion(): Promise<string> {
    const rows: { count: string; revision: string | null }[] = await this.dataSource.query(
      'SELECT count(*) AS count, max(revision) AS revision FROM ca_keys',
    );
    return versionOf(Number(rows[0]?.count ?? 0), rows[0]?.revision ?? null);
  }

  async insert(tx: Transaction, key: NewCaKey): Promise<void> {
    await managerOf(tx)
      .createQueryBuilder()
      .insert()
      .into(CaKeyEntity)
      .values({
        ...key,
        upstreamChain: key.upstreamChain === null ? null : [...key.upstreamChain],
        upstreamAuthorities: key.upstreamAuthorities === null ? null : [...key.upstreamAuthorities],
        revision: NEXT_REVISION,
      })
      .execute();
  }

  async update(tx: Transaction, id: string, changes: CaKeyChanges): Promise<void> {
    const { upstreamAuthorities, ...rest } = changes;
    await managerOf(tx)
      .createQueryBuilder()
      .update(CaKeyEntity)
      .set({
        ...rest,
        // Only when given: an absent key must leave the column as it is.
        ...(upstreamAuthorities !== undefined && {
          upstreamAuthorities: upstreamAuthorities === null ? null : [...upstreamAuthorities],
        }),
        revision: NEXT_REVISION,
      })
      .where('id = :id', { id })
      .execute();
  }

  async deleteByIds(tx: Transaction, ids: readonly string[]): Promise<void> {
    if (ids.length > 0) await managerOf(tx).delete(CaKeyEntity, { id: In([...ids]) });
  }
}

/**
 * The JWT authorities shared with other Sigil servers of our trust domain (`shared_jwt_authorities`): published by
 * downstream servers, or followed from the upstream server. Written under the rotation lock, in the transaction that
 * also republishes the bundle ({@link CaKeysRepository.shared}).
 */
export class SharedJwtAuthoritiesRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Every stored shared JWT authority, the upstream's first (they win a kid a downstream server published too), then
   * by kid.
   */
  async list(tx?: Transaction): Promise<SharedJwtAuthorityRow[]> {
    return (tx === undefined ? this.dataSource.manager : managerOf(tx)).find(SharedJwtAuthorityEntity, {
      order: { origin: 'DESC', kid: 'ASC' },
    });
  }

  /** Stores a downstream caller's key (or refreshes the expiry of the same key it published before). */
  async saveDownstream(tx: Transaction, row: Omit<SharedJwtAuthorityRow, 'origin'>): Promise<void> {
    await managerOf(tx).upsert(SharedJwtAuthorityEntity, { ...row, origin: 'downstream' }, ['origin', 'kid']);
  }

  /** Replaces every stored key of `origin` `upstream` with `rows`. */
  async replaceUpstream(tx: Transaction, rows: readonly Omit<SharedJwtAuthorityRow, 'origin' | 'publishedBy'>[]) {
    const manager = managerOf(tx);
    await manager.delete(SharedJwtAuthorityEntity, { origin: 'upstream' satisfies SharedJwtAuthorityOrigin });
    if (rows.length > 0) {
      await manager.insert(
        SharedJwtAuthorityEntity,
        rows.map((row) => ({ ...row, origin: 'upstream' as const, publishedBy: null })),
      );
    }
  }

  /** Deletes the keys that expired by `now`; returns how many. */
  async deleteExpired(tx: Transaction, now: Date): Promise<number> {
    const result = await managerOf(tx)
      .createQueryBuilder()
      .delete()
      .from(SharedJwtAuthorityEntity)
      .where('not_after <= :now', { now })
      .execute();
    return result.affected ?? 0;
  }
}

/** The version string {@link CaKeysRepository.journalVersion} returns, computed from loaded rows. */
export function versionOf(count: number, maxRevision: string | null): string {
  return `${count}:${maxRevision ?? 0}`;
}
