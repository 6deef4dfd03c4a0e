import { Body, Controller, Delete, Get, HttpCode, Param, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import { type Actor } from './actor.js';
import {
  AdminTokenListResponse,
  CreateAdminTokenRequest,
  CreatedAdminTokenResponse,
  toAdminTokenResponse,
} from './admin-token.dto.js';
import { AdminTokensService } from './admin-tokens.service.js';
import { CurrentActor } from './current-actor.decorator.js';

/** Bearer admin tokens; managed only through the local admin socket. */
@ApiTags('admin tokens')
@Controller('v1/admin-tokens')
export class AdminTokensController {
  constructor(private readonly adminTokens: AdminTokensService) {}

  @Post()
  async create(
    @CurrentActor() actor: Actor,
    @Body() body: CreateAdminTokenRequest,
  ): Promise<CreatedAdminTokenResponse> {
    const created = await this.adminTokens.create(actor, { name: body.name, ttlSeconds: body.ttl });
    return { ...toAdminTokenResponse(created), token: created.token };
  }

  @Get()
  async list(@CurrentActor() actor: Actor): Promise<AdminTokenListResponse> {
    return { admin_tokens: (await this.adminTokens.list(actor)).map(toAdminTokenResponse) };
  }

  @Delete(':name')
  @HttpCode(204)
  async revoke(@CurrentActor() actor: Actor, @Param('name') name: string): Promise<void> {
    await this.adminTokens.revoke(actor, name);
  }
}
