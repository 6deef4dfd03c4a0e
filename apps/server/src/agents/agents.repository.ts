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
      .set({ banned: true, updatedAt: now })
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
                           created_at, updated_at, last_seen_at)
       VALUES ($1, $2, $3, $4, $5::jsonb, false, $6, $6, $6)
       ON CONFLICT (spiffe_id) DO UPDATE
         SET attestation_type = EXCLUDED.attestation_type, serial_number = EXCLUDED.serial_number,
             svid_expires_at = EXCLUDED.svid_expires_at, selectors = EXCLUDED.selectors,
             updated_at = EXCLUDED.updated_at, last_seen_at = EXCLUDED.last_seen_at
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

  /** Records a renewed agent SVID if the agent still exists, is not banned and presented its current serial. */
  async replaceSvid(
    spiffeId: string,
    currentSerial: string,
    next: { serialNumber: string; svidExpiresAt: Date },
    now: Date,
  ): Promise<AttestedAgent | undefined> {
    const result = await this.repository
      .createQueryBuilder()
      .update()
      .set({ serialNumber: next.serialNumber, svidExpiresAt: next.svidExpiresAt, updatedAt: now, lastSeenAt: now })
      .where('spiffe_id = :spiffeId AND serial_number = :currentSerial AND banned = false', {
        spiffeId,
        currentSerial,
      })
      .returning('*')
      .execute();
    return this.first(result.raw);
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
      selectors: row['selectors'] as AgentSelector[],
      banned: row['banned'] as boolean,
      createdAt: new Date(row['created_at'] as string | Date),
      updatedAt: new Date(row['updated_at'] as string | Date),
      lastSeenAt: row['last_seen_at'] === null ? null : new Date(row['last_seen_at'] as string | Date),
    });
  }
}

function toAttestedAgent(entity: AgentEntity): AttestedAgent {
  return {
    spiffeId: entity.spiffeId,
    attestationType: entity.attestationType,
    serialNumber: entity.serialNumber,
    svidExpiresAt: entity.svidExpiresAt,
    selectors: entity.selectors,
    banned: entity.banned,
    createdAt: entity.createdAt,
    updatedAt: entity.updatedAt,
    lastSeenAt: entity.lastSeenAt,
  };
}
