/** Outdated serial numbers remembered per agent (an agent holds only the few SVIDs it renewed from). */
const MAX_REFUSED_SERIALS = 16;

/**
 * What the agent API's guard needs to know of an agent on every request, kept in memory so that a request costs no
 * database query: the agent's record as last read (or that it has none: evicted or never attested).
 *
 * Staleness: an entry is dropped at once when this replica changes the agent (evict, ban, attest, renew) and when
 * another replica's change is heard (PostgreSQL NOTIFY, see EntryChangeNotifier); whatever happens to notifications,
 * no entry is used longer than `ttlMs` after it was read. A read that raced with a drop is answered but not kept
 * (a generation count), so a drop is never undone by an older read.
 *
 * Outage fallback: dropping every agent (the listening connection was lost, so changes may have gone unheard) makes
 * each status stale, not forgotten: it is read again before its next use, and {@link lastKnown} still answers with it
 * for the caller's rule when that read fails. Dropping one agent (a change this replica made or heard of) forgets it.
 */
export class AgentStatusCache<Status> {
  private readonly entries = new Map<string, CachedStatus<Status>>();
  private readonly reads = new Map<string, { generation: number; promise: Promise<Status | null> }>();
  private generation = 0;
  /** Raised by dropping every agent: an entry read in an earlier epoch is stale. */
  private epoch = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
    private readonly maxEntries = 100_000,
  ) {}

  /** The number of agents held (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The agent's status: from memory when fresh, else from `load` (one read per agent at a time, whoever asks).
   * `isStale`, given a fresh cached status, may ask for one more read (e.g. a serial number not seen yet).
   */
  async get(
    agentId: string,
    load: () => Promise<Status | null>,
    isStale: (cached: CachedStatus<Status>) => boolean = () => false,
  ): Promise<Status | null> {
    const cached = this.entries.get(agentId);
    if (cached && cached.epoch === this.epoch && this.now() - cached.readAtMs < this.ttlMs) {
      if (!isStale(cached)) return cached.status;
      // Asked to read once more (a serial not seen yet): a read already in flight may have begun before the change
      // the caller knows of (a renewal committed on another replica), so this one starts its own.
      return this.read(agentId, load, true);
    }
    return this.read(agentId, load);
  }

  /**
   * Forgets one agent; or, when `agentId` is undefined, makes every agent's status stale (read again before its next
   * use, kept only for {@link lastKnown}).
   */
  drop(agentId: string | undefined): void {
    this.generation += 1;
    if (agentId === undefined) this.epoch += 1;
    else this.entries.delete(agentId);
  }

  /**
   * The agent's status as last read, fresh or stale, if that read was less than `maxAgeMs` ago: for a caller that
   * could not read it again (the database is unreachable) and has its own rule for what a stale status may allow.
   * Undefined when the agent was dropped by name since (a change made or heard of) or the read is older.
   */
  lastKnown(agentId: string, maxAgeMs: number): CachedStatus<Status> | undefined {
    const cached = this.entries.get(agentId);
    return cached && this.now() - cached.readAtMs < maxAgeMs ? cached : undefined;
  }

  private read(agentId: string, load: () => Promise<Status | null>, fresh = false): Promise<Status | null> {
    const pending = this.reads.get(agentId);
    // A read started before a drop may return what the drop replaced: it is not shared with later callers.
    if (!fresh && pending && pending.generation === this.generation) return pending.promise;
    const generation = this.generation;
    const promise = load().then((status) => {
      if (this.generation === generation) this.keep(agentId, status);
      return status;
    });
    const entry = { generation, promise };
    this.reads.set(agentId, entry);
    const forget = (): void => {
      if (this.reads.get(agentId) === entry) this.reads.delete(agentId);
    };
    promise.then(forget, forget);
    return promise;
  }

  /** Remembers that `serial` is not the agent's current SVID (found by a read made after it was presented). */
  refuseSerial(agentId: string, serial: string): void {
    const refused = this.entries.get(agentId)?.refusedSerials;
    if (!refused) return;
    if (refused.size >= MAX_REFUSED_SERIALS) refused.clear();
    refused.add(serial);
  }

  private keep(agentId: string, status: Status | null): void {
    const previous = this.entries.get(agentId);
    this.entries.delete(agentId);
    this.entries.set(agentId, {
      status,
      readAtMs: this.now(),
      epoch: this.epoch,
      refusedSerials: previous?.refusedSerials ?? new Set(),
    });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

/** One agent's cached status. */
export interface CachedStatus<Status> {
  readonly status: Status | null;
  readonly readAtMs: number;
  /** The cache's epoch when it was read (stale once every agent was dropped since). */
  readonly epoch: number;
  /**
   * Serial numbers found not to be the agent's current one by a read made after they were first presented: an
   * outdated SVID presented again is refused from memory (bounded by the caller).
   */
  readonly refusedSerials: Set<string>;
}
