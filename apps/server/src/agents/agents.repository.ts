import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { type Repository, type SelectQueryBuilder } from 'typeorm';
import type { AgentSelector, AttestedAgent } from './agent.js';
import { AgentEntity } from './agent.entity.js';

export interface AgentFilter {
  attestationType?: string;
  banned?: boolean;
  /** Agents holding all of these selectors. */
  selectors?: readonly AgentSelector[];
  /** Agents whose SVID expires before this time. */
  expiresBefore?: Date;
  canReattest?: boolean;
}

/** What {@link AgentsRepository.recordNewSvid} did. */
export type NewSvidOutcome =
  /** Recorded as the agent's new SVID; `replacedSerial` is the unused new one it replaced, if there was one. */
  | { readonly kind: 'recorded'; readonly agent: AttestedAgent; readonly replacedSerial: string | null }
  /** Not recorded: the unused new SVID was already replaced `replacements` times in the window ending then. */
  | {
      readonly kind: 'capped';
      readonly pendingSerial: string;
      readonly replacements: number;
      readonly windowEndsAt: Date;
    }
  /** Not recorded: the agent was evicted, is banned or did not present its current serial. */
  | { readonly kind: 'refused' };

export interface AttestedAgentRecord {
  spiffeId: string;
  attestationType: string;
  serialNumber: string;
  svidExpiresAt: Date;
  selectors: readonly AgentSelector[];
}

@Injectable()
export class AgentsRepository {
  constructor(@InjectRepository(AgentEntity) private readonly repository: Repository<AgentEntity>) {}

  /** One page ordered by SPIFFE ID, starting after `afterSpiffeId`. */
  async listPage(filter: AgentFilter, afterSpiffeId: string | undefined, limit: number): Promise<AttestedAgent[]> {
    const query = this.filtered(filter).orderBy('a.spiffe_id', 'ASC').limit(limit);
    if (afterSpiffeId !== undefined) query.andWhere('a.spiffe_id > :after', { after: afterSpiffeId });
    return (await query.getMany()).map(toAttestedAgent);
  }

  count(filter: AgentFilter): Promise<number> {
    return this.filtered(filter).getCount();
  }

  async findBySpiffeId(spiffeId: string): Promise<AttestedAgent | null> {
    const entity = await this.repository.findOneBy({ spiffeId });
    return entity === null ? null : toAttestedAgent(entity);
  }

  async delete(spiffeId: string): Promise<boolean> {
    const result = await this.repository.delete({ spiffeId });
    return (result.affected ?? 0) > 0;
  }

  async markBanned(spiffeId: string, now: Date): Promise<AttestedAgent | undefined> {
    const result = await this.repository
      .createQueryBuilder()
      .update()
      .set({ banned: true, newSerialNumber: null, newSvidExpiresAt: null, updatedAt: now })
      .where('spiffe_id = :spiffeId', { spiffeId })
      .returning('*')
      .execute();
    return this.first(result.raw);
  }

  /**
   * Inserts the agent, or replaces the record of a re-attesting one, unless it is banned or `canReattest` is false
   * (then nothing is written and `undefined` comes back). One statement, so a concurrent ban or attestation cannot
   * slip in between check and write.
   */
  async upsertUnlessBanned(
    record: AttestedAgentRecord,
    now: Date,
    canReattest = true,
  ): Promise<AttestedAgent | undefined> {
    const result = await this.repository.query(
      `INSERT INTO agents (spiffe_id, attestation_type, serial_number, svid_expires_at, selectors, banned,
                           created_at, updated_at, last_seen_at, can_reattest)
       VALUES ($1, $2, $3, $4, $5::jsonb, false, $6, $6, $6, $7)
       ON CONFLICT (spiffe_id) DO UPDATE
         SET attestation_type = EXCLUDED.attestation_type, serial_number = EXCLUDED.serial_number,
             svid_expires_at = EXCLUDED.svid_expires_at, new_serial_number = NULL, new_svid_expires_at = NULL,
             new_serial_replacements = 0, new_serial_replacements_since = NULL, selectors = EXCLUDED.selectors,
             updated_at = EXCLUDED.updated_at, last_seen_at = EXCLUDED.last_seen_at,
             can_reattest = EXCLUDED.can_reattest
         WHERE agents.banned = false AND $7::boolean
       RETURNING *`,
      [
        record.spiffeId,
        record.attestationType,
        record.serialNumber,
        record.svidExpiresAt,
        JSON.stringify(record.selectors),
        now,
        canReattest,
      ],
    );
    return this.first(result);
  }

