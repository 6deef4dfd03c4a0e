import { Body, Controller, HttpCode, Ip, Post } from '@nestjs/common';
import { ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { AGENT_API_PREFIX, AGENT_API_ROUTES, routePath, serializeAttestationResponse } from '@sigil/agent-api';
import { Public } from '../auth/public.decorator.js';
import {
  AttestationResponseDto,
  JoinTokenAttestationDto,
  X509popAttestationDto,
  X509popChallengeRequestDto,
  X509popChallengeResponseDto,
  agentSvidSource,
} from './agent-api.dto.js';
import { JoinTokenAttestationService } from './join-token-attestation.service.js';
import { X509popAttestationService } from './x509pop-attestation.service.js';

/**
 * Node attestation: how an agent without an SVID gets one. Open routes (not admin routes): the join token or the
 * x509pop proof is the credential. Each source address has an attestation budget, and a refused attempt costs more
 * of it than an accepted one (see `PublicRateLimitInterceptor`).
 */
@ApiTags('agent')
@Public('attestation')
@Controller(AGENT_API_PREFIX)
export class AttestationController {
  constructor(
    private readonly joinTokens: JoinTokenAttestationService,
    private readonly x509pop: X509popAttestationService,
  ) {}

  @Post(routePath(AGENT_API_ROUTES.attestJoinToken))
  @HttpCode(200)
  @ApiOkResponse({ type: AttestationResponseDto })
  async joinToken(@Body() body: JoinTokenAttestationDto): Promise<AttestationResponseDto> {
    const { svid, bundle } = await this.joinTokens.attest(body.token, body.csr);
    return serializeAttestationResponse(agentSvidSource(svid), bundle);
  }

  @Post(routePath(AGENT_API_ROUTES.x509popChallenge))
  @HttpCode(200)
  @ApiOkResponse({ type: X509popChallengeResponseDto })
  async x509popChallenge(
    @Body() body: X509popChallengeRequestDto,
    @Ip() remoteAddress: string | undefined,
  ): Promise<X509popChallengeResponseDto> {
    const { challengeId, nonce } = await this.x509pop.challenge(body.certificates, remoteAddress);
    return { challenge_id: challengeId, nonce: nonce.toString('base64') };
  }

  // The answer takes nothing from the address's budget (the challenge did; answers are bounded by the challenge
  // table): agents behind one NAT never strand a challenge on a refused answer. Refused when the address is in debt,
  // and a wrong answer costs the whole refusal.
  @Public('attestation', 0)
  @Post(routePath(AGENT_API_ROUTES.attestX509pop))
  @HttpCode(200)
  @ApiOkResponse({ type: AttestationResponseDto })
  async x509popAnswer(@Body() body: X509popAttestationDto): Promise<AttestationResponseDto> {
    const { svid, bundle } = await this.x509pop.attest(body.challenge_id, body.signature, body.csr);
    return serializeAttestationResponse(agentSvidSource(svid), bundle);
  }
}
