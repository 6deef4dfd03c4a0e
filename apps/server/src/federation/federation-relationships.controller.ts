import { Body, Controller, Delete, Get, HttpCode, Param, Post, Put } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { BundleFetcherService } from './bundle-fetcher.service.js';
import {
  BundleRefreshResponse,
  CreateFederationRelationshipDto,
  FederationRelationshipListResponse,
  FederationRelationshipResponse,
  FederationRelationshipSettingsDto,
  toFederationRelationshipResponse,
} from './federation.dto.js';
import { FederationRelationshipsService } from './federation-relationships.service.js';

/**
 * Federation relationships (SPIRE's `federation create|update|delete|list|show`): `:trust_domain` is the name or its
 * SPIFFE ID, URL-encoded. Audited as `federation.<handler>`.
 */
@ApiTags('federation')
@Controller('v1/federation/relationships')
export class FederationRelationshipsController {
  constructor(
    private readonly relationships: FederationRelationshipsService,
    private readonly fetcher: BundleFetcherService,
  ) {}

  @Get()
  @ApiOkResponse({ type: FederationRelationshipListResponse })
  async listRelationships(): Promise<FederationRelationshipListResponse> {
    return { relationships: (await this.relationships.list()).map(toFederationRelationshipResponse) };
  }

  @Get(':trust_domain')
  @ApiOkResponse({ type: FederationRelationshipResponse })
  async showRelationship(@Param('trust_domain') trustDomain: string): Promise<FederationRelationshipResponse> {
    return toFederationRelationshipResponse(await this.relationships.get(trustDomain));
  }

  @Post()
  @ApiOkResponse({ type: FederationRelationshipResponse })
  async createRelationship(@Body() body: CreateFederationRelationshipDto): Promise<FederationRelationshipResponse> {
    return toFederationRelationshipResponse(await this.relationships.create(body));
  }

  @Put(':trust_domain')
  @ApiOkResponse({ type: FederationRelationshipResponse })
  async updateRelationship(
    @Param('trust_domain') trustDomain: string,
    @Body() body: FederationRelationshipSettingsDto,
  ): Promise<FederationRelationshipResponse> {
    return toFederationRelationshipResponse(await this.relationships.update({ ...body, trust_domain: trustDomain }));
  }

  @Delete(':trust_domain')
  @HttpCode(200)
  async deleteRelationship(@Param('trust_domain') trustDomain: string): Promise<{ trust_domain: string }> {
    return { trust_domain: await this.relationships.delete(trustDomain) };
  }

  /** Fetches the trust domain's bundle from its bundle endpoint now (SPIRE's `federation refresh`). */
  @Post(':trust_domain/refresh')
  @HttpCode(200)
  @ApiOkResponse({ type: BundleRefreshResponse })
  async refreshBundle(@Param('trust_domain') trustDomain: string): Promise<BundleRefreshResponse> {
    const refreshed = await this.fetcher.refresh(trustDomain);
    return {
      trust_domain: refreshed.trustDomain,
      changed: refreshed.changed,
      bundle: refreshed.bundle.toJwks(),
    };
  }
}
