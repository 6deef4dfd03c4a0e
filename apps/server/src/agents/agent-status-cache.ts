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
 */
export class AgentStatusCache<Status> {
  private readonly entries = new Map<string, CachedStatus<Status>>();
  private readonly reads = new Map<string, { generation: number; promise: Promise<Status | null> }>();
  private generation = 0;

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
    if (cached && this.now() - cached.readAtMs < this.ttlMs && !isStale(cached)) return cached.status;
    return this.read(agentId, load);
  }

  /** Forgets one agent, or every agent when `agentId` is undefined. */
  drop(agentId: string | undefined): void {
    this.generation += 1;
    if (agentId === undefined) this.entries.clear();
    else this.entries.delete(agentId);
  }

  private read(agentId: string, load: () => Promise<Status | null>): Promise<Status | null> {
    const pending = this.reads.get(agentId);
    // A read started before a drop may return what the drop replaced: it is not shared with later callers.
    if (pending && pending.generation === this.generation) return pending.promise;
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
    this.entries.set(agentId, { status, readAtMs: this.now(), refusedSerials: previous?.refusedSerials ?? new Set() });
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }
}

/** One agent's cached status. */
export interface CachedStatus<Status> {
  readonly status: Status | null;
  readonly readAtMs: number;
  /**
   * Serial numbers found not to be the agent's current one by a read made after they were first presented: an
   * outdated SVID presented again is refused from memory (bounded by the caller).
   */
  readonly refusedSerials: Set<string>;
}
