import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { SpiffeId } from '@sigil/spiffe';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError, HTTP_STATUS_BY_KIND } from '../common/errors.js';
import { decodePageToken, encodePageToken } from '../common/page-token.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { Database } from '../database/database.js';
import { databaseUnreachable } from '../database/database-errors.js';
import { EntryChangeNotifier } from '../entries/entry-change-notifier.js';
import { AuditService } from '../audit/audit.service.js';
import { AgentStatusCache } from './agent-status-cache.js';
import { type AttestedAgent, holdsSerial, UNUSED_SVID_REPLACEMENTS } from './agent.js';
import { type AgentFilter, AgentsRepository, type AttestedAgentRecord } from './agents.repository.js';

export const AGENT_PAGE_SIZE = { default: 50, max: 500 } as const;

/** Agents removed per statement when pruning (SPIRE's `prune_attested_nodes_batch_size` default). */
export const PRUNE_BATCH_SIZE = 1000;

/**
 * How long after its last successful status read an agent is still served while the database is unreachable (the
 * outage rule of {@link AgentsService.requireActive}): 5 minutes.
 */
export const AGENT_STATUS_OUTAGE_MAX_AGE_MS = 5 * 60_000;

/** The audit action of a replaced unused renewed SVID, and of a renewal refused over their bound. */
export const UNUSED_SVID_REPLACED_ACTION = 'agent.replace_unused_svid';

export type { AttestedAgent } from './agent.js';

export interface AgentPage {
  agents: AttestedAgent[];
  /** Absent on the last page. */
  nextPageToken?: string;
}

/**
 * The registry of attested agents (SPIRE's attested nodes): listing, eviction and banning for operators, and the
 * records node attestation and SVID renewal write.
 *
 * {@link requireActive}, asked on every agent API request, answers from an in-memory {@link AgentStatusCache}: every
 * change this replica makes drops the agent from its cache at once and is announced to the other replicas (NOTIFY),
 * which drop it when they hear it; on PostgreSQL no status is used longer than `agent_status_cache_ttl` after it was
 * read, the bound when a notification is lost (on the embedded database there is no other replica to hear from).
 *
 * Through a database outage (DESIGN §5.3), an agent whose status can no longer be read is still served if this
 * replica last read it, active with the SVID serial presented, less than {@link AGENT_STATUS_OUTAGE_MAX_AGE_MS} ago
 * and has not heard of a change to it since. Only while the database cannot be reached ({@link databaseUnreachable}),
 * never while it is merely busy. Evicting, banning and renewing are writes, which the outage refuses everywhere; what
 * the rule risks is a change whose notification this replica missed (committed just before the outage, or while only
 * this replica was cut off), served for at most that bound.
 */
