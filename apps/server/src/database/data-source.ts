import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { DataSource, MigrationExecutor } from 'typeorm';
import { Registry1764000000000 } from '#migrations/1764000000000-Registry';
import { Authority1764000100000 } from '#migrations/1764000100000-Authority';
import { BundleEntity } from '../bundle/bundle.entity.js';
import { CaKeyEntity } from '../ca/ca-key.entity.js';
import { SharedJwtAuthorityEntity } from '../ca/shared-jwt-authority.entity.js';
import { DnsNameEntity, EntryEntity, FederatedTrustDomainEntity, SelectorEntity } from '../entries/entry.entity.js';
import { EntryEventEntity, RevisionCounterEntity } from '../entries/entry-event.entity.js';
import { Admin1764000200000 } from '#migrations/1764000200000-Admin';
import { AgentCanReattest1764000300000 } from '#migrations/1764000300000-AgentCanReattest';
import { FederationRelationships1764000400000 } from '#migrations/1764000400000-FederationRelationships';
import { UpstreamAuthorities1764000550000 } from '#migrations/1764000550000-UpstreamAuthorities';
import { TaintedAuthorities1764000620000 } from '#migrations/1764000620000-TaintedAuthorities';
import { X509popChallenges1764000700000 } from '#migrations/1764000700000-X509popChallenges';
import { AgentNewSerial1764000800000 } from '#migrations/1764000800000-AgentNewSerial';
import { AgentSvidReplacements1764000900000 } from '#migrations/1764000900000-AgentSvidReplacements';
import { SharedJwtAuthorities1764001000000 } from '#migrations/1764001000000-SharedJwtAuthorities';
import { EntryIdPairIndex1764001100000 } from '#migrations/1764001100000-EntryIdPairIndex';
import { FederationRelationshipEntity } from '../federation/federation-relationship.entity.js';
import { AdminTokenEntity } from '../auth/admin-token.entity.js';
import { AuditRecordEntity } from '../audit/audit-record.entity.js';
import { JoinTokenEntity } from '../join-tokens/join-token.entity.js';
import { DEFAULT_DATABASE_POOL_SIZE, DEFAULT_DATABASE_POOL_TIMEOUT_SECONDS } from '../config.js';
import { AgentEntity } from '../agents/agent.entity.js';
import { X509popChallengeEntity } from '../node-attestation/x509pop/x509pop-challenge.entity.js';

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
  FederationRelationshipEntity,
  X509popChallengeEntity,
  SharedJwtAuthorityEntity,
];

/** Every migration, oldest first; hand-written SQL that PostgreSQL 15 and PGlite (PostgreSQL 18) both accept. */
export const MIGRATIONS = [
  Registry1764000000000,
  Authority1764000100000,
  Admin1764000200000,
  AgentCanReattest1764000300000,
  FederationRelationships1764000400000,
  UpstreamAuthorities1764000550000,
  TaintedAuthorities1764000620000,
  X509popChallenges1764000700000,
  AgentNewSerial1764000800000,
  AgentSvidReplacements1764000900000,
  SharedJwtAuthorities1764001000000,
  EntryIdPairIndex1764001100000,
];

/** Default pool size against a PostgreSQL server (`database_pool_size`). */
export const DEFAULT_POOL_SIZE = DEFAULT_DATABASE_POOL_SIZE;

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

/**
 * The names of this release's migrations that the database has not applied yet, oldest first. Changes nothing: on a
 * database without TypeORM's migrations table (which TypeORM would create to answer), every migration is pending.
 */
export async function pendingMigrations(dataSource: DataSource): Promise<string[]> {
  const queryRunner = dataSource.createQueryRunner('master');
  await queryRunner.connect();
  try {
    if (!(await queryRunner.hasTable(dataSource.options.migrationsTableName ?? 'migrations'))) {
      return MIGRATIONS.map((migration) => migration.name);
    }
    const executor = new MigrationExecutor(dataSource, queryRunner);
    return (await executor.getPendingMigrations()).map((migration) => migration.name);
  } finally {
    await queryRunner.release();
  }
}

/** The name of this release's newest migration: the schema version of a database it has migrated. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.name;

/**
 * What opening a database does about migrations: `apply` the pending ones (what `run` does by default), `require`
 * none to be pending (`skip_migrations`: the schema is someone else's to migrate, with `sigil-server migrate`), or
 * `leave` the schema as it is (the `migrate` command, which looks before it applies).
 */
export type MigrationMode = 'apply' | 'require' | 'leave';

/** Refused by `require`: the release runs against an older schema than it was written for. */
export class PendingMigrationsError extends Error {
  override readonly name = 'PendingMigrationsError';

  constructor(readonly pending: readonly string[]) {
    super(
      `database: the schema is behind this release, ${pending.length} migration(s) pending (${pending.join(', ')}); ` +
        'apply them with sigil-server migrate (same database options) first',
    );
  }
}

/**
 * Connects a new DataSource and brings the schema up to date (or checks it is, or leaves it, by `mode`); the
 * DataSource is destroyed if that fails.
 */
export async function openDataSource(
  options: DataSourceConnectionOptions,
  mode: MigrationMode = 'apply',
): Promise<DataSource> {
  const dataSource = createDataSource(options);
  await dataSource.initialize();
  try {
    if (mode === 'apply') await runMigrations(dataSource);
    if (mode === 'require') {
      const pending = await pendingMigrations(dataSource);
      if (pending.length > 0) throw new PendingMigrationsError(pending);
    }
  } catch (error) {
    await dataSource.destroy();
    throw error;
  }
  return dataSource;
}
