import { Controller, Get, Inject, Res } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { Public } from '../auth/public.decorator.js';
import { BundleService } from '../bundle/bundle.service.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type OidcDiscoveryConfig, type ServerConfig } from '../config.js';
import { type OidcJwk, oidcJwks, openIdConfiguration, type OpenIdConfiguration } from './oidc-discovery.js';

/**
 * OIDC discovery for JWT-SVID consumers such as cloud IAM (SPIRE's oidc-discovery-provider): open routes under the
 * per-address `read` budget, served on the `oidc_discovery_address` listener (the TLS port refuses them).
 */
@ApiTags('oidc')
@Public('read')
@Controller()
export class OidcController {
  private readonly config: OidcDiscoveryConfig | undefined;

  constructor(
    private readonly bundles: BundleService,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'oidcDiscovery'>,
  ) {
    this.config = config.oidcDiscovery;
  }

  @Get('.well-known/openid-configuration')
  discovery(): OpenIdConfiguration {
    return openIdConfiguration(this.enabled());
  }

  @Get('keys')
  keys(@Res({ passthrough: true }) reply: FastifyReply): { keys: OidcJwk[] } {
    this.enabled();
    // Relying parties must see a rotation's new key at once (SPIRE's provider disables caching too).
    void reply.header('cache-control', 'no-cache, no-store, must-revalidate');
    return oidcJwks(this.bundles.ownBundle());
  }

  private enabled(): OidcDiscoveryConfig {
    if (this.config === undefined) {
      throw new AppError('not_found', 'OIDC discovery is off: set oidc_discovery_address and jwt_issuer');
    }
    return this.config;
  }
}
