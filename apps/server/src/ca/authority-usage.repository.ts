import { Injectable } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { managerOf, type Transaction } from '../database/transaction.js';

/** A row of {@link AuthorityUsageRepository.usersOf}: an agent, and its reported expiry (unix seconds) or null. */
export interface AuthorityUserRow {
  readonly agentId: string;
  readonly untilSeconds: number | null;
}

/** The agents' reports of the authorities that issued their SVIDs (`agents.svid_issuers`): I/O only. */
@Injectable()
export class AuthorityUsageRepository {
  constructor(private readonly dataSource: DataSource) {}

  /** Stores an agent's report (`{ authority ID: unix seconds }` as JSON) unless the row holds it already. */
  async store(agentId: string, json: string): Promise<void> {
    await this.dataSource.query(
      'UPDATE agents SET svid_issuers = $2::jsonb WHERE spiffe_id = $1 AND svid_issuers IS DISTINCT FROM $2::jsonb',
      [agentId, json],
    );
  }

  /**
   * Agents not banned that reported an SVID under `authorityId` expiring after `nowSeconds`, or that never reported
   * while their own SVID is valid at `now`: the first `limit` by ID, and how many in all.
   */
  async usersOf(
    tx: Transaction,
    authorityId: string,
    now: Date,
    limit: number,
  ): Promise<{ rows: AuthorityUserRow[]; count: number }> {
    const where =
      'NOT banned AND ((svid_issuers IS NULL AND svid_expires_at > $2) OR ' +
      '(svid_issuers ? $1 AND (svid_issuers ->> $1)::bigint > $3))';
    const params = [authorityId, now, Math.floor(now.getTime() / 1000)];
    const manager = managerOf(tx);
    const rows: { spiffe_id: string; until: string | null }[] = await manager.query(
      `SELECT spiffe_id, svid_issuers ->> $1 AS until FROM agents WHERE ${where} ORDER BY spiffe_id LIMIT ${limit}`,
      params,
    );
    if (rows.length === 0) return { rows: [], count: 0 };
    const counted: { count: string }[] = await manager.query(
      `SELECT count(*) AS count FROM agents WHERE ${where}`,
      params,
    );
    return {
      rows: rows.map((row) => ({
        agentId: row.spiffe_id,
        untilSeconds: row.until === null ? null : Number(row.until),
      })),
      count: Number(counted[0]?.count ?? rows.length),
    };
  }
}
