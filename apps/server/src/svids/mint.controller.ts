import { Body, Controller, HttpCode, Post } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { MintJwtSvidRequest, MintJwtSvidResponse, MintX509SvidRequest, MintX509SvidResponse } from './mint.dto.js';
import { MintService } from './mint.service.js';

/** `POST /v1/x509-svids/mint` (SPIRE's MintX509SVID): audited as `x509_svid.mint`. */
@ApiTags('svids')
@Controller('v1/x509-svids')
export class X509SvidsController {
  constructor(private readonly svids: MintService) {}

  @Post('mint')
  @HttpCode(200)
  @ApiOkResponse({ type: MintX509SvidResponse })
  mint(@Body() body: MintX509SvidRequest): MintX509SvidResponse {
    return this.svids.mintX509(body);
  }
}

/** `POST /v1/jwt-svids/mint` (SPIRE's MintJWTSVID): audited as `jwt_svid.mint`; the token is never logged. */
@ApiTags('svids')
@Controller('v1/jwt-svids')
export class JwtSvidsController {
  constructor(private readonly svids: MintService) {}

  @Post('mint')
  @HttpCode(200)
  @ApiOkResponse({ type: MintJwtSvidResponse })
  mint(@Body() body: MintJwtSvidRequest): Promise<MintJwtSvidResponse> {
    return this.svids.mintJwt(body);
  }
}
