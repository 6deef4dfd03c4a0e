import { Controller, Get } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { SpiffeJwks } from '@sigil/spiffe';
import { Public } from '../auth/public.decorator.js';
import { BundleService } from './bundle.service.js';

/**
 * The federation bundle endpoint (SPIFFE_Federation.md, `https_web` profile): our bundle as SPIFFE JWKS for other
 * trust domains, without authentication, since a bundle holds public keys only. Served as `application/json`
 * (Fastify adds `charset=utf-8`).
 */
@ApiTags('bundle')
@Public()
@Controller('bundle')
export class FederationBundleController {
  constructor(private readonly bundles: BundleService) {}

  @Get()
  show(): SpiffeJwks {
    return this.bundles.ownJwks();
  }
}