@Injectable()
export class AgentsService implements OnModuleDestroy {
  private readonly logger = new Logger(AgentsService.name);
  private readonly statuses: AgentStatusCache<AttestedAgent>;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly repository: AgentsRepository,
    @Inject(CLOCK) private readonly clock: Clock,
    private readonly notifier: EntryChangeNotifier,
    @Inject(SERVER_CONFIG) config: Pick<ServerConfig, 'agentStatusCacheTtlSeconds'>,
    @Inject(Database) database: Pick<Database, 'kind'>,
    private readonly audit: AuditService,
  ) {
    // On the embedded database this process is the only server (the data dir is locked), so every change passes
    // through here and drops its agent at once: a cached status never needs to expire, and a request never waits
    // for the single connection behind a long write to read one again.
    const ttlMs = database.kind === 'embedded' ? Infinity : config.agentStatusCacheTtlSeconds * 1000;
    this.statuses = new AgentStatusCache(ttlMs, () => this.clock.now().getTime());
    this.unsubscribe = notifier.subscribeAgentChanges((agentId) => this.statuses.drop(agentId));
  }

  onModuleDestroy(): void {
    this.unsubscribe();
  }

  async list(filter: AgentFilter, page: { pageSize?: number; pageToken?: string } = {}): Promise<AgentPage> {
    const pageSize = page.pageSize ?? AGENT_PAGE_SIZE.default;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > AGENT_PAGE_SIZE.max) {
      throw new AppError('invalid_argument', `page_size: must be an integer from 1 to ${AGENT_PAGE_SIZE.max}`);
    }
    const after =
      page.pageToken === undefined ? undefined : decodePageToken(page.pageToken, (key) => key.startsWith('spiffe://'));
    const rows = await this.repository.listPage(filter, after, pageSize + 1);
    const agents = rows.slice(0, pageSize);
    const last = agents.at(-1);
    return rows.length > pageSize && last ? { agents, nextPageToken: encodePageToken(last.spiffeId) } : { agents };
  }

  count(filter: AgentFilter = {}): Promise<number> {
    return this.repository.count(filter);
  }

  async get(spiffeId: string): Promise<AttestedAgent> {
    const entity = await this.repository.findBySpiffeId(normalise(spiffeId));
    if (!entity) throw notFound(spiffeId);
    return entity;
  }

  /** Removes the agent: its SVID is no longer honoured and it must attest again (which a ban would refuse). */
  async evict(spiffeId: string): Promise<void> {
    const id = normalise(spiffeId);
    const deleted = await this.repository.delete(id);
    await this.changed(id);
    if (!deleted) throw notFound(spiffeId);
    this.logger.log({ msg: 'agent evicted', agentId: id });
  }

  /** Bans the agent: every call it makes is refused, and it cannot attest again under this ID until evicted. */
  async ban(spiffeId: string): Promise<AttestedAgent> {
    const id = normalise(spiffeId);
    const entity = await this.repository.markBanned(id, this.clock.now());
    await this.changed(id);
    if (!entity) throw notFound(spiffeId);
    this.logger.log({ msg: 'agent banned', agentId: id });
    return entity;
  }

  /**
   * Records a successful node attestation (new agent, or a re-attestation replacing the previous record when its
   * attestor allows one).
   *
   * @throws AppError `permission_denied` when the agent is banned, or already recorded and `canReattest` is false.
   */
  async recordAttestation(record: AttestedAgentRecord, canReattest = true): Promise<AttestedAgent> {
    const id = normalise(record.spiffeId);
    const entity = await this.repository.upsertUnlessBanned({ ...record, spiffeId: id }, this.clock.now(), canReattest);
    await this.changed(id);
    if (!entity && !canReattest && !(await this.repository.findBySpiffeId(id))?.banned) {
      throw new AppError(
        'permission_denied',
        `agent ${id} is already attested, and ${record.attestationType} attestation cannot attest it again`,
      );
    }
    if (!entity) throw new AppError('permission_denied', `agent ${id} is banned`);
    this.logger.log({ msg: 'agent attested', agentId: id, method: record.attestationType });
    return entity;
  }

  /**
   * The agent, if it may call the server with the SVID of this serial number: its current SVID, or its renewed one
   * (see {@link holdsSerial}); the first call with the renewed one promotes it to current, after which the previous
   * SVID is refused.
   *
   * @throws AppError `permission_denied` when the agent was evicted, is banned or presented an outdated SVID.
   */
  async requireActive(spiffeId: string, serialNumber: string): Promise<AttestedAgent> {
    // A serial the cache has not seen may come from a renewal on another replica not heard of yet: read once more.
    let entity: AttestedAgent | null;
    try {
      entity = await this.statuses.get(
        spiffeId,
        () => this.repository.findBySpiffeId(spiffeId),
        (cached) =>
          cached.status !== null &&
          !holdsSerial(cached.status, serialNumber) &&
          !cached.refusedSerials.has(serialNumber),
      );
      if (entity && !entity.banned && entity.newSerialNumber === serialNumber) {
        entity = await this.promote(spiffeId, serialNumber);
      }
    } catch (error) {
      entity = this.servedThroughOutage(spiffeId, serialNumber, error);
    }
    if (!entity) throw new AppError('permission_denied', `agent ${spiffeId} is not attested (evicted or unknown)`);
    if (entity.banned) throw new AppError('permission_denied', `agent ${spiffeId} is banned`);
    if (!holdsSerial(entity, serialNumber)) {
      this.statuses.refuseSerial(spiffeId, serialNumber);
      throw new AppError('permission_denied', `agent ${spiffeId}: SVID serial ${serialNumber} is not the current one`);
    }
    return entity;
  }

  /**
   * Makes the agent's renewed SVID (serial `newSerial`) its current one. When another request or replica did so first,
   * or a ban, eviction, re-attestation or further renewal came first, answers the agent as read again.
   */
  private async promote(spiffeId: string, newSerial: string): Promise<AttestedAgent | null> {
    const promoted = await this.repository.promoteNewSvid(spiffeId, newSerial, this.clock.now());
    await this.changed(spiffeId);
    if (promoted) {
      this.logger.log({ msg: 'agent renewed SVID in use', agentId: spiffeId });
      return promoted;
    }
    return this.statuses.get(spiffeId, () => this.repository.findBySpiffeId(spiffeId));
  }

  /**
   * The outage rule: the agent's last status read less than {@link AGENT_STATUS_OUTAGE_MAX_AGE_MS} ago when `error` says
   * the database is unreachable and that status is active and holds `serialNumber` (current or renewed: the promotion
   * waits for the database); else rethrows `error` (503 when the database is unreachable: the agent keeps its cached
   * SVIDs and retries).
   */
  private servedThroughOutage(spiffeId: string, serialNumber: string, error: unknown): AttestedAgent {
    const known = databaseUnreachable(error) && this.statuses.lastKnown(spiffeId, AGENT_STATUS_OUTAGE_MAX_AGE_MS);
    const status = known ? known.status : null;
    if (status === null || status.banned || !holdsSerial(status, serialNumber)) throw error;
    return status;
  }

  /**
   * Records the agent's renewed SVID as its new one; the caller must present the current one. The current SVID stays
   * valid until the agent first uses the new one. A renewal from the current serial while a new one is still unused
   * replaces that one (the agent lost it, or someone else holding the current SVID and key renewed): each replacement
   * is logged (warn) and audited (`agent.replace_unused_svid`, actor the agent, target the agent and both serials),
   * and more than {@link UNUSED_SVID_REPLACEMENTS}`.max` in its window are refused, logged and audited too.
   *
   * @throws AppError `permission_denied` when the agent was evicted, is banned or its serial is outdated;
   *   `resource_exhausted` (429, `Retry-After` at the window's end) over the replacement bound.
   */
  async recordRenewal(
    spiffeId: string,
    currentSerial: string,
    next: { serialNumber: string; svidExpiresAt: Date },
  ): Promise<AttestedAgent> {
    const now = this.clock.now();
    const outcome = await this.repository.recordNewSvid(spiffeId, currentSerial, next, now, UNUSED_SVID_REPLACEMENTS);
    if (outcome.kind === 'refused') {
      await this.changed(spiffeId);
      throw new AppError('permission_denied', `agent ${spiffeId} may not renew: evicted, banned or outdated SVID`);
    }
    const audited = { actor: spiffeId, action: UNUSED_SVID_REPLACED_ACTION };
    if (outcome.kind === 'capped') {
      const { max, windowMs } = UNUSED_SVID_REPLACEMENTS;
      const error = new AppError(
        'resource_exhausted',
        `agent ${spiffeId} may not renew before ${outcome.windowEndsAt.toISOString()}: it already replaced its ` +
          `unused renewed SVID ${max} times in ${windowMs / 60_000} minutes (serial ${outcome.pendingSerial} is ` +
          'still unused); its current SVID stays valid. If this agent did not renew that often, another holder of ' +
          'its current SVID and key did: ban or evict the agent',
        { retryAfterSeconds: Math.max(1, Math.ceil((outcome.windowEndsAt.getTime() - now.getTime()) / 1000)) },
      );
      this.logger.warn({
        msg: 'agent renewal refused: too many replacements of its unused renewed SVID',
        agentId: spiffeId,
        currentSerial,
        pendingSerial: outcome.pendingSerial,
        replacements: outcome.replacements,
        windowEndsAt: outcome.windowEndsAt.toISOString(),
      });
      await this.audit.record({
        ...audited,
        target: `${spiffeId},pending=${outcome.pendingSerial}`,
        result: error.kind,
        statusCode: HTTP_STATUS_BY_KIND[error.kind],
      });
      throw error;
    }
    await this.changed(spiffeId);
    if (outcome.replacedSerial !== null) {
      this.logger.warn({
        msg: 'agent renewed again before using its renewed SVID: the unused one is replaced',
        agentId: spiffeId,
        currentSerial,
        replacedSerial: outcome.replacedSerial,
        newSerial: next.serialNumber,
      });
      await this.audit.record({
        ...audited,
        target: `${spiffeId},replaced=${outcome.replacedSerial},new=${next.serialNumber}`,
        result: 'ok',
        statusCode: 200,
      });
    }
    return outcome.agent;
  }

  /**
   * After this replica changed (or tried to change) the agent's record: drops it from this replica's cache at once and
   * tells the others. A failed notification leaves them on their cached status until its time to live runs out.
   */
  private async changed(agentId: string): Promise<void> {
    this.statuses.drop(agentId);
    try {
      await this.notifier.notifyAgentChange(agentId);
    } catch (error) {
      this.logger.warn({
        msg: 'could not notify the other replicas of an agent change; they notice within agent_status_cache_ttl',
        agentId,
        err: error,
      });
    }
  }

  /**
   * Removes every agent that can re-attest, is not banned and whose SVID expired more than `expiredForSeconds` ago
   * (SPIRE's `agent purge` and `prune_attested_nodes_expired_for`): such an agent comes back by attesting again,
   * while a banned one keeps its ban and a join-token agent (which cannot re-attest) is never removed this way.
   * With `dryRun`, only names them. Returns the IDs, in batches of {@link PRUNE_BATCH_SIZE} until none is left.
   */
  async pruneExpired(expiredForSeconds: number, dryRun = false): Promise<string[]> {
    if (!Number.isSafeInteger(expiredForSeconds) || expiredForSeconds < 0) {
      throw new AppError(
        'invalid_argument',
        `expired_for: must be a whole number of seconds, got ${expiredForSeconds}`,
      );
    }
    const before = new Date(this.clock.now().getTime() - expiredForSeconds * 1000);
    if (dryRun) return this.repository.deleteExpired(before, Number.MAX_SAFE_INTEGER, true);
    const removed: string[] = [];
    for (;;) {
      const batch = await this.repository.deleteExpired(before, PRUNE_BATCH_SIZE, false);
      for (const id of batch) await this.changed(id);
      removed.push(...batch);
      if (batch.length < PRUNE_BATCH_SIZE) break;
    }
    if (removed.length > 0) this.logger.log({ msg: 'expired agents pruned', count: removed.length });
    return removed.sort();
  }

  /** Notes that the agent called in (for `last_seen_at`). */
  touch(spiffeId: string): Promise<void> {
    return this.repository.touch(spiffeId, this.clock.now());
  }
}

function normalise(spiffeId: string): string {
  try {
    return SpiffeId.parse(spiffeId).toString();
  } catch (error) {
    throw new AppError('invalid_argument', `id: ${(error as Error).message}`);
  }
}

function notFound(spiffeId: string): AppError {
  return new AppError('not_found', `agent ${spiffeId} not found`);
}
