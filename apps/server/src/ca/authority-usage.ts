import { Injectable, Logger } from '@nestjs/common';
import { type SvidIssuers } from '@sigil/agent-api';
import type { Transaction } from '../database/transaction.js';
import { AuthorityUsageRepository } from './authority-usage.repository.js';

/** One agent that may still hold an SVID issued by an authority. */
export interface AuthorityUser {
  readonly agentId: string;
  /** The latest expiry it reported under the authority; null: it has not reported (its SVID is still valid). */
  readonly until: Date | null;
}

/**
 * How long this replica trusts that the database still holds the report it stored for an agent; after that an
 * unchanged report is written again (a no-op update when nothing changed). An agent's row can change behind this
 * replica's back (another replica stored a later report, or the agent was evicted and attested again).
 */
const STORED_REPORT_TRUST_MS = 60_000;

/** How many users {@link AuthorityUsage.usersOf} names at most. */
const MAX_USERS_NAMED = 5;

/**
 * Which authority keys still issued something in use, as the agents report it (`svid_issuers` on every sync): each
 * agent's last report lives in PostgreSQL (`agents.svid_issuers`), so every replica answers the same. A report
 * names, per authority, the latest expiry of the SVIDs the agent holds under it (its own X509-SVID, its workloads'
 * X509-SVIDs, the JWT-SVIDs it handed out and that have not expired); it stands until that expiry, even for an agent
 * that stops syncing. An agent that never reported (it attested but has not synced since) counts as using every
 * authority until its own SVID expires.
 */
@Injectable()
export class AuthorityUsage {
  private readonly logger = new Logger(AuthorityUsage.name);
  /** The report this replica last stored for each agent, so an unchanged report costs no write. */
  private readonly stored = new Map<string, { readonly json: string; readonly at: number }>();

  constructor(private readonly repository: AuthorityUsageRepository) {}

  /**
   * Stores an agent's report when it changed. Best effort: a database outage must not stop the sync (servers keep
   * serving agents from memory), so a failure is logged and the next sync tries again.
   */
  async report(agentId: string, issuers: SvidIssuers): Promise<void> {
    const json = JSON.stringify(
      Object.fromEntries([...issuers].sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, until]) => [id, unix(until)])),
    );
    const stored = this.stored.get(agentId);
    if (stored?.json === json && Date.now() - stored.at < STORED_REPORT_TRUST_MS) return;
    try {
      await this.repository.store(agentId, json);
      this.stored.delete(agentId);
      this.stored.set(agentId, { json, at: Date.now() });
      this.forgetStale();
    } catch (error) {
      this.logger.warn({ msg: 'could not store the authorities of an agent SVIDs', agentId, err: error });
    }
  }

  /** Drops memos older than their trust (the map is in insertion order, oldest first), so it stays bounded. */
  private forgetStale(): void {
    const before = Date.now() - STORED_REPORT_TRUST_MS;
    for (const [agentId, { at }] of this.stored) {
      if (at >= before) return;
      this.stored.delete(agentId);
    }
  }

  /**
   * Agents (not banned) that may hold an SVID issued by `authorityId` at `now`: at most five named, and how many in
   * all. Read in the caller's transaction.
   */
  async usersOf(
    tx: Transaction,
    authorityId: string,
    now: Date,
  ): Promise<{ users: readonly AuthorityUser[]; count: number }> {
    const { rows, count } = await this.repository.usersOf(tx, authorityId, now, MAX_USERS_NAMED);
    return {
      users: rows.map(({ agentId, untilSeconds }) => ({
        agentId,
        until: untilSeconds === null ? null : new Date(untilSeconds * 1000),
      })),
      count,
    };
  }
}

function unix(date: Date): number {
  return Math.ceil(date.getTime() / 1000);
}
