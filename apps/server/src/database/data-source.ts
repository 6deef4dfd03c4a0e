import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { DataSource, MigrationExecutor } from 'typeorm';
import { Registry1764000000000 } from '#migrations/1764000000000-Registry';
import { Authority1764000100000 } from '#migrations/1764000100000-Authority';
import { BundleEntity } from '../bundle/bundle.entity.js';
import { CaKeyEntity } from '../ca/ca-key.entity.js';
import { DnsNameEntity, EntryEntity, FederatedTrustDomainEntity, SelectorEntity } from '../entries/entry.entity.js';
import { EntryEventEntity, RevisionCounterEntity } from '../entries/entry-event.entity.js';
import { Admin1764000200000 } from '#migrations/1764000200000-Admin';
import { AgentCanReattest1764000300000 } from '#migrations/1764000300000-AgentCanReattest';
import { AdminTokenEntity } from '../auth/admin-token.entity.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { JoinTokenEntity } from '../join-tokens/join-token.entity.js';
import { DEFAULT_DATABASE_POOL_TIMEOUT_SECONDS } from '../config.js';
import { AgentEntity } from '../agents/agent.entity.js';

/**
 * Every entity of the server, as class references (not globs) so TS tests and the compiled server share one list.
 * Add yours here; the schema-diff test checks each against the migrations.
 */
export const ENTITIES = [
  EntryEntity,
  SelectorEntity,
  DnsNameEntity,
  FederatedTrustDomainEntity,
  EntryEventEntity,
  RevisionCounterEntity,
  AdminTokenEntity,
  AuditRecordEntity,
  JoinTokenEntity,
  AgentEntity,
  CaKeyEntity,
  BundleEntity,
];

/** Every migration, oldest first; hand-written SQL that PostgreSQL 15 and PGlite (PostgreSQL 18) both accept. */
export const MIGRATIONS = [
  Registry1764000000000,
  Authority1764000100000,
  Admin1764000200000,
  AgentCanReattest1764000300000,
];

/** Default pool size against a PostgreSQL server. */
export const DEFAULT_POOL_SIZE = 10;

// Session advisory lock (two-int form, "sigi" + 0) held while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK = [0x73696769, 0] as const;

export interface DataSourceConnectionOptions {
  /** `postgres://` URL; for a Unix socket, `postgresql://user@localhost/db?host=/socket/dir`. */
  url: string;
  /** Pool size; against the embedded database it must not exceed the socket server's `maxConnections`. */
  poolSize?: number;
  applicationName?: string;
  /** Longest wait for a pooled connection (and for a new connection); default `database_pool_timeout`'s. */
  poolTimeoutMs?: number;
}

/** Builds (does not connect) the server's TypeORM DataSource: `pg` driver, explicit entity and migration lists. */
export function createDataSource(options: DataSourceConnectionOptions): DataSource {
  const logger = new Logger('Database');
  return new DataSource({
    type: 'postgres',
    url: options.url,
    applicationName: options.applicationName ?? 'sigil-server',
    poolSize: options.poolSize ?? DEFAULT_POOL_SIZE,
    entities: [...ENTITIES],
    migrations: [...MIGRATIONS],
    migrationsRun: false,
    migrationsTransactionMode: 'each',
    synchronize: false,
    // gen_random_uuid() is built into PostgreSQL 13+; no extension to install.
    uuidExtension: 'pgcrypto',
    installExtensions: false,
    // Query errors are thrown to the caller, which logs them once where they are handled.
    logging: false,
    // Also how long a query waits for a free pooled connection; past it the request gets 503 (database-errors.ts).
    connectTimeoutMS: options.poolTimeoutMs ?? DEFAULT_DATABASE_POOL_TIMEOUT_SECONDS * 1000,
    poolErrorHandler: (error: unknown) =>
      logger.warn(`database pool error: ${error instanceof Error ? error.message : String(error)}`),
  });
}

/**
 * Applies every pending migration under a session advisory lock and returns the names of those it ran. Safe to
 * call from several replicas at once: the others wait, then find nothing pending.
 */
export async function runMigrations(dataSource: DataSource): Promise<string[]> {
  // One connection for the lock and the migrations: a pool of one suffices, and PGlite (which serialises
  // transactions across connections) never waits on a second connection.
  const queryRunner = dataSource.createQueryRunner('master');
  await queryRunner.connect();
  try {
    await queryRunner.query('SELECT pg_advisory_lock($1, $2)', [...MIGRATION_LOCK]);
    try {
      const executor = new MigrationExecutor(dataSource, queryRunner);
      executor.transaction = 'each';
      const applied = await executor.executePendingMigrations();
      return applied.map((migration) => migration.name);
    } finally {
      await queryRunner.query('SELECT pg_advisory_unlock($1, $2)', [...MIGRATION_LOCK]);
    }
  } finally {
    await queryRunner.release();
  }
}

/** Connects a new DataSource and brings the schema up to date; the DataSource is destroyed if migrating fails. */
export async function openDataSource(options: DataSourceConnectionOptions): Promise<DataSource> {
  const dataSource = createDataSource(options);
  await dataSource.initialize();
  try {
    await runMigrations(dataSource);
  } catch (error) {
    await dataSource.destroy();
    throw error;
  }
  return dataSource;
}
