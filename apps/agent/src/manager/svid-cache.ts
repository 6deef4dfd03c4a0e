import { type ContextLogger } from '@sigil/logging';
import { type TrustBundle } from '@sigil/spiffe';
import { type AgentEntry, type SyncResponse } from '@sigil/agent-api';
import {
  type Clock,
  ExpiryDeadline,
  type Selector,
  SelectorMatcher,
  requiredSelectorKeys,
  selectorSetKey,
  systemClock,
} from '@sigil/runtime';
import { type IdentityCache } from '../endpoints/workload-api/workload-api.handler.js';
import { type AgentBundles, type WorkloadIdentity } from '../endpoints/workload-api/workload-responses.js';
import { isUnixSha256Selector } from '../attestor/workload/unix/executable-digest.js';
import { type JwtSvidCaller, type JwtSvidLimitError } from './jwt-signing-lane.js';
import { type JwtSvidCache } from './jwt-svid-cache.js';
import { addIssuer, taintedRotationTime } from './svid-issuers.js';

/** What a taint made the cache do. */
export interface TaintOutcome {
  /** Workload X509-SVIDs whose rotation was brought forward. */
  readonly x509Svids: number;
  /** Cached JWT-SVIDs dropped. */
  readonly jwtSvids: number;
}

/** An X509-SVID the agent holds for an entry, with its private key (generated here, never sent). */
export interface SignedSvid {
  /** DER certificates, leaf first. */
  readonly chain: readonly Uint8Array[];
  /** PKCS#8 DER. */
  readonly privateKey: Uint8Array;
  /** What it was signed for ({@link svidFingerprint} of the entry then). */
  readonly signedFor: string;
  readonly spiffeId: string;
  readonly notAfter: Date;
  readonly rotateAt: Date;
  /** Authority IDs that issued its chain ({@link chainIssuerIds}). */
  readonly issuers: readonly string[];
}

interface CacheRecord {
  /** Set only with its {@link selectorKeys} ({@link withEntry}). */
  entry: AgentEntry;
  /** `entry`'s selectors as {@link SelectorMatcher} matches them. */
  selectorKeys: readonly string[];
  svid: SignedSvid | undefined;
  /** When `svid` expires, by the wall and the monotonic clock. */
  expiry: ExpiryDeadline | undefined;
  /** The server refused to sign this fingerprint of the entry; try again at `retryAt`. */
  refused: { readonly signedFor: string; readonly retryAt: Date } | undefined;
  /** Memo of the workload identity: undefined = stale, null = not served (signing refused). */
  identity: WorkloadIdentity | null | undefined;
  /** Lazy signing: a caller asked for this entry's SVID, so it is signed (cleared when the SVID is evicted). */
  wanted: boolean;
  /** Lazy signing: when a caller last had this entry (a tick of {@link SvidCache}'s use counter), for the LRU. */
  lastUsed: number;
  /**
   * Lazy signing: the groups of live callers that have this entry (kept up to date, so that "pinned" costs nothing to
   * ask, and a record leaves only the groups that hold it).
   */
  readonly pins: Set<WatchGroup>;
}

/** A record's entry with the selector keys it is matched by: the two are only ever set together. */
function withEntry(entry: AgentEntry): Pick<CacheRecord, 'entry' | 'selectorKeys'> {
  return { entry, selectorKeys: requiredSelectorKeys(entry.selectors) };
}

/**
 * Lazy signing: the live callers with one set of selectors (many streams of one program are one group), and the
 * records those selectors match. An entry's arrival or change is matched once per group, not once per stream.
 */
interface WatchGroup {
  readonly key: string;
  readonly matcher: SelectorMatcher;
  callers: number;
  readonly records: Set<CacheRecord>;
}

/** How the cache signs: every entry at once (default), or lazily with an LRU cap (`--svid-cache-max-size`). */
export interface SvidCacheOptions {
  /**
   * Lazy signing with at most this many X509-SVIDs held (SPIRE's `x509_svid_cache_max_size`, a soft limit): only
   * entries a caller has asked for are signed; the SVIDs of entries no live caller holds are dropped, least recently
   * used first, when there are more; those of live callers are never dropped, even past the cap. Undefined: every
   * entry is signed as it arrives.
   */
  readonly svidCacheMaxSize?: number;
}

/** The fields of an entry that go into its X509-SVID: a change of any of them needs a new SVID. */
export function svidFingerprint(entry: AgentEntry): string {
  return JSON.stringify([entry.spiffeId.toString(), [...entry.dnsNames], entry.x509SvidTtl]);
}

