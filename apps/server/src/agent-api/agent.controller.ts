import { Body, Controller, Get, HttpCode, Post, Query, Res } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { type FastifyReply } from 'fastify';
import {
  AgentSvidResponseDto,
  BatchX509SvidDto,
  BatchX509SvidResponseDto,
  JwtSvidRequestDto,
  JwtSvidResponseDto,
  RenewAgentSvidDto,
  SyncQueryDto,
  SyncResponseDto,
  toAgentSvidResponse,
  toBatchX509SvidResponse,
  parseBatchX509SvidBody,
  toJwtSvidResponse,
  toSyncResponse,
} from './agent-api.dto.js';
import { AgentAuth, SyncRateLimited } from './agent-auth.guard.js';
import { abortedOnDisconnect, CurrentAgent, type CallingAgent } from './agent-request.js';
import { AgentSvidService } from './agent-svid.service.js';
import { SvidSigningService } from './svid-signing.service.js';
import { SyncService } from './sync.service.js';

/** The routes of an attested agent, authenticated by its X509-SVID over mTLS. */
@ApiTags('agent')
@AgentAuth()
@Controller('agent/v1')
export class AgentController {
  constructor(
    private readonly agentSvids: AgentSvidService,
    private readonly syncs: SyncService,
    private readonly signing: SvidSigningService,
  ) {}

  @Post('renew')
  @HttpCode(200)
  @ApiOkResponse({ type: AgentSvidResponseDto })
  async renew(@CurrentAgent() agent: CallingAgent, @Body() body: RenewAgentSvidDto): Promise<AgentSvidResponseDto> {
    return toAgentSvidResponse(await this.agentSvids.renew(agent, body.csr));
  }

  @Get('sync')
  @SyncRateLimited()
  @ApiOkResponse({ type: SyncResponseDto })
  async sync(
    @CurrentAgent() agent: CallingAgent,
    @Query() query: SyncQueryDto,
    @Res({ passthrough: true }) reply: FastifyReply,
  ): Promise<SyncResponseDto> {
    const request = {
      revision: query.revision ?? 0,
      bundleSequence: query.bundle_sequence,
      waitMs: query.wait_ms ?? 0,
    };
    return toSyncResponse(await this.syncs.sync(agent, request, abortedOnDisconnect(reply)));
  }

  // The body is typed `unknown` so the global ValidationPipe passes it through: it is checked by hand (hot path).
  @Post('svids/x509')
  @HttpCode(200)
  @ApiBody({ type: BatchX509SvidDto })
  @ApiOkResponse({ type: BatchX509SvidResponseDto })
  async signX509Svids(@CurrentAgent() agent: CallingAgent, @Body() body: unknown): Promise<BatchX509SvidResponseDto> {
    return toBatchX509SvidResponse(await this.signing.signX509Svids(agent, parseBatchX509SvidBody(body)));
  }

  @Post('svids/jwt')
  @HttpCode(200)
  @ApiOkResponse({ type: JwtSvidResponseDto })
  async signJwtSvid(@CurrentAgent() agent: CallingAgent, @Body() body: JwtSvidRequestDto): Promise<JwtSvidResponseDto> {
    return toJwtSvidResponse(await this.signing.signJwtSvid(agent, body.entry_id, body.audience));
  }
}
