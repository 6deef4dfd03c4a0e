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
             selectors = EXCLUDED.selectors,
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
   * Records a renewed agent SVID as the agent's new one (replacing a new one it never used) if the agent still exists,
   * is not banned and presented its current serial; the current SVID stays valid until the new one is used.
   */
  async recordNewSvid(
    spiffeId: string,
    currentSerial: string,
    next: { serialNumber: string; svidExpiresAt: Date },
    now: Date,
  ): Promise<AttestedAgent | undefined> {
    const result = await this.repository
      .createQueryBuilder()
      .update()
      .set({
        newSerialNumber: next.serialNumber,
        newSvidExpiresAt: next.svidExpiresAt,
        updatedAt: now,
        lastSeenAt: now,
      })
      .where('spiffe_id = :spiffeId AND serial_number = :currentSerial AND banned = false', {
        spiffeId,
        currentSerial,
      })
      .returning('*')
      .execute();
    return this.first(result.raw);
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

function toAttestedAgent(entity: Omit<AgentEntity, 'svidIssuers'>): AttestedAgent {
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
