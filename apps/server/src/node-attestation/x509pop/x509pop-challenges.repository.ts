import { createPublicKey } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { In, LessThanOrEqual, type Repository } from 'typeorm';
import { X509popChallengeEntity } from './x509pop-challenge.entity.js';
import type { X509popEvidence } from './x509pop.js';

/**
 * Injection token of the challenge store the x509pop attestor shares with the other replicas: the repository on
 * PostgreSQL, null on the embedded database (one process).
 */
export const X509POP_SHARED_CHALLENGES = Symbol('X509POP_SHARED_CHALLENGES');

/** A challenge as the answering replica needs it. */
export interface StoredX509popChallenge {
  readonly evidence: X509popEvidence;
  readonly nonce: Buffer;
  readonly expiresAt: Date;
}

/**
 * The x509pop challenges every replica can answer (table `x509pop_challenges`). Single use across replicas: a
 * challenge is taken by deleting its row, so of two answers, on any replicas, exactly one gets it.
 */
@Injectable()
export class X509popChallengesRepository {
  constructor(
    @InjectRepository(X509popChallengeEntity) private readonly repository: Repository<X509popChallengeEntity>,
  ) {}

  // Plain SQL for the two statements every attestation makes: an attacker's accepted challenges each cost one insert,
  // and the query builder's work per call showed in the x509pop flood bench.
  async insert(id: string, challenge: StoredX509popChallenge): Promise<void> {
    const { evidence } = challenge;
    await this.repository.query(
      'INSERT INTO x509pop_challenges (id, nonce, fingerprint, public_key_der, selectors, expires_at) ' +
        'VALUES ($1, $2, $3, $4, $5, $6)',
      [
        id,
        challenge.nonce,
        evidence.fingerprint,
        evidence.publicKey.export({ type: 'spki', format: 'der' }),
        JSON.stringify(evidence.selectors.map(({ type, value }) => ({ type, value }))),
        challenge.expiresAt,
      ],
    );
  }

  /** Deletes the challenge and returns it (expired or not), if it was there: one statement, one taker. */
  async take(id: string): Promise<StoredX509popChallenge | undefined> {
    // TypeORM answers a DELETE on PostgreSQL with [rows, rowCount].
    const [rows] = (await this.repository.query(
      'DELETE FROM x509pop_challenges WHERE id = $1 ' +
        'RETURNING nonce, fingerprint, public_key_der, selectors, expires_at',
      [id],
    )) as [
      {
        nonce: Buffer;
        fingerprint: string;
        public_key_der: Buffer;
        selectors: X509popEvidence['selectors'];
        expires_at: Date | string;
      }[],
      number,
    ];
    const row = rows[0];
    if (row === undefined) return undefined;
    return {
      evidence: {
        fingerprint: row.fingerprint,
        selectors: row.selectors,
        publicKey: createPublicKey({ key: row.public_key_der, format: 'der', type: 'spki' }),
      },
      nonce: row.nonce,
      expiresAt: new Date(row.expires_at),
    };
  }

  async delete(ids: readonly string[]): Promise<void> {
    if (ids.length > 0) await this.repository.delete({ id: In([...ids]) });
  }

  /** Which of `ids` are still stored (not answered on any replica, not cleaned up). */
  async stored(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.repository.find({ select: { id: true }, where: { id: In([...ids]) } });
    return new Set(rows.map((row) => row.id));
  }

  /** Deletes the challenges that expired at or before `now`; returns how many. */
  async deleteExpired(now: Date): Promise<number> {
    return (await this.repository.delete({ expiresAt: LessThanOrEqual(now) })).affected ?? 0;
  }
}
