import { Injectable } from '@nestjs/common';
import { DataSource, In, type EntityManager } from 'typeorm';
import { CaKeyEntity } from './ca-key.entity.js';

/** A journal row ready to insert; the revision comes from the database. */
export type NewCaKey = Omit<CaKeyEntity, 'revision'>;
/** The fields of a journal row that ever change. */
export type CaKeyChanges = Partial<Pick<CaKeyEntity, 'state' | 'tainted' | 'revoked' | 'activatedAt'>>;

// Advisory lock (two-int form) held by whoever changes the journal: "sigi" and 1 for the CA rotation.
const ROTATION_LOCK = [0x73696769, 1] as const;
const NEXT_REVISION = () => "nextval('ca_keys_revision_seq')";

/** The CA key journal's I/O: reads, writes and the rotation lock. */
@Injectable()
export class CaKeysRepository {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * Runs `work` in a transaction holding the rotation advisory lock (released at commit). With `wait: false` it
   * returns `{ acquired: false }` at once when another replica holds it; with `wait: true` it waits its turn.
   */
  async withRotationLock<T>(
    wait: boolean,
    work: (manager: EntityManager) => Promise<T>,
  ): Promise<{ acquired: true; result: T } | { acquired: false }> {
    return this.dataSource.transaction(async (manager) => {
      if (wait) {
        await manager.query('SELECT pg_advisory_xact_lock($1, $2)', [...ROTATION_LOCK]);
      } else {
        const rows: { locked: boolean }[] = await manager.query('SELECT pg_try_advisory_xact_lock($1, $2) AS locked', [
          ...ROTATION_LOCK,
        ]);
        if (rows[0]?.locked !== true) return { acquired: false };
      }
      return { acquired: true, result: await work(manager) };
    });
  }

  /** Every journal row, with its sealed private key, oldest first. */
  listWithPrivateKeys(manager: EntityManager = this.dataSource.manager): Promise<CaKeyEntity[]> {
    return manager
      .createQueryBuilder(CaKeyEntity, 'key')
      .addSelect('key.encryptedPrivateKey')
      .orderBy('key.notBefore', 'ASC')
      .addOrderBy('key.createdAt', 'ASC')
      .addOrderBy('key.id', 'ASC')
      .getMany();
  }

  /** `<count>:<max revision>`: changes whenever a row is inserted, updated or deleted. */
  async journalVersion(manager: EntityManager = this.dataSource.manager): Promise<string> {
    const rows: { count: string; revision: string | null }[] = await manager.query(
      'SELECT count(*) AS count, max(revision) AS revision FROM ca_keys',
    );
    return versionOf(Number(rows[0]?.count ?? 0), rows[0]?.revision ?? null);
  }

  async insert(manager: EntityManager, key: NewCaKey): Promise<void> {
    await manager
      .createQueryBuilder()
      .insert()
      .into(CaKeyEntity)
      .values({ ...key, revision: NEXT_REVISION })
      .execute();
  }

  async update(manager: EntityManager, id: string, changes: CaKeyChanges): Promise<void> {
    await manager
      .createQueryBuilder()
      .update(CaKeyEntity)
      .set({ ...changes, revision: NEXT_REVISION })
      .where('id = :id', { id })
      .execute();
  }

  async deleteByIds(manager: EntityManager, ids: readonly string[]): Promise<void> {
    if (ids.length > 0) await manager.delete(CaKeyEntity, { id: In([...ids]) });
  }
}

/** The version string {@link CaKeysRepository.journalVersion} returns, computed from loaded rows. */
export function versionOf(count: number, maxRevision: string | null): string {
  return `${count}:${maxRevision ?? 0}`;
}