/** Every field of an entry, comparable: a sync that resends an unchanged entry changes nothing. */
function entryState(entry: AgentEntry): string {
  return JSON.stringify({
    ...entry,
    spiffeId: entry.spiffeId.toString(),
    federatesWith: entry.federatesWith.map((td) => td.name),
  });
}

function sameBundle(a: TrustBundle | undefined, b: TrustBundle): boolean {
  return a !== undefined && JSON.stringify(a.toJwks()) === JSON.stringify(b.toJwks());
}

/** Longest the expiry timer waits before looking again (the wall clock may have jumped forward meanwhile). */
const EXPIRY_CHECK_MAX_MS = 5_000;

function byAge(a: CacheRecord, b: CacheRecord): number {
  const diff = a.entry.createdAt.getTime() - b.entry.createdAt.getTime();
  return diff !== 0 ? diff : a.entry.id < b.entry.id ? -1 : a.entry.id > b.entry.id ? 1 : 0;
}

/**
 * The agent's cache of authorised entries, their X509-SVIDs and the trust bundles (SPIRE `pkg/agent/manager/cache`),
 * and the {@link IdentityCache} the Workload API reads. Every change (entry added, changed or removed, SVID rotated,
 * bundle changed) is reported to subscribers synchronously, so open streams answer at once. It keeps serving what
 * it holds while the server is unreachable; it is the sync loop and the rotator that keep it fresh.
 */
export class SvidCache implements IdentityCache {
  private readonly records = new Map<string, CacheRecord>();
  private sorted: CacheRecord[] | undefined;
  /** Memo of {@link usesUnixSha256}, cleared with `sorted` whenever the entries change. */
  private sha256InUse: boolean | undefined;
  private own: TrustBundle | undefined;
  private federated: readonly TrustBundle[] = [];
  private tainted: ReadonlySet<string> = new Set();
  private ready = false;
  private readonly listeners = new Set<() => void>();
  /** Why the last signing pass failed (undefined after one succeeded): the reason an SVID may expire. */
  private signingProblem: string | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private expiryTimerAt = Infinity;
  /** Entries whose SVID was seen expired (logged once each, counted by the metrics). */
  private readonly expiredIds = new Set<string>();
  /** Lazy signing: the selectors of each live caller (open FetchX509SVID and SDS streams). */
  private readonly watchers = new Map<string, WatchGroup>();
  private useCounter = 0;
  private signingWanted: (() => void) | undefined;

  constructor(
    private readonly jwtSvids: JwtSvidCache,
    private readonly clock: Clock = systemClock,
    private readonly logger?: Pick<ContextLogger, 'warn'> & Partial<Pick<ContextLogger, 'log'>>,
    private readonly random: () => number = Math.random,
    /** Told what each new taint made the cache do (metrics). */
    private readonly onTaint?: (outcome: TaintOutcome) => void,
    private readonly options: SvidCacheOptions = {},
  ) {
    const max = options.svidCacheMaxSize;
    if (max !== undefined && (!Number.isInteger(max) || max < 1)) {
      throw new Error(`svidCacheMaxSize: must be a positive integer, got ${max}`);
    }
  }

  /** Whether SVIDs are signed only for the entries callers ask for (`--svid-cache-max-size`). */
  get lazy(): boolean {
    return this.options.svidCacheMaxSize !== undefined;
  }

  /** Lazy signing: told when a caller asked for SVIDs the cache does not hold yet (the rotator signs them). */
  onSigningWanted(listener: () => void): void {
    this.signingWanted = listener;
  }

