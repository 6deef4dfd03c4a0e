import { Body, Controller, Delete, Get, HttpCode, Param, Put, Query } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import {
  DeleteFederatedBundleQuery,
  DeleteFederatedBundleResponse,
  FEDERATED_BUNDLE_PAGE_SIZE,
  FederatedBundleCountResponse,
  FederatedBundleListResponse,
  FederatedBundleResponse,
  ListFederatedBundlesQuery,
  SetFederatedBundleDto,
  toFederatedBundleResponse,
} from './federation.dto.js';
import { FederationService } from './federation.service.js';

/**
 * Bundles of foreign trust domains (SPIRE's federated bundles): `:trust_domain` is the name or its SPIFFE ID,
 * URL-encoded (`example.org` or `spiffe%3A%2F%2Fexample.org`).
 */
@ApiTags('federation')
@Controller('v1/federation/bundles')
export class FederationController {
  constructor(private readonly federation: FederationService) {}

  @Get()
  @ApiOkResponse({ type: FederatedBundleListResponse })
  async list(@Query() query: ListFederatedBundlesQuery): Promise<FederatedBundleListResponse> {
    const page = await this.federation.list({
      pageSize: query.page_size ?? FEDERATED_BUNDLE_PAGE_SIZE.default,
      ...(query.page_token !== undefined && { pageToken: query.page_token }),
    });
    return {
      bundles: page.bundles.map(toFederatedBundleResponse),
      ...(page.nextPageToken && { next_page_token: page.nextPageToken }),
    };
  }

  @Get('count')
  @ApiOkResponse({ type: FederatedBundleCountResponse })
  async count(): Promise<FederatedBundleCountResponse> {
    return { count: await this.federation.count() };
  }

  @Get(':trust_domain')
  @ApiOkResponse({ type: FederatedBundleResponse })
  async show(@Param('trust_domain') trustDomain: string): Promise<FederatedBundleResponse> {
    return toFederatedBundleResponse(await this.federation.get(trustDomain));
  }

  /** Creates or replaces the bundle (SPIRE's `bundle set`). */
  @Put(':trust_domain')
  @ApiOkResponse({ type: FederatedBundleResponse })
  async setBundle(
    @Param('trust_domain') trustDomain: string,
    @Body() body: SetFederatedBundleDto,
  ): Promise<FederatedBundleResponse> {
    return toFederatedBundleResponse(await this.federation.set(trustDomain, body.format ?? 'pem', body.bundle));
  }

  @Delete(':trust_domain')
  @HttpCode(200)
  @ApiOkResponse({ type: DeleteFederatedBundleResponse })
  async deleteBundle(
    @Param('trust_domain') trustDomain: string,
    @Query() query: DeleteFederatedBundleQuery,
  ): Promise<DeleteFederatedBundleResponse> {
    const mode = query.mode ?? 'restrict';
    const deleted = await this.federation.delete(trustDomain, mode);
    return { trust_domain: deleted.trustDomain, mode, entry_ids: deleted.entryIds };
  }
}
