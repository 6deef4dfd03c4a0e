import { Module } from '@nestjs/common';
import { BundleModule } from '../bundle/bundle.module.js';
import { OidcController } from './oidc.controller.js';

/** OIDC discovery (`/.well-known/openid-configuration`, `/keys`) from our bundle's JWT authorities. */
@Module({
  imports: [BundleModule],
  controllers: [OidcController],
})
export class OidcModule {}
