import { randomBytes, randomUUID } from 'node:crypto';
import { addressKey } from '../../common/address-key.js';
import { AppError } from '../../common/errors.js';
import type { X509popEvidence } from './x509pop.js';

/** How long a challenge may be answered. */
export const X509POP_CHALLENGE_TTL_MS = 60_000;
export const X509POP_NONCE_BYTES = 32;

/** How many x509pop challenges may be outstanding at once, and for whom. */
export interface X509popChallengeLimits {
  /** Per leaf certificate (fingerprint): a new challenge replaces the oldest one from the same source address. */
  readonly perCertificate: number;
  /** Per source address (an IPv6 address counts as its /64). */
  readonly perAddress: number;
  /** In this replica, whoever asks: the last line. */
  readonly total: number;
}

export const X509POP_CHALLENGE_LIMITS: X509popChallengeLimits = Object.freeze({
  perCertificate: 4,
  perAddress: 64,
  total: 10_000,
});

interface PendingChallenge {
  readonly evidence: X509popEvidence;
  readonly nonce: Buffer;
  readonly expiresAtMs: number;
  readonly address: string;
}

/** A challenge just issued; `replaced` names the older one of the same certificate and address it voided. */
export interface IssuedX509popChallenge {
  readonly challengeId: string;
  readonly nonce: Buffer;
  readonly expiresAt: Date;
  readonly replaced?: string;
}

/**
 * The x509pop challenges this replica issued and still counts: each answerable once, within
 * {@link X509POP_CHALLENGE_TTL_MS}. With a server, they are stored in the database too (X509popChallengesRepository), so
 * any replica can take the answer; this table then only keeps the counts of the caps, per replica, and forgets a
 * challenge answered elsewhere when a cap is reached ({@link forget}) or when it expires.
 *
 * Asking for a challenge needs only a certificate that chains to the CA (certificates are not secret), so the
 * table is bounded per certificate and per source address: one client cannot fill it for everyone else. A new
 * challenge for a certificate at its cap replaces that certificate's oldest challenge from the same address, never
 * one asked from another address, so a stranger holding a node's certificate cannot void the node's challenge
 * (it can only make the node wait, with 429, while it keeps asking).
 */
export class X509popChallenges {
  /** By challenge id, in the order issued, which is also the order they expire in. */
  private readonly pending = new Map<string, PendingChallenge>();
  /** Outstanding challenge ids per leaf fingerprint, oldest first. */
  private readonly byCertificate = new Map<string, string[]>();
  /** Outstanding challenges per address key. */
  private readonly byAddress = new Map<string, number>();

  constructor(
    private readonly ttlMs = X509POP_CHALLENGE_TTL_MS,
    private readonly limits: X509popChallengeLimits = X509POP_CHALLENGE_LIMITS,
  ) {}

  /** How many challenges are outstanding (expired ones are counted until the next issue). */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Stores a fresh challenge for the verified chain, asked from `remoteAddress`, and returns its id and nonce.
   *
   * @throws AppError `resource_exhausted` when the address, the certificate (from other addresses) or the replica
   *   holds as many challenges as it may.
   */
  issue(evidence: X509popEvidence, remoteAddress: string | undefined, now: Date): IssuedX509popChallenge {
    const nowMs = now.getTime();
    for (const [id, challenge] of this.pending) {
      if (challenge.expiresAtMs > nowMs) break;
      this.remove(id, challenge);
    }
    const address = addressKey(remoteAddress);
    const ttlSeconds = Math.ceil(this.ttlMs / 1000);
    const ofCertificate = this.byCertificate.get(evidence.fingerprint) ?? [];
    let replaced: string | undefined;
    if (ofCertificate.length >= this.limits.perCertificate) {
      const voided = ofCertificate.find((id) => this.pending.get(id)?.address === address);
      if (voided === undefined) {
        throw new AppError(
          'resource_exhausted',
          `x509pop: certificate ${evidence.fingerprint} has ${this.limits.perCertificate} challenges outstanding ` +
            `(the limit per certificate), asked from other addresses; retry within ${ttlSeconds} s`,
        );
      }
      this.remove(voided, this.pending.get(voided)!);
      replaced = voided;
    }
    if ((this.byAddress.get(address) ?? 0) >= this.limits.perAddress) {
      throw new AppError(
        'resource_exhausted',
        `x509pop: source address ${address} has ${this.limits.perAddress} challenges outstanding (the limit per ` +
          `address); answer them or wait up to ${ttlSeconds} s for them to expire`,
      );
    }
    if (this.pending.size >= this.limits.total) {
      throw new AppError('resource_exhausted', 'x509pop: too many challenges outstanding, retry shortly');
    }
    const challengeId = randomUUID();
    const nonce = randomBytes(X509POP_NONCE_BYTES);
    this.pending.set(challengeId, { evidence, nonce, expiresAtMs: nowMs + this.ttlMs, address });
    this.byCertificate.set(evidence.fingerprint, [...ofCertificate.filter((id) => this.pending.has(id)), challengeId]);
    this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1);
    return { challengeId, nonce, expiresAt: new Date(nowMs + this.ttlMs), ...(replaced !== undefined && { replaced }) };
  }

  /** The ids of the challenges counted. */
  ids(): string[] {
    return [...this.pending.keys()];
  }

  /** Stops counting these challenges (answered on another replica, or never stored). */
  forget(ids: Iterable<string>): void {
    for (const id of ids) {
      const challenge = this.pending.get(id);
      if (challenge) this.remove(id, challenge);
    }
  }

  /** Removes the challenge and returns it, if it exists and has not expired. */
  take(challengeId: string, now: Date): { evidence: X509popEvidence; nonce: Buffer } | undefined {
    const challenge = this.pending.get(challengeId);
    if (!challenge) return undefined;
    this.remove(challengeId, challenge);
    return challenge.expiresAtMs > now.getTime() ? challenge : undefined;
  }

  private remove(id: string, challenge: PendingChallenge): void {
    this.pending.delete(id);
    const { fingerprint } = challenge.evidence;
    const remaining = (this.byCertificate.get(fingerprint) ?? []).filter((each) => each !== id);
    if (remaining.length === 0) this.byCertificate.delete(fingerprint);
    else this.byCertificate.set(fingerprint, remaining);
    const count = (this.byAddress.get(challenge.address) ?? 1) - 1;
    if (count <= 0) this.byAddress.delete(challenge.address);
    else this.byAddress.set(challenge.address, count);
  }
}
