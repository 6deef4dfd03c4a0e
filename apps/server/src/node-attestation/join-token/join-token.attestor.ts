import { Inject, Injectable } from '@nestjs/common';
import { JOIN_TOKEN_ATTESTOR } from '@sigil/agent-api';
import type { FastParsedCsr } from '@sigil/pki';
import { type SpiffeId } from '@sigil/spiffe';
import type { AgentSelector } from '../../agents/agent.js';
import { CLOCK, type Clock } from '../../common/clock.js';
import { AppError } from '../../common/errors.js';
import { EntriesService } from '../../entries/entries.service.js';
import { JoinTokensService } from '../../join-tokens/join-tokens.service.js';
import type { NodeAttestation, NodeAttestor, NodeAttestorContext } from '../node-attestor.js';
import { JoinTokenAttestationDto } from './join-token.dto.js';

/**
 * Join token node attestation: a single-use token makes the agent `spiffe://<td>/sigil/agent/join_token/<token id>`.
 * Unlike SPIRE, which puts the token itself in the agent ID, the ID holds the token row's id: SPIFFE IDs are
 * public (in every certificate, log and listing) and the token is a secret. The node selector is the agent ID
 * itself (`sigil:agent_id:<id>`).
 */
@Injectable()
export class JoinTokenAttestor implements NodeAttestor<JoinTokenAttestationDto> {
  readonly type = JOIN_TOKEN_ATTESTOR.type;
  readonly route = JOIN_TOKEN_ATTESTOR.route;
  readonly optionNames: readonly string[] = [];
  readonly requestType = JoinTokenAttestationDto;

  constructor(
    private readonly joinTokens: JoinTokensService,
    private readonly entries: EntriesService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  private agentIdOf: NodeAttestorContext['agentId'] | undefined;

  async configure(_options: Readonly<Record<string, string>>, context: NodeAttestorContext): Promise<void> {
    this.agentIdOf = context.agentId;
  }

  /**
   * Consumes the token. A token created with a SPIFFE ID (an alias, as SPIRE's `token generate -spiffeID`) also
   * gets the entry `alias ← agent` with the agent's node selector, so entries parented by the alias reach this
   * agent.
   *
   * @throws AppError `invalid_argument` for a CSR asking for a URI SAN (checked first, so it does not burn the
   *   token), `permission_denied` for an unknown, expired or used token.
   */
  async attest(request: JoinTokenAttestationDto, csr: FastParsedCsr): Promise<NodeAttestation> {
    if (csr.uris.length > 0) {
      throw new AppError('invalid_argument', 'csr: must not request a uri san, the server assigns the agent id');
    }
    const consumed = await this.joinTokens.consume(request.token, this.clock.now());
    const alias = consumed.spiffeId;
    const agentId = (this.agentIdOf as NodeAttestorContext['agentId'])(consumed.id);
    return {
      agentIdSuffix: [consumed.id],
      selectors: [nodeSelector(agentId)],
      // Each token names its own agent, and a token is used once: the same agent can never attest twice.
      canReattest: false,
      ...(alias && { beforeIssue: () => this.ensureAliasEntry(alias, agentId) }),
    };
  }

  private async ensureAliasEntry(alias: SpiffeId, agentId: SpiffeId): Promise<void> {
    const [result] = await this.entries.createEntries([
      { spiffeId: alias.toString(), parentId: agentId.toString(), selectors: [nodeSelector(agentId)] },
    ]);
    if (result && !result.ok && result.error.kind !== 'already_exists') throw result.error;
  }
}

const nodeSelector = (agentId: SpiffeId): AgentSelector => ({ type: 'sigil', value: `agent_id:${agentId.toString()}` });
