import { Injectable } from '@nestjs/common';
import { parseCsrFast, PkiError, requestedIdProblem, type FastParsedCsr } from '@sigil/pki';
import { SpiffeId, type SpiffeJwks } from '@sigil/spiffe';
import type { AgentSelector } from '../agents/agent.js';
import { AgentsService } from '../agents/agents.service.js';
import { BundleService } from '../bundle/bundle.service.js';
import { CaService } from '../ca/ca.service.js';
import { AppError } from '../common/errors.js';
import { serialNumberOf } from '../auth/client-svid.js';
import type { CallingAgent } from './agent-request.js';
import { AgentSigningBudget } from './signing-budget.js';

/** An agent X509-SVID just signed. */
export interface IssuedAgentSvid {
  readonly spiffeId: string;
  /** Leaf first, then our CA's intermediates when it is an intermediate. */
  readonly certificateChainDer: readonly Uint8Array[];
  readonly expiresAt: Date;
  /** Lowercase hex, as recorded for the agent. */
  readonly serialNumber: string;
}

/** What node attestation hands the agent: its SVID and our trust bundle. */
export interface AttestationResult {
  readonly svid: IssuedAgentSvid;
  readonly bundle: SpiffeJwks;
}

/** How the agent attested (the node attestor's type), the node selectors it found and whether it may attest again. */
export interface AttestationRecord {
  readonly attestationType: string;
  readonly selectors: readonly AgentSelector[];
  readonly canReattest: boolean;
}

/**
 * Parses a CSR from an agent: its self-signature must verify; only its key is used.
 *
 * @throws AppError `invalid_argument` naming `field` and what is wrong.
 */
export function parseAgentCsr(csr: string, field = 'csr'): FastParsedCsr {
  try {
    return parseCsrFast(csr);
  } catch (error) {
    if (error instanceof PkiError)
      throw new AppError('invalid_argument', `${field}: ${error.message}`, { cause: error });
    throw error;
  }
}

/**
 * Checks that a CSR asks for no SPIFFE ID but `spiffeId` (a request without a URI SAN is fine).
 *
 * @throws AppError `invalid_argument` when it asks for several URIs or another one.
 */
export function checkRequestedId(csr: FastParsedCsr, spiffeId: string, field = 'csr'): void {
  const problem = requestedIdProblem(csr.uris, spiffeId);
  if (problem !== undefined) throw new AppError('invalid_argument', `${field}: ${problem}`);
}

/**
 * Signs agent X509-SVIDs (with the server's default X509-SVID TTL, as SPIRE's agent TTL defaults to it) and records
 * them: at node attestation, once an attestor has proven the agent's identity, and at renewal.
 */
@Injectable()
export class AgentSvidService {
  constructor(
    private readonly ca: CaService,
    private readonly agents: AgentsService,
    private readonly bundles: BundleService,
    private readonly budget: AgentSigningBudget,
  ) {}

  /**
   * Completes a node attestation: signs the agent's SVID and records the agent with its serial and selectors.
   *
   * @throws AppError `permission_denied` when the agent is banned, or already recorded and may not attest again
   *   (nothing is recorded then).
   */
  async attest(agentId: SpiffeId, csr: FastParsedCsr, record: AttestationRecord): Promise<AttestationResult> {
    const svid = this.issue(agentId, csr);
    await this.agents.recordAttestation(
      {
        spiffeId: svid.spiffeId,
        attestationType: record.attestationType,
        serialNumber: svid.serialNumber,
        svidExpiresAt: svid.expiresAt,
        selectors: [...record.selectors],
      },
      record.canReattest,
    );
    return { svid, bundle: this.bundles.ownJwks() };
  }

  private issue(agentId: SpiffeId, csr: FastParsedCsr): IssuedAgentSvid {
    const spiffeId = agentId.toString();
    checkRequestedId(csr, spiffeId);
    const signed = this.ca.signX509Svid({ spiffeId: agentId, spkiDer: csr.spkiDer });
    return {
      spiffeId,
      certificateChainDer: signed.certificateChainDer,
      expiresAt: signed.expiresAt,
      serialNumber: serialNumberOf(signed.certificateChainDer[0]!),
    };
  }

  /**
   * Renews the calling agent's SVID; the serial of the one it presented must still be the current one. The new serial
   * is kept beside it until the agent first uses the new SVID (AgentsService.recordRenewal). Renewal has its own small
   * budget per agent, which workload signing never spends.
   *
   * An agent whose node attestor lets it attest again (x509pop, k8s_psat) renews by attesting again, as in SPIRE
   * (`RenewAgent` answers such an agent PermissionDenied "agent must reattest instead of renew"): its SVID then stays
   * bound to fresh node evidence, and a stolen SVID and key cannot be renewed past their expiry.
   *
   * @throws AppError `permission_denied` for an agent that can attest again (before anything is signed);
   *   `resource_exhausted` when the agent renews more often than that budget allows, or replaced its unused renewed
   *   SVID too often.
   */
  async renew(agent: CallingAgent, csrPem: string): Promise<IssuedAgentSvid> {
    if (agent.canReattest) {
      throw new AppError(
        'permission_denied',
        `agent ${agent.spiffeId} must reattest instead of renew: its ${agent.attestationType} node attestation can ` +
          'attest it again, which is how it renews its SVID',
      );
    }
    this.budget.charge(agent.spiffeId, 'renewal');
    const svid = this.issue(SpiffeId.parse(agent.spiffeId), parseAgentCsr(csrPem));
    await this.agents.recordRenewal(agent.spiffeId, agent.serialNumber, {
      serialNumber: svid.serialNumber,
      svidExpiresAt: svid.expiresAt,
    });
    return svid;
  }
}