  /**
   * Records a renewed agent SVID as the agent's new one if the agent still exists, is not banned and presented its
   * current serial; the current SVID stays valid until the new one is used. A new one still unused is replaced, at
   * most `limit.max` times in a window of `limit.windowMs` (counted on the row, the window starting at the first
   * replacement after the previous window ended). One statement that locks the row first, so concurrent renewals (on
   * any replica) each see the one before and none escapes the count.
   */
  async recordNewSvid(
    spiffeId: string,
    currentSerial: string,
    next: { serialNumber: string; svidExpiresAt: Date },
    now: Date,
    limit: { readonly max: number; readonly windowMs: number },
  ): Promise<NewSvidOutcome> {
    const windowStartedBefore = new Date(now.getTime() - limit.windowMs);
    const result = (await this.repository.query(
      `WITH prev AS (
         SELECT spiffe_id, new_serial_number AS replaced, new_serial_replacements AS count,
                (new_serial_replacements_since IS NULL OR new_serial_replacements_since <= $6) AS window_over
           FROM agents WHERE spiffe_id = $1 FOR UPDATE
       )
       UPDATE agents AS a
          SET new_serial_number = $3, new_svid_expires_at = $4, updated_at = $5, last_seen_at = $5,
              new_serial_replacements = CASE WHEN prev.replaced IS NULL THEN prev.count
                                             WHEN prev.window_over THEN 1 ELSE prev.count + 1 END,
              new_serial_replacements_since = CASE WHEN prev.replaced IS NULL THEN a.new_serial_replacements_since
                                                   WHEN prev.window_over THEN $5
                                                   ELSE a.new_serial_replacements_since END
         FROM prev
        WHERE a.spiffe_id = prev.spiffe_id AND a.serial_number = $2 AND a.banned = false
          AND (prev.replaced IS NULL OR prev.window_over OR prev.count < $7)
       RETURNING a.*, prev.replaced AS replaced_serial`,
      [spiffeId, currentSerial, next.serialNumber, next.svidExpiresAt, now, windowStartedBefore, limit.max],
    )) as [Record<string, unknown>[], number];
    // TypeORM answers an UPDATE … RETURNING through query() on PostgreSQL with [rows, affected].
    const row = result[0][0];
    const agent = this.first(result[0]);
    if (row !== undefined && agent !== undefined) {
      return { kind: 'recorded', agent, replacedSerial: (row['replaced_serial'] as string | null) ?? null };
    }
    // Nothing written: say why (read again, after the statement; a change in between only alters the reason given).
    const [state] = (await this.repository.query(
      `SELECT serial_number, banned, new_serial_number, new_serial_replacements, new_serial_replacements_since
         FROM agents WHERE spiffe_id = $1`,
      [spiffeId],
    )) as Record<string, unknown>[];
    const since = state?.['new_serial_replacements_since'];
    if (
      state !== undefined &&
      state['serial_number'] === currentSerial &&
      state['banned'] === false &&
      state['new_serial_number'] !== null &&
      (state['new_serial_replacements'] as number) >= limit.max &&
      since !== null &&
      since !== undefined
    ) {
      const windowEndsAt = new Date(new Date(since as string | Date).getTime() + limit.windowMs);
      if (windowEndsAt.getTime() > now.getTime()) {
        return {
          kind: 'capped',
          pendingSerial: state['new_serial_number'] as string,
          replacements: state['new_serial_replacements'] as number,
          windowEndsAt,
        };
      }
    }
    return { kind: 'refused' };
  }

  /**
   * Makes the agent's new SVID its current one, if `newSerial` is still its new serial and it is not banned: one
   * conditional statement, so of concurrent promotions (on any replica) one writes and the others find nothing, and a
   * ban, eviction, re-attestation or further renewal committed first wins. `undefined` when nothing was written.
   */
  async promoteNewSvid(spiffeId: string, newSerial: string, now: Date): Promise<AttestedAgent | undefined> {
    const result = await this.repository.query(
      `UPDATE agents
          SET serial_number = new_serial_number, svid_expires_at = new_svid_expires_at,
              new_serial_number = NULL, new_svid_expires_at = NULL, updated_at = $3, last_seen_at = $3
        WHERE spiffe_id = $1 AND new_serial_number = $2 AND banned = false
        RETURNING *`,
      [spiffeId, newSerial, now],
    );
    // TypeORM answers an UPDATE … RETURNING through query() on PostgreSQL with [rows, affected].
    return this.first((result as [unknown[], number])[0]);
  }

