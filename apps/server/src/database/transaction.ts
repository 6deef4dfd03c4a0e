import type { DataSource, EntityManager } from 'typeorm';

declare const OPEN_TRANSACTION: unique symbol;

/**
 * An open database transaction as a service sees it: a handle it passes from one repository call to the next, so
 * that the calls (on one or several repositories) commit or roll back together. Only repositories reach the ORM
 * behind it, through {@link managerOf}; services never see TypeORM.
 */
export interface Transaction {
  readonly [OPEN_TRANSACTION]: true;
}

/** PostgreSQL's isolation levels (READ COMMITTED is its default). */
export type IsolationLevel = 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';

const managers = new WeakMap<Transaction, EntityManager>();

/**
 * Runs `work` in one transaction on `dataSource` (at `isolation`, else the database's default): committed when `work` resolves, rolled back when it
 * throws. The handle is dead once the transaction ends, so a late call through it throws instead of running outside
 * the transaction.
 */
export function runInTransaction<T>(
  dataSource: DataSource,
  isolation: IsolationLevel | undefined,
  work: (tx: Transaction) => Promise<T>,
): Promise<T> {
  const run = async (manager: EntityManager): Promise<T> => {
    const tx = Object.freeze({}) as Transaction;
    managers.set(tx, manager);
    try {
      return await work(tx);
    } finally {
      managers.delete(tx);
    }
  };
  return isolation === undefined ? dataSource.transaction(run) : dataSource.transaction(isolation, run);
}

/** The ORM's view of `tx`, for repositories; throws once the transaction has ended. */
export function managerOf(tx: Transaction): EntityManager {
  const manager = managers.get(tx);
  if (manager === undefined) throw new Error('database transaction: used after it ended');
  return manager;
}
