import { Global, Module, type DynamicModule, type Type } from '@nestjs/common';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { DataSource } from 'typeorm';
import type { Clock } from '../../apps/server/src/common/clock.js';
import { CoreModule } from '../../apps/server/src/common/core.module.js';
import { ErrorFilter } from '../../apps/server/src/common/error.filter.js';
import { createValidationPipe } from '../../apps/server/src/common/validation.js';
import type { ServerConfig } from '../../apps/server/src/config.js';
import { Database } from '../../apps/server/src/database/database.js';
import type { TestDatabase } from './database.js';

/**
 * A Fastify app of some server feature modules on the test's database, behind the server's global validation pipe
 * and error filter (no auth, no audit: the e2e tests check those), ready for `app.inject`.
 */
export async function createRoutesApp(
  db: TestDatabase,
  config: ServerConfig,
  clock: Clock,
  modules: readonly (Type | DynamicModule)[],
): Promise<NestFastifyApplication> {
  @Global()
  @Module({
    providers: [
      { provide: Database, useValue: { kind: db.kind, url: db.url, dataSource: db.dataSource } },
      { provide: DataSource, useValue: db.dataSource },
    ],
    exports: [Database, DataSource],
  })
  class TestDatabaseModule {}
  const moduleRef = await Test.createTestingModule({
    imports: [CoreModule.forRoot(config, clock), TestDatabaseModule, ...modules],
  }).compile();
  const app = moduleRef.createNestApplication<NestFastifyApplication>(new FastifyAdapter());
  app.useGlobalPipes(createValidationPipe());
  app.useGlobalFilters(new ErrorFilter(1024 * 1024));
  await app.init();
  await app.getHttpAdapter().getInstance().ready();
  return app;
}
