import { Module } from '@nestjs/common';
import { BundleModule } from '../bundle/bundle.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { KekModule } from '../kek/kek.module.js';
import { AuthoritiesController } from './authorities.controller.js';
import { AuthorityKeyFactory } from './authority-key.factory.js';
import { AuthorityUsage } from './authority-usage.js';
import { AuthorityUsageRepository } from './authority-usage.repository.js';
import { CaKeysRepository } from './ca-keys.repository.js';
import { CaService } from './ca.service.js';
import { KeyManager } from './key-manager.js';
import { UpstreamBundleWatcher } from './upstream-bundle-watcher.js';

/**
 * The X.509 CA and the JWT authority: the key journal, its rotation (a timer started at module init) and signing.
 * Needs `SERVER_CONFIG` and `CLOCK` from a global module; `AUTHORITY_METRICS` is optional.
 */
@Module({
  imports: [KekModule, BundleModule, EntriesModule],
  controllers: [AuthoritiesController],
  providers: [
    CaKeysRepository,
    AuthorityKeyFactory,
    AuthorityUsageRepository,
    AuthorityUsage,
    KeyManager,
    CaService,
    UpstreamBundleWatcher,
  ],
  exports: [CaService, AuthorityUsage],
})
export class CaModule {}
