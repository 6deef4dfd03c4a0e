import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { X509POP_ATTESTOR } from '@sigil/agent-api';
import { FairQueue, FairQueueFullError } from '../../agent-api/fair-queue.js';
import { addressKey } from '../../common/address-key.js';
import { CLOCK, type Clock } from '../../common/clock.js';
import { AppError } from '../../common/errors.js';
import type { AttestationCall, NodeAttestation, NodeAttestor, NodeAttestorChallenge } from '../node-attestor.js';
import { NodeAttestorOptionError } from '../node-attestor.js';
import { X509POP_SHARED_CHALLENGES, type X509popChallengesRepository } from './x509pop-challenges.repository.js';
import { X509POP_CHALLENGE_TTL_MS, X509popChallenges, type IssuedX509popChallenge } from './x509pop-challenges.js';
import { X509popAttestationDto, X509popChallengeRequestDto, X509popChallengeResponseDto } from './x509pop.dto.js';
import {
  isPossessionProven,
  parseX509popCaBundle,
  verifyX509popChain,
  X509popCheckedPaths,
  type X509popEvidence,
} from './x509pop.js';

type CaCertificates = ReturnType<typeof parseX509popCaBundle>;

/**
 * Chains waiting for their check, over every source address; past it a challenge is refused with 503 (each waiting
 * request holds its chain, at most 96 KiB: 24 MiB in all).
 */
export const X509POP_MAX_WAITING_CHECKS = 256;
/** Chains of one source address waiting for their check; past it that address gets 429. */
export const X509POP_MAX_WAITING_CHECKS_PER_ADDRESS = 8;
/**
 * The share of the event loop first checks of chains may take: after a check of `t` ms the next waits `3t`. A real
 * chain's check is a few ms, so a fleet's first attestations still get ~80 checks per second; a flood of new chains
 * leaves every other request three quarters of the loop.
 */
export const X509POP_CHECK_BUSY_SHARE = 0.25;
/**
 * At a cap, this replica asks the database which of its counted challenges were answered on another replica at most
 * this often (one query of up to the total cap's ids), so a client held at its cap cannot make every request a query.
 */
export const X509POP_RECOUNT_INTERVAL_MS = 1000;

/**
 * x509pop node attestation (challenge–response): the chain is verified against the configured CA bundle when the
 * challenge is issued, the answer must sign the nonce with the leaf's key. The agent becomes
 * `spiffe://<td>/sigil/agent/x509pop/<sha-1 fingerprint of the leaf>`; attesting again later is allowed (a new
 * SVID replaces the old one) unless the agent is banned.
 *
 * Option `ca_bundle` (required): PEM file of the CAs a node's certificate must chain to, read at start (an
 * unreadable or empty bundle stops the server from starting).
 *
 * On PostgreSQL, challenges are stored in the database (X509popChallengesRepository), so an agent may answer on any
 * replica; the caps of {@link X509popChallenges} count, per replica, the challenges that replica issued. On the
 * embedded database (one server process, nothing to share) and without a store (unit tests of the check queue) they
 * live in this process only, which spares every challenge a database write.
 */
@Injectable()
export class X509popAttestor implements NodeAttestor<X509popAttestationDto> {
  readonly type = X509POP_ATTESTOR.type;
  readonly route = X509POP_ATTESTOR.route;
  readonly optionNames: readonly string[] = ['ca_bundle'];
  readonly requestType = X509popAttestationDto;
  readonly challenge: NodeAttestorChallenge<X509popChallengeRequestDto, X509popChallengeResponseDto> = {
    requestType: X509popChallengeRequestDto,
    responseType: X509popChallengeResponseDto,
    issue: async (request, call) => {
      const { challengeId, nonce } = await this.issueChallenge(request.certificates, call.remoteAddress);
      return { challenge_id: challengeId, nonce: nonce.toString('base64') };
    },
  };

  private readonly logger = new Logger(X509popAttestor.name);
  private readonly challenges = new X509popChallenges();
  private caCertificates: CaCertificates | undefined;
  /** Paths checked against {@link caCertificates}, which are loaded once. */
  private readonly checkedPaths = new X509popCheckedPaths();
  /**
   * Chains not checked before take turns, one per turn of the event loop, in round robin over source addresses: a
   * first check costs milliseconds (the walk, then a full parse), and an attacker's new connections each bring one;
   * run as they arrive, the dozens read in one turn of the loop held every other request (a real node's answer
   * and its database queries) for hundreds of milliseconds. One per turn was not enough either: a real node's
   * answer takes a dozen turns of the loop (its database round trips), and each waited for a whole check (a profile
   * of the slowest answer during a flood: 108 of its 235 ms were checks), so the checks also take at most a share
   * of the loop's time. A chain presented before does not wait.
   */
  private readonly checkTurns = new FairQueue({
    chunkSize: 1,
    concurrency: 1,
    maxQueuedItems: X509POP_MAX_WAITING_CHECKS,
    maxQueuedItemsPerCaller: X509POP_MAX_WAITING_CHECKS_PER_ADDRESS,
    startAtOnce: false,
    maxBusyShare: X509POP_CHECK_BUSY_SHARE,
  });

  private lastCleanupMs = -Infinity;
  private lastRecountMs = -Infinity;

  constructor(
    @Inject(CLOCK) private readonly clock: Clock,
    @Optional()
    @Inject(X509POP_SHARED_CHALLENGES)
    private readonly store: X509popChallengesRepository | null = null,
  ) {}

