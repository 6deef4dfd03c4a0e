import { Body, Controller, Post } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import { CreateJoinTokenRequest, JoinTokenResponse } from './join-token.dto.js';
import { JoinTokensService } from './join-tokens.service.js';

@ApiTags('join tokens')
@Controller('v1/join-tokens')
export class JoinTokensController {
  constructor(private readonly joinTokens: JoinTokensService) {}

  @Post()
  async create(@Body() body: CreateJoinTokenRequest): Promise<JoinTokenResponse> {
    const created = await this.joinTokens.create({ spiffeId: body.spiffe_id, ttlSeconds: body.ttl });
    return {
      id: created.id,
      token: created.token,
      expires_at: created.expiresAt.toISOString(),
      spiffe_id: created.spiffeId,
    };
  }
}
