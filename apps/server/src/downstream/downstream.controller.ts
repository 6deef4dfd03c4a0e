import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import {
  DOWNSTREAM_AUTHORITIES_PATH,
  DOWNSTREAM_JWT_AUTHORITY_PATH,
  DOWNSTREAM_X509_CA_PATH,
} from './downstream-contract.js';
import { DownstreamAuth, DownstreamCaller } from './downstream-auth.guard.js';
import {
  DownstreamAuthoritiesResponse,
  DownstreamJwtAuthorityRequest,
  DownstreamJwtAuthorityResponse,
  DownstreamX509CaRequest,
  DownstreamX509CaResponse,
} from './downstream.dto.js';
import { DownstreamService } from './downstream.service.js';

/**
 * `POST /downstream/v1/x509-ca`: a downstream server's CA, for the X509-SVID of a downstream entry (mTLS); `GET
 * /downstream/v1/authorities`: our tainted keys, X.509 and JWT authorities, for the same callers (a read, not
 * audited; refusals are); `POST /downstream/v1/jwt-authority`: a downstream server's new JWT key, published in our
 * bundle (audited).
 */
@ApiTags('downstream')
@DownstreamAuth()
@Controller()
export class DownstreamController {
  constructor(private readonly downstream: DownstreamService) {}

  @Post(DOWNSTREAM_X509_CA_PATH)
  @HttpCode(200)
  @ApiOkResponse({ type: DownstreamX509CaResponse })
  newX509Ca(
    @DownstreamCaller() caller: string,
    @Body() body: DownstreamX509CaRequest,
  ): Promise<DownstreamX509CaResponse> {
    return this.downstream.newX509Ca(caller, body);
  }

  @Post(DOWNSTREAM_JWT_AUTHORITY_PATH)
  @HttpCode(200)
  @ApiOkResponse({ type: DownstreamJwtAuthorityResponse })
  publishJwtAuthority(
    @DownstreamCaller() caller: string,
    @Body() body: DownstreamJwtAuthorityRequest,
  ): Promise<DownstreamJwtAuthorityResponse> {
    return this.downstream.publishJwtAuthority(caller, body);
  }

  @Get(DOWNSTREAM_AUTHORITIES_PATH)
  @ApiOkResponse({ type: DownstreamAuthoritiesResponse })
  taintedAuthorities(): Promise<DownstreamAuthoritiesResponse> {
    return this.downstream.taintedAuthorities();
  }
}