  async configure(options: Readonly<Record<string, string>>): Promise<void> {
    const option = options['ca_bundle'];
    if (option === undefined || option === '') {
      throw new NodeAttestorOptionError('ca_bundle', 'required: the PEM file of the CAs node certificates chain to');
    }
    const path = isAbsolute(option) ? option : resolve(option);
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
  async issueChallenge(
    certificatesBase64: readonly string[],
    remoteAddress: string | undefined,
  ): Promise<{ challengeId: string; nonce: Buffer }> {
    const roots = this.requireCaCertificates();
    const certificates = certificatesBase64.map((text) => Buffer.from(text, 'base64'));
    const evidence: X509popEvidence =
      this.checkedPaths.known(certificates, roots, this.clock.now()) ??
      (await this.checkInTurn(addressKey(remoteAddress), certificates, roots));
    const now = this.clock.now();
    const issued = await this.issueCounted(evidence, remoteAddress, now);
    if (this.store === null) return issued;
    try {
      await this.cleanUpExpired(now);
      if (issued.replaced !== undefined) await this.store.delete([issued.replaced]);
      await this.store.insert(issued.challengeId, { evidence, nonce: issued.nonce, expiresAt: issued.expiresAt });
    } catch (error) {
      this.challenges.forget([issued.challengeId]);
      throw error;
    }
    return issued;
  }

  /**
   * Counts the challenge against this replica's caps. At a cap, challenges answered on another replica may still be
   * counted here: the database says which (at most every {@link X509POP_RECOUNT_INTERVAL_MS}), then it tries again.
   */
  private async issueCounted(
    evidence: X509popEvidence,
    remoteAddress: string | undefined,
    now: Date,
  ): Promise<IssuedX509popChallenge> {
    try {
      return this.challenges.issue(evidence, remoteAddress, now);
    } catch (error) {
      const nowMs = Date.now();
      const capped = error instanceof AppError && error.kind === 'resource_exhausted';
      if (!capped || this.store === null || nowMs - this.lastRecountMs < X509POP_RECOUNT_INTERVAL_MS) throw error;
      this.lastRecountMs = nowMs;
      const counted = this.challenges.ids();
      const stored = await this.store.stored(counted);
      this.challenges.forget(counted.filter((id) => !stored.has(id)));
      return this.challenges.issue(evidence, remoteAddress, now);
    }
  }

  /** Deletes expired challenges of every replica from the database, at most once per challenge lifetime. */
  private async cleanUpExpired(now: Date): Promise<void> {
    if (now.getTime() - this.lastCleanupMs < X509POP_CHALLENGE_TTL_MS) return;
    this.lastCleanupMs = now.getTime();
    const deleted = await this.store!.deleteExpired(now);
    if (deleted > 0) this.logger.debug({ msg: 'x509pop: expired challenges deleted', deleted });
  }

  private async checkInTurn(
    address: string,
    certificates: readonly Uint8Array[],
    roots: CaCertificates,
  ): Promise<X509popEvidence> {
    try {
      const [evidence] = await this.checkTurns.run(address, [certificates], async ([chain]) => [
        await verifyX509popChain(chain!, roots, this.clock.now(), this.checkedPaths),
      ]);
      return evidence!;
    } catch (error) {
      if (!(error instanceof FairQueueFullError)) throw error;
      if (error.cap === 'caller') {
        throw new AppError(
          'resource_exhausted',
          `x509pop: source address ${address} has ${X509POP_MAX_WAITING_CHECKS_PER_ADDRESS} certificate chains ` +
            `waiting for their check already; retry in 1 s`,
          { retryAfterSeconds: 1 },
        );
      }
      throw new AppError(
        'unavailable',
        `x509pop: ${X509POP_MAX_WAITING_CHECKS} certificate chains are waiting for their check already; retry in 1 s`,
        { retryAfterSeconds: 1 },
      );
    }
  }

  /**
   * Checks the answer to a challenge (each challenge is used up by its first answer, right or wrong): the agent is
   * named by the leaf's fingerprint, its selectors are those of the verified chain.
   */
  async attest(request: X509popAttestationDto, _csr: unknown, _call?: AttestationCall): Promise<NodeAttestation> {
    const now = this.clock.now();
    const challenge = await this.takeChallenge(request.challenge_id, now);
    if (!challenge) {
      throw new AppError('permission_denied', 'x509pop: challenge_id is unknown, expired or already answered');
    }
    if (!isPossessionProven(challenge.evidence.publicKey, challenge.nonce, Buffer.from(request.signature, 'base64'))) {
      throw new AppError(
        'permission_denied',
        'x509pop: signature does not verify with the key of the leaf certificate',
      );
    }
    return {
      agentIdSuffix: [challenge.evidence.fingerprint],
      selectors: challenge.evidence.selectors,
      canReattest: true,
    };
  }

  /** The challenge, used up whether it is still valid or not; undefined when unknown, answered or expired. */
  private async takeChallenge(
    challengeId: string,
    now: Date,
  ): Promise<{ evidence: X509popEvidence; nonce: Buffer } | undefined> {
    if (this.store === null) return this.challenges.take(challengeId, now);
    this.challenges.forget([challengeId]);
    const stored = await this.store.take(challengeId);
    return stored !== undefined && stored.expiresAt.getTime() > now.getTime() ? stored : undefined;
  }

  private requireCaCertificates(): CaCertificates {
    // The registry only routes to an enabled attestor, which configure() gave its bundle.
    if (this.caCertificates === undefined) throw new Error('x509pop: used before it was configured');
    return this.caCertificates;
  }
}