  /**
   * Removes (or with `dryRun` only names) at most `limit` agents that can re-attest, are not banned and whose SVID
   * expired before `expiredBefore`, oldest expiry first; returns their IDs. One statement whose outer condition is
   * checked again on each row as it is deleted, so an agent banned, renewed or re-attested after the inner select is
   * left alone.
   */
  async deleteExpired(expiredBefore: Date, limit: number, dryRun: boolean): Promise<string[]> {
    const condition = 'can_reattest AND NOT banned AND svid_expires_at < $1';
    const select = `SELECT spiffe_id FROM agents WHERE ${condition} ORDER BY svid_expires_at, spiffe_id LIMIT $2`;
    const rows = (await this.repository.query(
      dryRun ? select : `DELETE FROM agents WHERE spiffe_id IN (${select}) AND ${condition} RETURNING spiffe_id`,
      [expiredBefore, limit],
    )) as { spiffe_id: string }[] | [{ spiffe_id: string }[], number];
    // TypeORM answers a DELETE … RETURNING on PostgreSQL with [rows, affected].
    const list = dryRun ? rows : (rows as [{ spiffe_id: string }[], number])[0];
    return (list as { spiffe_id: string }[]).map((row) => row.spiffe_id).sort();
  }

  async touch(spiffeId: string, now: Date): Promise<void> {
    await this.repository.update({ spiffeId }, { lastSeenAt: now });
  }

  private filtered(filter: AgentFilter): SelectQueryBuilder<AgentEntity> {
    const query = this.repository.createQueryBuilder('a');
    if (filter.attestationType !== undefined) {
      query.andWhere('a.attestation_type = :type', { type: filter.attestationType });
    }
    if (filter.banned !== undefined) query.andWhere('a.banned = :banned', { banned: filter.banned });
    if (filter.canReattest !== undefined) {
      query.andWhere('a.can_reattest = :canReattest', { canReattest: filter.canReattest });
    }
    if (filter.expiresBefore !== undefined) {
      query.andWhere('a.svid_expires_at < :expiresBefore', { expiresBefore: filter.expiresBefore });
    }
    if (filter.selectors !== undefined && filter.selectors.length > 0) {
      query.andWhere('a.selectors @> :selectors::jsonb', { selectors: JSON.stringify(filter.selectors) });
    }
    return query;
  }

  /** Maps a raw `RETURNING *` row (snake_case columns) to the agent. */
  private first(raw: unknown): AttestedAgent | undefined {
    const row = (raw as Record<string, unknown>[])[0];
    if (!row) return undefined;
    return toAttestedAgent({
      spiffeId: row['spiffe_id'] as string,
      attestationType: row['attestation_type'] as string,
      serialNumber: row['serial_number'] as string,
      svidExpiresAt: new Date(row['svid_expires_at'] as string | Date),
      newSerialNumber: (row['new_serial_number'] as string | null) ?? null,
      newSvidExpiresAt:
        row['new_svid_expires_at'] === null || row['new_svid_expires_at'] === undefined
          ? null
          : new Date(row['new_svid_expires_at'] as string | Date),
      selectors: row['selectors'] as AgentSelector[],
      banned: row['banned'] as boolean,
      canReattest: row['can_reattest'] as boolean,
      createdAt: new Date(row['created_at'] as string | Date),
      updatedAt: new Date(row['updated_at'] as string | Date),
      lastSeenAt: row['last_seen_at'] === null ? null : new Date(row['last_seen_at'] as string | Date),
    });
  }
}

function toAttestedAgent(
  entity: Omit<AgentEntity, 'svidIssuers' | 'newSerialReplacements' | 'newSerialReplacementsSince'>,
): AttestedAgent {
  return {
    spiffeId: entity.spiffeId,
    attestationType: entity.attestationType,
    serialNumber: entity.serialNumber,
    svidExpiresAt: entity.svidExpiresAt,
    newSerialNumber: entity.newSerialNumber ?? null,
    newSvidExpiresAt: entity.newSvidExpiresAt ?? null,
    selectors: entity.selectors,
    banned: entity.banned,
    canReattest: entity.canReattest,
    createdAt: entity.createdAt,
    updatedAt: entity.updatedAt,
    lastSeenAt: entity.lastSeenAt,
  };
}
