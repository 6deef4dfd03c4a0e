import { Body, Controller, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import {
  AuthorityIdBody,
  RevokeAuthorityBody,
  AuthorityKindParams,
  AuthorityResponse,
  AuthorityStateResponse,
  toAuthorityResponse,
  toAuthorityStateResponse,
} from './authority.dto.js';
import { KeyManager } from './key-manager.js';

/** SPIRE's local authority API for the X.509 CA (`x509`) and the JWT key (`jwt`). */
@ApiTags('authorities')
@Controller('v1/authorities/:kind')
export class AuthoritiesController {
  constructor(private readonly keys: KeyManager) {}

  @Get()
  show(@Param() params: AuthorityKindParams): AuthorityStateResponse {
    return toAuthorityStateResponse(this.keys.slots(params.kind));
  }

  @Post('prepare')
  @HttpCode(200)
  async prepare(@Param() params: AuthorityKindParams): Promise<AuthorityResponse> {
    return toAuthorityResponse(await this.keys.prepare(params.kind));
  }

  @Post('activate')
  @HttpCode(200)
  async activate(@Param() params: AuthorityKindParams, @Body() body: AuthorityIdBody): Promise<AuthorityResponse> {
    return toAuthorityResponse(await this.keys.activate(params.kind, body.authority_id));
  }

  @Post('taint')
  @HttpCode(200)
  async taint(@Param() params: AuthorityKindParams, @Body() body: AuthorityIdBody): Promise<AuthorityResponse> {
    return toAuthorityResponse(await this.keys.taint(params.kind, body.authority_id));
  }

  @Post('revoke')
  @HttpCode(200)
  async revoke(@Param() params: AuthorityKindParams, @Body() body: RevokeAuthorityBody): Promise<AuthorityResponse> {
    return toAuthorityResponse(await this.keys.revoke(params.kind, body.authority_id, { force: body.force === true }));
  }
}
