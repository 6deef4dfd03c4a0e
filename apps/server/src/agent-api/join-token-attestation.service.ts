import { Inject, Injectable } from '@nestjs/common';
import { sigilAgentId } from '@sigil/runtime';
import { type SpiffeId } from '@sigil/spiffe';
import type { AgentSelector } from '../agents/agent.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { EntriesService } from '../entries/entries.service.js';
import { JoinTokensService } from '../join-tokens/join-tokens.service.js';
import { AgentSvidService, parseAgentCsr, type AttestationResult } from './agent-svid.service.js';

/**
 * Join token node attestation: a single-use token makes the agent `spiffe://<td>/sigil/agent/join_token/<token id>`.
 * Unlike SPIRE, which puts the token itself in the agent ID, the ID holds the token row's id: SPIFFE IDs are
 * public (in every certificate, log and listing) and the token is a secret.
 */
@Injectable()
export class JoinTokenAttestationService {
  constructor(
    private readonly joinTokens: JoinTokensService,
    private readonly entries: EntriesService,
    private readonly agentSvids: AgentSvidService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain'>,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /**
   * Consumes the token and issues the agent's SVID. A token created with a SPIFFE ID (an alias, as SPIRE's
   * `token generate -spiffeID`) also gets the entry `alias ← agent` with the agent's node selector, so entries
   * parented by the alias reach this agent.
   *
   * @throws AppError `invalid_argument` for a bad CSR (checked first, so it does not burn the token),
   *   `permission_denied` for an unknown, expired or used token.
   */
  async attest(token: string, csrPem: string): Promise<AttestationResult> {
    const csr = parseAgentCsr(csrPem);
    if (csr.uris.length > 0) {
      throw new AppError('invalid_argument', 'csr: must not request a uri san, the server assigns the agent id');
    }
    const consumed = await this.joinTokens.consume(token, this.clock.now());
    const agentId = sigilAgentId(this.config.trustDomain, 'join_token', consumed.id);
    const nodeSelector: AgentSelector = { type: 'sigil', value: `agent_id:${agentId.toString()}` };
    if (consumed.spiffeId) await this.ensureAliasEntry(consumed.spiffeId, agentId, nodeSelector);
    return this.agentSvids.attest(agentId, csr, { attestationType: 'join_token', selectors: [nodeSelector] });
  }

  private async ensureAliasEntry(alias: SpiffeId, agentId: SpiffeId, selector: AgentSelector): Promise<void> {
    const [result] = await this.entries.createEntries([
      { spiffeId: alias.toString(), parentId: agentId.toString(), selectors: [selector] },
    ]);
    if (result && !result.ok && result.error.kind !== 'already_exists') throw result.error;
  }
}
