import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import { join } from 'node:path';
import type { DataSource } from 'typeorm';
import { DEFAULT_POOL_SIZE, type MigrationMode, openDataSource } from './data-source.js';
import { EMBEDDED_FSYNC_WARNING, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';

/** Connections the server opens to the embedded database (see {@link Database.open}). */
export const EMBEDDED_POOL_SIZE = 1;

/** `postgres`: a PostgreSQL server from `--database-url`; `embedded`: PGlite in the data dir. */
export type DatabaseKind = 'postgres' | 'embedded';

export interface OpenDatabaseOptions {
  /** Absent: the embedded database in `<dataDir>/db`. */
  databaseUrl?: string;
  dataDir: string;
  /** Pool size for PostgreSQL; the embedded database always gets {@link EMBEDDED_POOL_SIZE}. */
  poolSize?: number;
  /** Longest wait for a pooled connection (`database_pool_timeout`); absent: its default. */
  poolTimeoutMs?: number;
  /** What to do about pending migrations; default `apply`. */
  migrations?: MigrationMode;
}

/**
 * The server's database: a migrated TypeORM DataSource, plus the embedded PostgreSQL behind it when no URL was given.
 * `close()` destroys the pool first, then stops the embedded server, so PGlite shuts down cleanly.
 */
export class Database implements OnApplicationShutdown {
  #closing: Promise<void> | undefined;

  private constructor(
    readonly kind: DatabaseKind,
    /** Connection URL; for the embedded database, its private Unix socket. */
    readonly url: string,
    readonly dataSource: DataSource,
    private readonly embedded: EmbeddedPostgres | undefined,
  ) {}

  /** Starts the embedded database if needed, connects and runs pending migrations (or as `options.migrations` says). */
  static async open(options: OpenDatabaseOptions, logger = new Logger('Database')): Promise<Database> {
    if (options.databaseUrl !== undefined) {
      const dataSource = await openDataSource(
        {
          url: options.databaseUrl,
          poolSize: options.poolSize ?? DEFAULT_POOL_SIZE,
          ...(options.poolTimeoutMs !== undefined && { poolTimeoutMs: options.poolTimeoutMs }),
        },
        options.migrations,
      );
      logger.log({ msg: 'database ready', databaseKind: 'postgres' });
      return new Database('postgres', options.databaseUrl, dataSource, undefined);
    }
    const dbDir = join(options.dataDir, 'db');
    logger.warn({ msg: EMBEDDED_FSYNC_WARNING, dataDir: dbDir });
    const embedded = await startEmbeddedPostgres(dbDir);
    try {
      // One connection: pglite-socket multiplexes every client connection onto PGlite's single backend, and two
      // connections whose extended-protocol messages interleave corrupt each other's portals and results ("portal
      // does not exist", rows of the other query). PGlite runs one statement at a time anyway, so this costs nothing.
      const dataSource = await openDataSource(
        {
          url: embedded.url,
          poolSize: EMBEDDED_POOL_SIZE,
          ...(options.poolTimeoutMs !== undefined && { poolTimeoutMs: options.poolTimeoutMs }),
        },
        options.migrations,
      );
      logger.log({ msg: 'database ready', databaseKind: 'embedded', dataDir: dbDir });
      return new Database('embedded', embedded.url, dataSource, embedded);
    } catch (error) {
      await embedded.stop();
      throw error;
    }
  }

  /** Destroys the pool, then stops the embedded server if there is one; safe to call more than once. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        if (this.dataSource.isInitialized) await this.dataSource.destroy();
      } finally {
        await this.embedded?.stop();
      }
    })();
    return this.#closing;
  }

  async onApplicationShutdown(): Promise<void> {
    await this.close();
  }
}
