import { Module } from '@nestjs/common';
import { BundleModule } from '../bundle/bundle.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { FederationController } from './federation.controller.js';
import { FederationService } from './federation.service.js';

/** Foreign trust domains' bundles: `/v1/federation/bundles` (list, count, show, set, delete). */
@Module({
  imports: [BundleModule, EntriesModule],
  controllers: [FederationController],
  providers: [FederationService],
  exports: [FederationService],
})
export class FederationModule {}
