import { Body, Controller, HttpCode, Ip, Param, Post, type OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { ApiBody, ApiExtraModels, ApiOkResponse, ApiParam, ApiTags, getSchemaPath } from '@nestjs/swagger';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ATTESTATION_PATH_PREFIX, serializeAttestationResponse } from '@sigil/agent-api';
import { AttestationResponseDto, agentSvidSource } from '../agent-api/agent-api.dto.js';
import { Public } from '../auth/public.decorator.js';
import { NodeAttestationService } from './node-attestation.service.js';
import { NodeAttestorRegistry } from './node-attestors.js';

/** The registry of each app (tests run several in one process), for the cost of a request before its body is read. */
const registries = new WeakMap<object, NodeAttestorRegistry>();

/** What `POST /agent/v1/attest/:attestor` takes from its address's attestation budget (see the registry). */
function attestCost(request: FastifyRequest): number {
  const route = (request.params as { attestor?: unknown } | undefined)?.attestor;
  const registry = registries.get(request.server);
  return typeof route === 'string' && registry !== undefined ? registry.attestCost(route) : 1;
}

const ATTESTOR_PARAM = {
  name: 'attestor',
  description: "the route segment of an enabled node attestor (the attestor's type, `join_token` as `join-token`)",
  example: 'join-token',
};

/**
 * Node attestation: how an agent without an SVID gets one. Open routes (not admin routes): the attestor's evidence
 * (a join token, an x509pop proof, …) is the credential. Each route goes to the enabled attestor named by its
 * segment. Each source address has an attestation budget, and a refused attempt costs more of it than an accepted
 * one (see `PublicRateLimitInterceptor`).
 */
@ApiTags('agent')
@Public('attestation')
@Controller(ATTESTATION_PATH_PREFIX.slice(1))
export class NodeAttestationController implements OnModuleInit {
  constructor(
    private readonly attestation: NodeAttestationService,
    private readonly registry: NodeAttestorRegistry,
    private readonly adapter: HttpAdapterHost,
  ) {
    // In the constructor: the OpenAPI document is built after the app is created, before it is initialised.
    documentAttestors(this.registry);
  }

  onModuleInit(): void {
    registries.set(this.adapter.httpAdapter.getInstance<FastifyInstance>(), this.registry);
  }

  @Post(':attestor/challenge')
  @HttpCode(200)
  @ApiParam(ATTESTOR_PARAM)
  async challenge(
    @Param('attestor') attestor: string,
    @Body() body: unknown,
    @Ip() remoteAddress: string | undefined,
  ): Promise<unknown> {
    return this.attestation.challenge(attestor, body, { remoteAddress });
  }

  // The attestation request of an attestor with a challenge step takes nothing from the address's budget (the
  // challenge did; answers are bounded by the challenge table): agents behind one NAT never strand a challenge on a
  // refused answer. Refused when the address is in debt, and a wrong answer costs the whole refusal.
  @Public('attestation', attestCost)
  @Post(':attestor')
  @HttpCode(200)
  @ApiParam(ATTESTOR_PARAM)
  @ApiOkResponse({ type: AttestationResponseDto })
  async attest(
    @Param('attestor') attestor: string,
    @Body() body: unknown,
    @Ip() remoteAddress: string | undefined,
  ): Promise<AttestationResponseDto> {
    const { svid, bundle } = await this.attestation.attest(attestor, body, { remoteAddress });
    return serializeAttestationResponse(agentSvidSource(svid), bundle);
  }
}

let documented = false;

/**
 * Names every attestor's request and challenge messages in the OpenAPI document. They are known once the attestors
 * are built, so the class's metadata is completed then, once per process (every app has the same attestors).
 */
function documentAttestors(registry: NodeAttestorRegistry): void {
  if (documented) return;
  documented = true;
  const attestors = registry.all();
  const requests = attestors.map((attestor) => attestor.requestType);
  const challenges = attestors.flatMap((attestor) => (attestor.challenge ? [attestor.challenge] : []));
  const prototype = NodeAttestationController.prototype;
  const describe = (method: 'attest' | 'challenge', decorator: MethodDecorator): void => {
    decorator(prototype, method, Object.getOwnPropertyDescriptor(prototype, method) as PropertyDescriptor);
  };
  ApiExtraModels(
    ...requests,
    ...challenges.flatMap((challenge) => [challenge.requestType, challenge.responseType]),
  )(NodeAttestationController);
  const oneOf = (types: readonly (new () => unknown)[]) => ({
    oneOf: types.map((type) => ({ $ref: getSchemaPath(type) })),
  });
  describe('attest', ApiBody({ description: "the attestor's evidence and the agent's CSR", schema: oneOf(requests) }));
  describe(
    'challenge',
    ApiBody({ description: "the attestor's challenge request", schema: oneOf(challenges.map((c) => c.requestType)) }),
  );
  describe(
    'challenge',
    ApiOkResponse({ description: 'the challenge to answer', schema: oneOf(challenges.map((c) => c.responseType)) }),
  );
}
