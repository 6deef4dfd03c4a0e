import { Body, Controller, Get, HttpCode, Post } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { DOWNSTREAM_AUTHORITIES_PATH, DOWNSTREAM_X509_CA_PATH } from './downstream-contract.js';
import { DownstreamAuth, DownstreamCaller } from './downstream-auth.guard.js';
import { DownstreamAuthoritiesResponse, DownstreamX509CaRequest, DownstreamX509CaResponse } from './downstream.dto.js';
import { DownstreamService } from './downstream.service.js';

/**
 * `POST /downstream/v1/x509-ca`: a downstream server's CA, for the X509-SVID of a downstream entry (mTLS); `GET
 * /downstream/v1/authorities`: our tainted keys and X.509 authorities, for the same callers (a read, not
 * audited; refusals are).
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

  @Get(DOWNSTREAM_AUTHORITIES_PATH)
  @ApiOkResponse({ type: DownstreamAuthoritiesResponse })
  taintedAuthorities(): DownstreamAuthoritiesResponse {
    return this.downstream.taintedAuthorities();
  }
}
