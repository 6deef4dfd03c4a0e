import { Controller, Get, Header } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { SpiffeJwks } from '@sigil/spiffe';
import { Public } from '../auth/public.decorator.js';
import { BundleService } from './bundle.service.js';

/**
 * The federation bundle endpoint (SPIFFE_Federation.md §4, `https_web` profile): our bundle as SPIFFE JWKS for other
 * trust domains, without authentication, since a bundle holds public keys only.
 */
@ApiTags('bundle')
@Public()
@Controller('bundle')
export class FederationBundleController {
  constructor(private readonly bundles: BundleService) {}

  @Get()
  @Header('content-type', 'application/json')
  show(): SpiffeJwks {
    return this.bundles.ownJwks();
  }
}
