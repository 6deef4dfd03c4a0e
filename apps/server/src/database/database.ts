import { Logger, type OnApplicationShutdown } from '@nestjs/common';
import { join } from 'node:path';
import type { DataSource } from 'typeorm';
import { DEFAULT_POOL_SIZE, openDataSource } from './data-source.js';
import { EMBEDDED_FSYNC_WARNING, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';

/** `postgres`: a PostgreSQL server from `--database-url`; `embedded`: PGlite in the data dir. */
export type DatabaseKind = 'postgres' | 'embedded';

export interface OpenDatabaseOptions {
  /** Absent: the embedded database in `<dataDir>/db`. */
  databaseUrl?: string;
  dataDir: string;
  poolSize?: number;
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

  /** Starts the embedded database if needed, connects and runs pending migrations. */
  static async open(options: OpenDatabaseOptions, logger = new Logger('Database')): Promise<Database> {
    if (options.databaseUrl !== undefined) {
      const dataSource = await openDataSource({
        url: options.databaseUrl,
        poolSize: options.poolSize ?? DEFAULT_POOL_SIZE,
      });
      logger.log({ msg: 'database ready', databaseKind: 'postgres' });
      return new Database('postgres', options.databaseUrl, dataSource, undefined);
    }
    const dbDir = join(options.dataDir, 'db');
    logger.warn({ msg: EMBEDDED_FSYNC_WARNING, dataDir: dbDir });
    const embedded = await startEmbeddedPostgres(dbDir);
    try {
      const dataSource = await openDataSource({
        url: embedded.url,
        poolSize: Math.min(options.poolSize ?? embedded.maxConnections, embedded.maxConnections),
      });
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
