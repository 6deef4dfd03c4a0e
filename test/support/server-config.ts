import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type ServerConfig, type ServerConfigFlags, loadServerConfig } from '../../apps/server/src/config.js';
import { type TestDatabase, isEmbeddedRun, prepareEmbeddedDataDir, useTestDatabase } from './database.js';

/** What {@link testServerConfig} sets up: the config, and the test database when the run is on PostgreSQL. */
export interface TestServerSetup {
  readonly config: ServerConfig;
  /** A fresh PostgreSQL database (close it after the server), or undefined on the embedded run. */
  readonly database: TestDatabase | undefined;
}

/**
 * The configuration of an in-process sigil-server for trust domain `example.org` with its data in `<scratch>/data`,
 * its admin socket in `<scratch>/admin`, TLS on an ephemeral loopback port and a random KEK; its database is a fresh
 * PostgreSQL database when `DATABASE_URL` is set, else the embedded database it opens in its data dir, prepared as
 * in production. `flags` override these.
 */
export async function testServerConfig(
  scratch: string,
  flags: ServerConfigFlags = {},
  options: { poolSize?: number } = {},
): Promise<TestServerSetup> {
  const dataDir = join(scratch, 'data');
  let database: TestDatabase | undefined;
  if (isEmbeddedRun()) await prepareEmbeddedDataDir(dataDir);
  else database = await useTestDatabase({ poolSize: options.poolSize ?? 2 });
  const config = loadServerConfig({
    flags: {
      trustDomain: 'example.org',
      port: '0',
      bindAddress: '127.0.0.1',
      dataDir,
      adminSocket: join(scratch, 'admin', 'api.sock'),
      ...(database && { databaseUrl: database.url }),
      ...flags,
    },
    env: { SIGIL_KEK: randomBytes(32).toString('base64') },
  });
  return { config, database };
}
