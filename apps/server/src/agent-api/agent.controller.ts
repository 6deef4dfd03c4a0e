import { Body, Controller, Get, HttpCode, Post, Query, Res } from '@nestjs/common';
import { ApiBody, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { type FastifyReply } from 'fastify';
import {
  AGENT_API_PREFIX,
  AGENT_API_ROUTES,
  AgentApiProtocolError,
  type X509SvidRequest,
  parseSvidIssuers,
  parseX509SvidBatchRequest,
  routePath,
  serializeAgentSvid,
  serializeJwtSvidResponse,
  serializeSyncResponse,
  serializeX509SignResults,
} from '@sigil/agent-api';
import { AppError } from '../common/errors.js';
import {
  AgentSvidResponseDto,
  BatchX509SvidDto,
  BatchX509SvidResponseDto,
  JwtSvidRequestDto,
  JwtSvidResponseDto,
  RenewAgentSvidDto,
  SyncQueryDto,
  SyncResponseDto,
  agentSvidSource,
} from './agent-api.dto.js';
import { AgentAuth, SyncRateLimited } from './agent-auth.guard.js';
import { abortedOnDisconnect, CurrentAgent, type CallingAgent } from './agent-request.js';
import { AgentSvidService } from './agent-svid.service.js';
import { SvidSigningService } from './svid-signing.service.js';
import { SyncService } from './sync.service.js';

/** The routes of an attested agent, authenticated by its X509-SVID over mTLS. */
@ApiTags('agent')
@AgentAuth()
@Controller(AGENT_API_PREFIX)
export class AgentController {
  constructor(
    private readonly agentSvids: AgentSvidService,
    private readonly syncs: SyncService,
    private readonly signing: SvidSigningService,
  ) {}

  @Post(routePath(AGENT_API_ROUTES.renew))
  @HttpCode(200)
  @ApiOkResponse({ type: AgentSvidResponseDto })
  async renew(@CurrentAgent() agent: CallingAgent, @Body() body: RenewAgentSvidDto): Promise<AgentSvidResponseDto> {
    return serializeAgentSvid(agentSvidSource(await this.agentSvids.renew(agent, body.csr)));
  }

  @Get(routePath(AGENT_API_ROUTES.sync))
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
      svidIssuers:
        query.svid_issuers === undefined ? undefined : checkContract(() => parseSvidIssuers(query.svid_issuers!)),
    };
    const { delta, bundle, federatedBundles, taintedAuthorities } = await this.syncs.sync(
      agent,
      request,
      abortedOnDisconnect(reply),
    );
    return serializeSyncResponse({ ...delta, bundle, federatedBundles, taintedAuthorities });
  }

  // The body is typed `unknown` so the global ValidationPipe passes it through: it is checked by hand (hot path).
  @Post(routePath(AGENT_API_ROUTES.signX509Svids))
  @HttpCode(200)
  @ApiBody({ type: BatchX509SvidDto })
  @ApiOkResponse({ type: BatchX509SvidResponseDto })
  async signX509Svids(@CurrentAgent() agent: CallingAgent, @Body() body: unknown): Promise<BatchX509SvidResponseDto> {
    const results = await this.signing.signX509Svids(agent, batchRequest(body));
    return serializeX509SignResults(
      results.map((result) =>
        result.ok
          ? { entryId: result.entryId, ok: true, chain: result.certificateChainDer, expiresAt: result.expiresAt }
          : { entryId: result.entryId, ok: false, code: result.error.kind, message: result.error.message },
      ),
    );
  }

  @Post(routePath(AGENT_API_ROUTES.signJwtSvid))
  @HttpCode(200)
  @ApiOkResponse({ type: JwtSvidResponseDto })
  async signJwtSvid(@CurrentAgent() agent: CallingAgent, @Body() body: JwtSvidRequestDto): Promise<JwtSvidResponseDto> {
    return serializeJwtSvidResponse(await this.signing.signJwtSvid(agent, body.entry_id, body.audience));
  }
}

/** The requests of a CSR batch; a body that breaks the contract is the caller's error, naming every bad field. */
function batchRequest(body: unknown): X509SvidRequest[] {
  return checkContract(() => parseX509SvidBatchRequest(body));
}

/** Runs a parser of the agent API contract; a request that breaks it is the caller's error (400). */
function checkContract<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof AgentApiProtocolError) throw new AppError('invalid_argument', error.message);
    throw error;
  }
}
