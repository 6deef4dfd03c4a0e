import { Module } from '@nestjs/common';
import { BundleModule } from '../bundle/bundle.module.js';
import { EntriesModule } from '../entries/entries.module.js';
import { BundleFetcherService } from './bundle-fetcher.service.js';
import { FederationController } from './federation.controller.js';
import { FederationService } from './federation.service.js';
import { FederationRelationshipsController } from './federation-relationships.controller.js';
import { FederationRelationshipsRepository } from './federation-relationships.repository.js';
import { FederationRelationshipsService } from './federation-relationships.service.js';

/**
 * Foreign trust domains' bundles (`/v1/federation/bundles`), federation relationships
 * (`/v1/federation/relationships`) and the fetcher that keeps those bundles current from their bundle endpoints.
 */
@Module({
  imports: [BundleModule, EntriesModule],
  controllers: [FederationController, FederationRelationshipsController],
  providers: [
    FederationService,
    FederationRelationshipsRepository,
    FederationRelationshipsService,
    BundleFetcherService,
  ],
  exports: [FederationService],
})
export class FederationModule {}
