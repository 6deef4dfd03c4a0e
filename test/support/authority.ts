/**
 * Test helper: the server's authority (KEK, key journal, key manager, bundle store, CA service) built with `new` on a
 * test database, with an injected FakeClock and a metrics recorder. Nothing is mocked: the database is real.
 */
import { randomBytes } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { BundleService } from '../../apps/server/src/bundle/bundle.service.js';
import { BundlesRepository } from '../../apps/server/src/bundle/bundles.repository.js';
import { AuthorityKeyFactory } from '../../apps/server/src/ca/authority-key.factory.js';
import type {
  AuthorityMetrics,
  AuthorityTransition,
  UpstreamBundleFailure,
} from '../../apps/server/src/ca/authority-metrics.js';
import type { AuthorityKind } from '../../apps/server/src/ca/ca-key.js';
import { CaKeysRepository } from '../../apps/server/src/ca/ca-keys.repository.js';
import { CaService } from '../../apps/server/src/ca/ca.service.js';
import { AuthorityUsage } from '../../apps/server/src/ca/authority-usage.js';
import { AuthorityUsageRepository } from '../../apps/server/src/ca/authority-usage.repository.js';
import { KeyManager } from '../../apps/server/src/ca/key-manager.js';
import type { FakeClock } from './fake-clock.js';
import { loadServerConfig, type ServerConfig, type ServerConfigFlags } from '../../apps/server/src/config.js';
import { KeyEncryptionKey } from '../../apps/server/src/kek/key-encryption-key.js';

/** Records what the authority reports, for assertions. */
export class RecordingAuthorityMetrics implements AuthorityMetrics {
  readonly signed: AuthorityKind[] = [];
  readonly transitions: string[] = [];
  /** Upstream bundle outcomes in order: `changed`, `unchanged` or `failed:<reason>`. */
  readonly upstreamBundle: string[] = [];

  svidSigned(kind: AuthorityKind, seconds: number): void {
    if (!(seconds >= 0)) throw new Error(`svidSigned: seconds must be non-negative, got ${seconds}`);
    this.signed.push(kind);
  }

  rotationEvent(kind: AuthorityKind, transition: AuthorityTransition): void {
    this.transitions.push(`${kind}:${transition}`);
  }

  upstreamBundleFollowed(_at: Date, changed: boolean): void {
    this.upstreamBundle.push(changed ? 'changed' : 'unchanged');
  }

  upstreamBundleFailed(reason: UpstreamBundleFailure): void {
    this.upstreamBundle.push(`failed:${reason}`);
  }

  upstreamTaintRotation(): void {
    this.upstreamBundle.push('taint-rotation');
  }
}

export interface TestAuthority {
  readonly config: ServerConfig;
  readonly kek: KeyEncryptionKey;
  readonly journal: CaKeysRepository;
  readonly bundles: BundleService;
  readonly keys: KeyManager;
  readonly ca: CaService;
  readonly metrics: RecordingAuthorityMetrics;
}

/** A fresh random key-encryption key, as if from `SIGIL_KEK`. */
export function randomKek(): Promise<KeyEncryptionKey> {
  return KeyEncryptionKey.fromBytes(randomBytes(32), { kind: 'env', name: 'SIGIL_KEK' });
}

/**
 * Builds one replica's authority on `dataSource`. Its key manager has not ticked yet: call `keys.tick()` (the
 * module's init does it with `waitForLock`), then move the clock and tick again.
 */
export async function createTestAuthority(
  dataSource: DataSource,
  options: { clock: FakeClock; kek?: KeyEncryptionKey; flags?: ServerConfigFlags },
): Promise<TestAuthority> {
  const config = loadServerConfig({
    flags: { trustDomain: 'example.org', dataDir: '/nonexistent/sigil-test', ...options.flags },
    env: {},
  });
  const kek = options.kek ?? (await randomKek());
  const metrics = new RecordingAuthorityMetrics();
  const journal = new CaKeysRepository(dataSource);
  const bundles = new BundleService(new BundlesRepository(dataSource), config);
  const keys = new KeyManager(
    journal,
    bundles,
    new AuthorityKeyFactory(config, kek),
    new AuthorityUsage(new AuthorityUsageRepository(dataSource)),
    options.clock,
    metrics,
  );
  const ca = new CaService(keys, options.clock, config, metrics);
  return { config, kek, journal, bundles, keys, ca, metrics };
}
