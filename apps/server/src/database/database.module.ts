import { Global, Module } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { Database } from './database.js';

/**
 * Opens the database once at start (embedded PGlite when no database URL is configured, migrations applied) and
 * provides it as `Database` (kind, URL) and TypeORM's `DataSource` and `EntityManager`, the tokens
 * `@InjectDataSource()` and `TypeOrmModule.forFeature()` look for, so feature modules can use either. Global, so
 * its shutdown hook runs after every feature module's: the pool closes last, then the embedded server.
 */
@Global()
@Module({
  providers: [
    {
      provide: Database,
      inject: [SERVER_CONFIG],
      useFactory: (config: ServerConfig) =>
        Database.open({
          databaseUrl: config.databaseUrl,
          dataDir: config.dataDir,
          poolSize: config.databasePoolSize,
          poolTimeoutMs: config.databasePoolTimeoutSeconds * 1000,
          migrations: config.skipMigrations ? 'require' : 'apply',
        }),
    },
    { provide: DataSource, inject: [Database], useFactory: (database: Database) => database.dataSource },
    { provide: EntityManager, inject: [DataSource], useFactory: (dataSource: DataSource) => dataSource.manager },
  ],
  exports: [Database, DataSource, EntityManager],
})
export class DatabaseModule {}
