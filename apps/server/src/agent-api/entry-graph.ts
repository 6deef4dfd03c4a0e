import { formatSelector } from '@sigil/runtime';
import type { Entry, EntryChanges, EntrySnapshot } from '../entries/entry.js';

/** What an agent is known by when its authorised entries are worked out. */
export interface AgentIdentity {
  /** The agent's SPIFFE ID (`spiffe://<td>/sigil/agent/...`). */
  readonly spiffeId: string;
  /** Node selectors found at attestation, written `type:value`. */
  readonly nodeSelectors: ReadonlySet<string>;
}

/** The entries authorised for one agent since a revision, as the sync route sends them. */
export type AuthorisedDelta =
  | { readonly full: true; readonly revision: number; readonly entries: readonly Entry[] }
  | {
      readonly full: false;
      readonly revision: number;
      /** Authorised now, and new to the agent or changed since the revision. */
      readonly entries: readonly Entry[];
      /** Authorised at the revision, and no longer (deleted, or moved out of the agent's reach). */
      readonly deletedIds: readonly string[];
    };

/** One applied delta of the registry: for every entry it changed, the entry as it was before (absent: created). */
interface AppliedBatch {
  readonly from: number;
  readonly to: number;
  readonly changed: ReadonlyMap<string, { readonly before: Entry | undefined; readonly revisions: readonly number[] }>;
}

/** A read-only view of the registry at some revision: the entry of an id, and the ids of a parent's children. */
interface RegistryView {
  get(id: string): Entry | undefined;
  children(parentId: string): Iterable<string>;
}

/**
 * The registry held in memory, updated from the change log's deltas (never reloaded per request), and the rules of
 * which entries an agent may see (SPIRE's authorised entries): entries parented by the agent's ID, node-alias
 * entries (parented by the server's ID) whose selectors are all among the agent's node selectors, and the
 * descendants of both, transitively through each authorised entry's SPIFFE ID.
 *
 * For deltas it keeps the last applied batches with the prior state of what they changed, so the authorised set at
 * an earlier revision can be rebuilt from the current one in O(changes) and compared.
 */
/** The entry flags that give a SPIFFE ID a power on the server, indexed by SPIFFE ID. */
type EntryFlag = 'admin' | 'downstream';
const ENTRY_FLAGS: readonly EntryFlag[] = ['admin', 'downstream'];

export class EntryGraph {
  private entries = new Map<string, Entry>();
  private readonly byParent = new Map<string, Set<string>>();
  /**
   * Ids of the entries with each SPIFFE ID flag, by SPIFFE ID: `admin` (who may call the admin API with an X509-SVID)
   * and `downstream` (who may obtain a downstream CA).
   */
  private readonly flagged: Readonly<Record<EntryFlag, Map<string, Set<string>>>> = {
    admin: new Map(),
    downstream: new Map(),
  };
  private batches: AppliedBatch[] = [];
  private loggedChanges = 0;
  private currentRevision = 0;
  /** The oldest revision a delta can start from; older ones get a full answer. */
  private floor = 0;

  /**
   * @param serverId SPIFFE ID of the server (`spiffe://<td>/sigil/server`): the parent of node-alias entries.
   * @param maxLoggedChanges How many entry changes the delta log keeps before dropping its oldest batches.
   */
  constructor(
    private readonly serverId: string,
    private readonly maxLoggedChanges = 50_000,
  ) {}