  /**
   * A caller with `selectors` wants its X509-SVIDs from now until the returned function is called (an open stream),
   * or just now (call it at once: a one-off request). With lazy signing its entries are signed, and their SVIDs kept
   * while it is live; afterwards they are the first to stay when the cap drops others (least recently used). Without
   * lazy signing it changes nothing.
   */
  watch(selectors: readonly Selector[]): () => void {
    if (!this.lazy) return () => undefined;
    const key = selectorSetKey(selectors);
    let group = this.watchers.get(key);
    if (group === undefined) {
      const created: WatchGroup = { key, matcher: new SelectorMatcher(selectors), callers: 0, records: new Set() };
      this.watchers.set(key, created);
      for (const record of this.records.values()) this.pin(created, record);
      group = created;
    }
    group.callers++;
    let missing = false;
    const tick = ++this.useCounter;
    for (const record of group.records) {
      record.wanted = true;
      record.lastUsed = tick;
      if (record.svid === undefined) missing = true;
    }
    if (missing) this.signingWanted?.();
    const held = group;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const last = ++this.useCounter;
      for (const record of held.records) record.lastUsed = last;
      if (--held.callers === 0) {
        this.watchers.delete(held.key);
        for (const record of held.records) record.pins.delete(held);
        held.records.clear();
      }
      this.evict();
    };
  }

  /** Counts `record` as held by `group` when the group's selectors match it. */
  private pin(group: WatchGroup, record: CacheRecord): void {
    if (!group.matcher.matchesAll(record.selectorKeys)) return;
    group.records.add(record);
    record.pins.add(group);
  }

  /**
   * Lazy signing: matches a new or changed record against the groups of live callers (once per arrival or change of
   * an entry and per distinct selector set, not on every signing pass or eviction).
   */
  private repin(record: CacheRecord): void {
    this.unpin(record);
    for (const group of this.watchers.values()) this.pin(group, record);
  }

  /** Takes a record out of the groups that hold it (only those). */
  private unpin(record: CacheRecord): void {
    for (const group of record.pins) group.records.delete(record);
    record.pins.clear();
  }

  /** Whether a live caller has this entry (its SVID is kept past the cap, and signed when it arrives). */
  private pinned(record: CacheRecord): boolean {
    return record.pins.size > 0;
  }

  /**
   * Lazy signing: while more SVIDs are held than the cap, drops those of the entries no live caller has, least
   * recently used first (they are signed again when asked for).
   */
  private evict(): void {
    const max = this.options.svidCacheMaxSize;
    if (max === undefined) return;
    let held = this.svidCount;
    if (held <= max) return;
    const candidates = [...this.records.values()]
      .filter((record) => record.svid !== undefined && !this.pinned(record))
      .sort((a, b) => a.lastUsed - b.lastUsed);
    let dropped = 0;
    for (const record of candidates) {
      if (held <= max) break;
      record.svid = undefined;
      record.expiry = undefined;
      record.identity = undefined;
      record.wanted = false;
      this.expiredIds.delete(record.entry.id);
      held--;
      dropped++;
    }
    if (dropped > 0) this.notify();
  }

  // ---- IdentityCache (read by the Workload API) ----

  bundles(): AgentBundles | undefined {
    if (!this.ready || this.own === undefined) return undefined;
    return { own: this.own, federated: this.federated };
  }

  identitiesFor(selectors: readonly Selector[]): readonly WorkloadIdentity[] {
    const now = this.clock.now().getTime();
    this.sorted ??= [...this.records.values()].sort(byAge);
    const identities: WorkloadIdentity[] = [];
    const matcher = new SelectorMatcher(selectors);
    for (const record of this.sorted) {
      if (record.entry.expiresAt !== null && record.entry.expiresAt.getTime() <= now) continue;
      if (!matcher.matchesAll(record.selectorKeys)) continue;
      const identity = this.identityOf(record);
      if (identity !== null) identities.push(identity);
    }
    return identities;
  }

  async fetchJwtSvid(identity: WorkloadIdentity, audience: readonly string[], caller: JwtSvidCaller): Promise<string> {
    const record = this.records.get(identity.entryId);
    if (record === undefined || !record.entry.spiffeId.equals(identity.spiffeId)) {
      throw new Error(`entry ${identity.entryId} is no longer authorised for ${identity.spiffeId.toString()}`);
    }
    return this.jwtSvids.fetch(identity.entryId, identity.spiffeId, audience, caller);
  }

  jwtSvidMissRefusal(audience: readonly string[], caller: JwtSvidCaller): JwtSvidLimitError | undefined {
    return this.jwtSvids.missRefusal(audience, caller);
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---- updates (from the sync loop, the rotator and the agent manager) ----

  /** Sets the bundle of our trust domain; true when it changed. */
  setOwnBundle(bundle: TrustBundle): boolean {
    if (sameBundle(this.own, bundle)) return false;
    this.own = bundle;
    this.notify();
    return true;
  }

  /** The `spiffe_sequence` of the bundle held, for the next sync. */
  ownBundleSequence(): number | undefined {
    return this.own?.sequenceNumber;
  }

  /**
   * Applies one sync answer: a full set replaces the entries, a delta upserts and deletes; the bundles are taken as
   * sent. Returns whether anything changed, and whether our own bundle did (the caller persists it). The cache is ready to serve from the
   * first sync on.
   */
  applySync(sync: SyncResponse): { changed: boolean; ownBundleChanged: boolean } {
    let changed = !this.ready;
    this.ready = true;
    if (sync.full) {
      const keep = new Set(sync.entries.map((entry) => entry.id));
      for (const id of [...this.records.keys()]) if (!keep.has(id)) changed = this.remove(id) || changed;
    }
    for (const entry of sync.entries) changed = this.upsert(entry) || changed;
    for (const id of sync.deletedIds) changed = this.remove(id) || changed;
    const ownBundleChanged = !sameBundle(this.own, sync.bundle);
    if (ownBundleChanged) this.own = sync.bundle;
    const federatedChanged =
      sync.federatedBundles.length !== this.federated.length ||
      sync.federatedBundles.some((bundle, i) => !sameBundle(this.federated[i], bundle));
    if (federatedChanged) this.federated = [...sync.federatedBundles];
    this.applyTaint(sync.taintedAuthorities ?? new Set());
    const anything = changed || ownBundleChanged || federatedChanged;
    if (anything) this.notify();
    return { changed: anything, ownBundleChanged };
  }

  /** The authority IDs of our tainted keys, as the last sync sent them. */
  taintedAuthorities(): ReadonlySet<string> {
    return this.tainted;
  }

  /**
   * The authorities that issued the SVIDs held (workload X509-SVIDs, JWT-SVIDs handed out) with the latest expiry
   * under each, for the sync's report.
   */
  svidIssuers(now: Date): Map<string, Date> {
    const issuers = this.jwtSvids.issuers(now);
    for (const record of this.records.values()) {
      const svid = record.svid;
      if (svid === undefined || svid.notAfter.getTime() <= now.getTime()) continue;
      for (const id of svid.issuers) addIssuer(issuers, id, svid.notAfter);
    }
    return issuers;
  }

  /**
   * A new tainted set: every X509-SVID a tainted key issued is re-signed within the taint window (jittered), and the
   * JWT-SVIDs it signed are dropped. An unchanged set does nothing, so a sync that repeats it costs nothing.
   */
  private applyTaint(tainted: ReadonlySet<string>): void {
    if (tainted.size === this.tainted.size && [...tainted].every((id) => this.tainted.has(id))) return;
    this.tainted = tainted;
    if (tainted.size === 0) return;
    const now = this.clock.now();
    let x509Svids = 0;
    for (const record of this.records.values()) {
      const svid = record.svid;
      if (svid === undefined || !svid.issuers.some((id) => tainted.has(id))) continue;
      const rotateAt = taintedRotationTime(svid.rotateAt, now, this.random);
      if (rotateAt.getTime() < svid.rotateAt.getTime()) {
        record.svid = { ...svid, rotateAt };
        x509Svids++;
      }
    }
    const jwtSvids = this.jwtSvids.taint(tainted);
    this.logger?.log?.({
      msg: 'authority tainted: re-signing the SVIDs it issued',
      tainted: [...tainted],
      x509Svids,
      jwtSvids,
    });
    this.onTaint?.({ x509Svids, jwtSvids });
  }

  /** Entries that need an X509-SVID signed now: none yet, one for an older version of the entry, or one due. */
  entriesToSign(now: Date): AgentEntry[] {
    const due: AgentEntry[] = [];
    for (const record of this.records.values()) {
      // Lazy signing: an entry nobody asked for is not signed (one already held is kept fresh while cached).
      if (this.lazy && record.svid === undefined && !record.wanted) {
        if (!this.pinned(record)) continue;
        record.wanted = true;
      }
      const fingerprint = svidFingerprint(record.entry);
      const refused = record.refused;
      if (refused !== undefined && refused.signedFor === fingerprint && refused.retryAt > now) continue;
      const svid = record.svid;
      // Expired by the monotonic clock too: after the wall clock went back, rotateAt may lie an hour ahead.
      if (
        svid === undefined ||
        svid.signedFor !== fingerprint ||
        svid.rotateAt <= now ||
        record.expiry?.passed(this.clock) === true
      ) {
        due.push(record.entry);
      }
    }
    return due;
  }

  /** The earliest instant something must be signed again (a rotation, or a retry after a refusal). */
  nextSigningTime(): Date | undefined {
    let next: number | undefined;
    for (const record of this.records.values()) {
      const fingerprint = svidFingerprint(record.entry);
      const candidates = [
        record.svid?.signedFor === fingerprint ? record.svid.rotateAt.getTime() : undefined,
        record.refused?.signedFor === fingerprint ? record.refused.retryAt.getTime() : undefined,
      ];
      for (const at of candidates) if (at !== undefined && (next === undefined || at < next)) next = at;
    }
    return next === undefined ? undefined : new Date(next);
  }

  /**
   * Stores an SVID signed for `entry` as it was when the CSR was made; ignored (false) when the entry was removed
   * or changed its SPIFFE ID meanwhile.
   */
  storeSvid(entry: AgentEntry, svid: SignedSvid): boolean {
    return this.storeSvids([{ entry, svid }]) === 1;
  }

  /**
   * {@link storeSvid} for a batch, telling the subscribers once (not once per SVID: each open stream recomputes its
   * whole set when told, so a thousand SVIDs stored one by one cost a million record visits). Returns how many were
   * stored.
   */
  storeSvids(batch: ReadonlyArray<{ readonly entry: AgentEntry; readonly svid: SignedSvid }>): number {
    let stored = 0;
    for (const { entry, svid } of batch) {
      const record = this.records.get(entry.id);
      if (record === undefined || !record.entry.spiffeId.equals(entry.spiffeId)) continue;
      record.svid = svid;
      record.expiry = ExpiryDeadline.start(svid.notAfter, this.clock);
      record.refused = undefined;
      record.identity = undefined;
      this.expiredIds.delete(entry.id);
      this.armExpiry(record.expiry);
      stored++;
    }
    if (stored > 0) this.notify();
    this.evict();
    return stored;
  }

  /**
   * The rotator's report after each signing pass: why it failed, or undefined when it succeeded. Said with every SVID
   * that expires before it could be renewed (log, `UNAVAILABLE` message).
   */
  signingFailed(reason: string | undefined): void {
    this.signingProblem = reason;
  }

  /** Entries whose X509-SVID has expired with no valid replacement yet (metrics). */
  expiredSvidCount(): number {
    this.checkExpiries();
    return this.expiredIds.size;
  }

  /** Stops the expiry timer (shutdown). */
  close(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimerAt = Infinity;
  }

  /**
   * One timer for the earliest SVID expiry (rechecked at least every {@link EXPIRY_CHECK_MAX_MS}, since the wall
   * clock may jump forward): when it fires, open streams are told, so that they stop serving the expired SVIDs.
   */
  private armExpiry(expiry: ExpiryDeadline): void {
    const delay = Math.min(Math.max(0, expiry.remainingMs(this.clock)), EXPIRY_CHECK_MAX_MS);
    const at = performance.now() + delay;
    if (at >= this.expiryTimerAt) return;
    clearTimeout(this.expiryTimer);
    this.expiryTimerAt = at;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimerAt = Infinity;
      this.checkExpiries();
      let next: ExpiryDeadline | undefined;
      for (const record of this.records.values()) {
        // One that expired since checkExpiries looked (a timer may fire a little early) is looked at again at once.
        if (record.expiry === undefined || this.expiredIds.has(record.entry.id)) continue;
        if (next === undefined || record.expiry.remainingMs(this.clock) < next.remainingMs(this.clock)) {
          next = record.expiry;
        }
      }
      if (next !== undefined) this.armExpiry(next);
    }, delay);
    this.expiryTimer.unref();
  }

  /**
   * Records and logs, once, the SVIDs found expired, and tells the subscribers (whoever looks first, the timer or a
   * metrics scrape, open streams hear of it).
   */
  private checkExpiries(): void {
    const newly: CacheRecord[] = [];
    for (const record of this.records.values()) {
      if (record.svid === undefined || record.expiry === undefined || !record.expiry.passed(this.clock)) {
        this.expiredIds.delete(record.entry.id);
      } else if (!this.expiredIds.has(record.entry.id)) {
        this.expiredIds.add(record.entry.id);
        newly.push(record);
      }
    }
    for (const id of this.expiredIds) if (!this.records.has(id)) this.expiredIds.delete(id);
    if (newly.length === 0) return;
    this.logger?.warn({
      msg: 'X509-SVIDs expired before the agent could renew them: no longer served',
      svids: newly.length,
      spiffeIds: newly.slice(0, 10).map((record) => record.entry.spiffeId.toString()),
      expiredAt: (newly[0] as CacheRecord).svid?.notAfter.toISOString(),
      reason: this.signingProblem ?? 'not renewed yet (see the SvidRotator log)',
    });
    this.notify();
  }

  /** Records that the server refused to sign `entry` (this version of it); it is not served until signed. */
  refuse(entry: AgentEntry, message: string, retryAt: Date): void {
    const record = this.records.get(entry.id);
    if (record === undefined) return;
    this.logger?.warn({
      msg: 'server refused to sign an X509-SVID',
      entryId: entry.id,
      spiffeId: entry.spiffeId.toString(),
      reason: message,
    });
    record.refused = { signedFor: svidFingerprint(entry), retryAt };
    if (record.svid?.spiffeId !== entry.spiffeId.toString()) {
      record.svid = undefined;
      record.expiry = undefined;
    }
    record.identity = undefined;
    // Streams waiting for this SVID must now answer without it (or PERMISSION_DENIED).
    this.notify();
  }

  /** Whether any entry held has a `unix:sha256` selector: only then must the unix attestor hash executables. */
  usesUnixSha256(): boolean {
    this.sha256InUse ??= [...this.records.values()].some((record) => record.entry.selectors.some(isUnixSha256Selector));
    return this.sha256InUse;
  }

  /** How many entries are cached. */
  get size(): number {
    return this.records.size;
  }

  /** How many entries hold an X509-SVID (metrics). */
  get svidCount(): number {
    let count = 0;
    for (const record of this.records.values()) if (record.svid !== undefined) count++;
    return count;
  }

  /** JWT-SVIDs cached, and their bytes (metrics). */
  jwtSvidCacheSize(): { tokens: number; bytes: number } {
    return { tokens: this.jwtSvids.size, bytes: this.jwtSvids.bytes };
  }

  /** The cached entry with this id. */
  entry(id: string): AgentEntry | undefined {
    return this.records.get(id)?.entry;
  }

  private upsert(entry: AgentEntry): boolean {
    const record = this.records.get(entry.id);
    if (record === undefined) {
      const created: CacheRecord = {
        ...withEntry(entry),
        svid: undefined,
        expiry: undefined,
        refused: undefined,
        identity: undefined,
        wanted: false,
        lastUsed: 0,
        pins: new Set(),
      };
      this.records.set(entry.id, created);
      if (this.lazy) this.repin(created);
      this.sorted = undefined;
      this.sha256InUse = undefined;
      return true;
    }
    if (entryState(record.entry) === entryState(entry)) return false;
    if (!record.entry.spiffeId.equals(entry.spiffeId)) {
      // The old SVID names another identity: never serve it for the new one.
      record.svid = undefined;
      record.expiry = undefined;
      this.jwtSvids.forget(entry.id);
    }
    Object.assign(record, withEntry(entry));
    record.refused = undefined;
    record.identity = undefined;
    // Its selectors may have changed: the callers that have it are counted again.
    if (this.lazy) this.repin(record);
    this.sorted = undefined;
    this.sha256InUse = undefined;
    return true;
  }

  private remove(id: string): boolean {
    const record = this.records.get(id);
    if (record === undefined) return false;
    this.records.delete(id);
    this.unpin(record);
    this.jwtSvids.forget(id);
    this.sorted = undefined;
    this.sha256InUse = undefined;
    return true;
  }

  private identityOf(record: CacheRecord): WorkloadIdentity | null {
    const { entry, svid } = record;
    // Checked on every read, not memoised: the clock moves, and an expired SVID is never served.
    if (
      svid !== undefined &&
      record.expiry?.passed(this.clock) === true &&
      svid.spiffeId === entry.spiffeId.toString()
    ) {
      return {
        entryId: entry.id,
        spiffeId: entry.spiffeId,
        hint: entry.hint,
        federatesWith: entry.federatesWith,
        x509Svid: undefined,
        expired: { notAfter: svid.notAfter, reason: this.signingProblem },
      };
    }
    if (record.identity !== undefined) return record.identity;
    const usable = svid !== undefined && svid.spiffeId === entry.spiffeId.toString();
    const refused = record.refused?.signedFor === svidFingerprint(entry);
    record.identity =
      !usable && refused
        ? null
        : {
            entryId: entry.id,
            spiffeId: entry.spiffeId,
            hint: entry.hint,
            federatesWith: entry.federatesWith,
            x509Svid: usable ? { chain: svid.chain, privateKey: svid.privateKey } : undefined,
          };
    return record.identity;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) {
      try {
        listener();
      } catch (error) {
        this.logger?.warn({ msg: 'cache listener failed', err: error });
      }
    }
  }
}
