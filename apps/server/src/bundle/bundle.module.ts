import { Module } from '@nestjs/common';
import { BundleController } from './bundle.controller.js';
import { BundleService } from './bundle.service.js';
import { BundlesRepository } from './bundles.repository.js';
import { FederationBundleController } from './federation-bundle.controller.js';

/** Our trust bundle: its store, `GET /v1/bundle` and the federation endpoint `GET /bundle`. */
@Module({
  controllers: [BundleController, FederationBundleController],
  providers: [BundlesRepository, BundleService],
  exports: [BundleService],
})
export class BundleModule {}