  get revision(): number {
    return this.currentRevision;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Replaces everything with a snapshot, whose map of entries the graph takes over (a million `Map.set` saved at
   * start; the caller does not use the map afterwards); deltas can start from its revision on.
   */
  load(snapshot: EntrySnapshot): void {
    for (const [id, entry] of snapshot.entries) {
      if (id !== entry.id) throw new Error(`entry graph: snapshot holds entry ${entry.id} under ${id}`);
    }
    this.entries = snapshot.entries;
    this.byParent.clear();
    for (const flag of ENTRY_FLAGS) this.flagged[flag].clear();
    for (const entry of this.entries.values()) this.index(entry);
    this.batches = [];
    this.loggedChanges = 0;
    this.currentRevision = snapshot.revision;
    this.floor = snapshot.revision;
  }

  /** Applies the changes read after the current revision (they must start exactly there). */
  apply(changes: Extract<EntryChanges, { resyncRequired: false }>): void {
    if (changes.fromRevision !== this.currentRevision) {
      throw new Error(`entry graph: changes start at ${changes.fromRevision}, the graph is at ${this.currentRevision}`);
    }
    if (changes.events.length === 0) {
      this.currentRevision = changes.toRevision;
      return;
    }
    const changed = new Map<string, { before: Entry | undefined; revisions: number[] }>();
    for (const event of changes.events) {
      let record = changed.get(event.entryId);
      if (!record) {
        record = { before: this.entries.get(event.entryId), revisions: [] };
        changed.set(event.entryId, record);
      }
      record.revisions.push(event.revision);
    }
    for (const id of changes.deletedIds) this.remove(id);
    for (const entry of changes.entries) this.put(entry);
    this.batches.push({ from: changes.fromRevision, to: changes.toRevision, changed });
    this.loggedChanges += changed.size;
    this.currentRevision = changes.toRevision;
    while (this.loggedChanges > this.maxLoggedChanges && this.batches.length > 0) {
      const dropped = this.batches.shift()!;
      this.loggedChanges -= dropped.changed.size;
      this.floor = dropped.to;
    }
  }

  /** The entries authorised for the agent now, by id. */
  authorised(agent: AgentIdentity): Map<string, Entry> {
    const view: RegistryView = { get: (id) => this.entries.get(id), children: (parent) => this.childrenOf(parent) };
    const ids = this.authorisedIds(view, agent);
    const result = new Map<string, Entry>();
    for (const id of ids) result.set(id, this.entries.get(id)!);
    return result;
  }

  /**
   * What changed for the agent after `sinceRevision`: a full answer when it is 0, older than the delta log or ahead
   * of the graph (or when an entry changed on both sides of it inside one applied batch, so its state there is
   * unknown); otherwise the authorised entries that are new or changed, and the ids that were authorised and no
   * longer are.
   */
  deltaSince(
    agent: AgentIdentity,
    sinceRevision: number,
    authorisedNow: ReadonlyMap<string, Entry> = this.authorised(agent),
  ): AuthorisedDelta {
    const full = (): AuthorisedDelta => ({
      full: true,
      revision: this.currentRevision,
      entries: [...authorisedNow.values()],
    });
    if (sinceRevision === 0 || sinceRevision < this.floor || sinceRevision > this.currentRevision) return full();
    const before = this.stateAt(sinceRevision);
    if (before === undefined) return full();
    if (before.size === 0) return { full: false, revision: this.currentRevision, entries: [], deletedIds: [] };

    const childrenBefore = new Map<string, string[]>();
    for (const [id, entry] of before) {
      if (!entry) continue;
      const siblings = childrenBefore.get(entry.parentId);
      if (siblings) siblings.push(id);
      else childrenBefore.set(entry.parentId, [id]);
    }
    const view: RegistryView = {
      get: (id) => (before.has(id) ? before.get(id) : this.entries.get(id)),
      children: (parent) => this.childrenAt(parent, before, childrenBefore),
    };
    const authorisedThen = this.authorisedIds(view, agent);
    const entries = [...authorisedNow.values()].filter(
      (entry) => before.has(entry.id) || !authorisedThen.has(entry.id),
    );
    const deletedIds = [...authorisedThen].filter((id) => !authorisedNow.has(id)).sort();
    return { full: false, revision: this.currentRevision, entries, deletedIds };
  }

  /**
   * The state at `revision` of every entry changed after it (`undefined`: did not exist), rolled back through the
   * log; `undefined` when an entry's state at that revision is unknown.
   */
  private stateAt(revision: number): Map<string, Entry | undefined> | undefined {
    const state = new Map<string, Entry | undefined>();
    for (let i = this.batches.length - 1; i >= 0; i -= 1) {
      const batch = this.batches[i]!;
      if (batch.to <= revision) break;
      for (const [id, record] of batch.changed) {
        // The batch's prior state is the state at `revision` only if the entry did not change in (from, revision].
        if (batch.from < revision && record.revisions.some((changedAt) => changedAt <= revision)) return undefined;
        state.set(id, record.before);
      }
    }
    return state;
  }

  private authorisedIds(view: RegistryView, agent: AgentIdentity): Set<string> {
    const ids = new Set<string>();
    const reached = new Set<string>([agent.spiffeId]);
    const queue: string[] = [agent.spiffeId];
    for (const id of view.children(this.serverId)) {
      const alias = view.get(id)!;
      const matches =
        alias.selectors.length > 0 &&
        alias.selectors.every((selector) => agent.nodeSelectors.has(formatSelector(selector)));
      if (!matches) continue;
      ids.add(id);
      if (!reached.has(alias.spiffeId)) {
        reached.add(alias.spiffeId);
        queue.push(alias.spiffeId);
      }
    }
    while (queue.length > 0) {
      const parent = queue.pop()!;
      for (const id of view.children(parent)) {
        ids.add(id);
        const child = view.get(id)!.spiffeId;
        if (!reached.has(child)) {
          reached.add(child);
          queue.push(child);
        }
      }
    }
    return ids;
  }

  private childrenOf(parentId: string): Iterable<string> {
    return this.byParent.get(parentId) ?? [];
  }

  /** Children of `parentId` at the revision `before` was rolled back to (`childrenBefore`: its ids by parent). */
  private *childrenAt(
    parentId: string,
    before: ReadonlyMap<string, Entry | undefined>,
    childrenBefore: ReadonlyMap<string, readonly string[]>,
  ): Iterable<string> {
    for (const id of this.childrenOf(parentId)) if (!before.has(id)) yield id;
    yield* childrenBefore.get(parentId) ?? [];
  }

  private put(entry: Entry): void {
    this.remove(entry.id);
    this.insert(entry);
  }

  /** Adds an entry whose id is not in the graph. */
  private insert(entry: Entry): void {
    this.entries.set(entry.id, entry);
    this.index(entry);
  }

  /** Adds an entry of the map to the indexes by parent and by flag. */
  private index(entry: Entry): void {
    let children = this.byParent.get(entry.parentId);
    if (!children) {
      children = new Set();
      this.byParent.set(entry.parentId, children);
    }
    children.add(entry.id);
    for (const flag of ENTRY_FLAGS) {
      if (!entry[flag]) continue;
      const ids = this.flagged[flag].get(entry.spiffeId) ?? new Set<string>();
      ids.add(entry.id);
      this.flagged[flag].set(entry.spiffeId, ids);
    }
  }

  /**
   * True when an entry gives `spiffeId` `admin: true` and has not expired at `now` (SPIRE's admin entries): the SPIFFE
   * IDs whose X509-SVIDs the admin API accepts.
   */
  isAdmin(spiffeId: string, now: Date): boolean {
    return this.hasFlaggedEntry('admin', spiffeId, now);
  }

  /**
   * True when an entry gives `spiffeId` `downstream: true` and has not expired at `now` (SPIRE's downstream entries):
   * the SPIFFE IDs whose X509-SVIDs may obtain a downstream CA.
   */
  isDownstream(spiffeId: string, now: Date): boolean {
    return this.hasFlaggedEntry('downstream', spiffeId, now);
  }

  private hasFlaggedEntry(flag: EntryFlag, spiffeId: string, now: Date): boolean {
    for (const id of this.flagged[flag].get(spiffeId) ?? []) {
      const expiresAt = this.entries.get(id)?.expiresAt;
      if (expiresAt === null || (expiresAt !== undefined && expiresAt.getTime() > now.getTime())) return true;
    }
    return false;
  }

  private remove(id: string): void {
    const existing = this.entries.get(id);
    if (!existing) return;
    this.entries.delete(id);
    const children = this.byParent.get(existing.parentId);
    children?.delete(id);
    if (children?.size === 0) this.byParent.delete(existing.parentId);
    for (const flag of ENTRY_FLAGS) {
      const ids = this.flagged[flag].get(existing.spiffeId);
      ids?.delete(id);
      if (ids?.size === 0) this.flagged[flag].delete(existing.spiffeId);
    }
  }
}
