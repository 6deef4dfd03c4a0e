import { readFile } from 'node:fs/promises';
import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import { sigilAgentId } from '@sigil/runtime';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { AgentSvidService, parseAgentCsr, type AttestationResult } from './agent-svid.service.js';
import { X509popChallenges } from './x509pop-challenges.js';
import {
  isPossessionProven,
  parseX509popCaBundle,
  verifyX509popChain,
  X509popCheckedPaths,
  type X509popEvidence,
} from './x509pop.js';

type CaCertificates = ReturnType<typeof parseX509popCaBundle>;

/**
 * x509pop node attestation (challenge–response): the chain is verified against the configured CA bundle when the
 * challenge is issued, the answer must sign the nonce with the leaf's key. The agent becomes
 * `spiffe://<td>/sigil/agent/x509pop/<sha-1 fingerprint of the leaf>`; attesting again later is allowed (a new
 * SVID replaces the old one) unless the agent is banned.
 */
@Injectable()
export class X509popAttestationService implements OnModuleInit {
  private readonly logger = new Logger(X509popAttestationService.name);
  private readonly challenges = new X509popChallenges();
  private caCertificates: CaCertificates | undefined;
  /** Paths checked against {@link caCertificates}, which are loaded once. */
  private readonly checkedPaths = new X509popCheckedPaths();

  constructor(
    private readonly agentSvids: AgentSvidService,
    @Inject(SERVER_CONFIG) private readonly config: Pick<ServerConfig, 'trustDomain' | 'x509popCaBundle'>,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /** Loads the CA bundle; a configured but unreadable or empty bundle stops the server from starting. */
  async onModuleInit(): Promise<void> {
    const path = this.config.x509popCaBundle;
    if (path === undefined) return;
    let pem: string;
    try {
      pem = await readFile(path, 'utf8');
    } catch (error) {
      throw new Error(`x509pop ca bundle ${path}: cannot be read: ${(error as NodeJS.ErrnoException).code ?? error}`);
    }
    this.caCertificates = parseX509popCaBundle(pem, path);
    this.logger.log({ msg: 'x509pop attestation enabled', caBundle: path, caCertificates: this.caCertificates.length });
  }

  /**
   * Verifies the chain and issues a challenge for it, within the per-certificate and per-address caps of
   * {@link X509popChallenges} (`remoteAddress` is the TCP peer; undefined on the local admin socket).
   */
  async challenge(
    certificatesBase64: readonly string[],
    remoteAddress: string | undefined,
  ): Promise<{ challengeId: string; nonce: Buffer }> {
    const roots = this.requireCaCertificates();
    const now = this.clock.now();
    const certificates = certificatesBase64.map((text) => Buffer.from(text, 'base64'));
    const evidence: X509popEvidence = await verifyX509popChain(certificates, roots, now, this.checkedPaths);
    return this.challenges.issue(evidence, remoteAddress, now);
  }

  /**
   * Checks the answer to a challenge (each challenge is used up by its first answer, right or wrong) and issues the
   * agent's SVID.
   */
  async attest(challengeId: string, signatureBase64: string, csrPem: string): Promise<AttestationResult> {
    this.requireCaCertificates();
    const csr = parseAgentCsr(csrPem);
    const challenge = this.challenges.take(challengeId, this.clock.now());
    if (!challenge) {
      throw new AppError('permission_denied', 'x509pop: challenge_id is unknown, expired or already answered');
    }
    if (!isPossessionProven(challenge.evidence.publicKey, challenge.nonce, Buffer.from(signatureBase64, 'base64'))) {
      throw new AppError(
        'permission_denied',
        'x509pop: signature does not verify with the key of the leaf certificate',
      );
    }
    const agentId = sigilAgentId(this.config.trustDomain, 'x509pop', challenge.evidence.fingerprint);
    return this.agentSvids.attest(agentId, csr, {
      attestationType: 'x509pop',
      selectors: challenge.evidence.selectors,
    });
  }

  private requireCaCertificates(): CaCertificates {
    if (this.caCertificates === undefined) {
      throw new AppError(
        'failed_precondition',
        'x509pop: attestation is not enabled on this server (start it with --x509pop-ca-bundle)',
      );
    }
    return this.caCertificates;
  }
}
