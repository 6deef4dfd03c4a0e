import { Inject, Injectable, type ValidationPipe } from '@nestjs/common';
import { sigilAgentId } from '@sigil/runtime';
import { AgentSvidService, parseAgentCsr, type AttestationResult } from '../agent-api/agent-svid.service.js';
import { AppError } from '../common/errors.js';
import { createValidationPipe } from '../common/validation.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import type { AttestationCall } from './node-attestor.js';
import { NodeAttestorRegistry } from './node-attestors.js';

/**
 * Node attestation, the part every attestor shares: route to the enabled attestor, check the body against its
 * request type, parse the CSR (before the attestor runs, so a bad CSR never uses up a single-use credential), build
 * the agent ID from the attestor's suffix, then sign and record the agent SVID (which refuses banned agents, and a
 * second attestation where the attestor allows none).
 */
@Injectable()
export class NodeAttestationService {
  // The same rules as the global pipe, for bodies whose type is known only once the attestor is.
  private readonly validation: ValidationPipe = createValidationPipe();

  constructor(
    private readonly registry: NodeAttestorRegistry,
    private readonly agentSvids: AgentSvidService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
  ) {}

  /**
   * The challenge step of the attestor at `route`.
   *
   * @throws AppError `not_found` for an unknown or disabled attestor, or one without a challenge step;
   *   `invalid_argument` naming each bad field of the body
   */
  async challenge(route: string, body: unknown, call: AttestationCall): Promise<unknown> {
    const attestor = this.registry.require(route);
    if (attestor.challenge === undefined) {
      throw new AppError('not_found', `node attestor ${attestor.type}: has no challenge step`);
    }
    const request: unknown = await this.validate(body, attestor.challenge.requestType);
    return attestor.challenge.issue(request, call);
  }

  /**
   * Attests a node with the attestor at `route` and issues its agent SVID.
   *
   * @throws AppError `not_found` for an unknown or disabled attestor; `invalid_argument` for a bad body or CSR;
   *   `permission_denied` when the attestor refuses the evidence or the agent is banned
   */
  async attest(route: string, body: unknown, call: AttestationCall): Promise<AttestationResult> {
    const attestor = this.registry.require(route);
    const request = await this.validate(body, attestor.requestType);
    const csr = parseAgentCsr(request.csr);
    const found = await attestor.attest(request, csr, call);
    const agentId = sigilAgentId(this.config.trustDomain, attestor.type, ...found.agentIdSuffix);
    await found.beforeIssue?.();
    return this.agentSvids.attest(agentId, csr, {
      attestationType: attestor.type,
      selectors: found.selectors,
      canReattest: found.canReattest,
    });
  }

  private async validate<T>(body: unknown, type: new () => T): Promise<T> {
    return (await this.validation.transform(body ?? {}, { type: 'body', metatype: type })) as T;
  }
}
