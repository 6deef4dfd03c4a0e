import { createHash } from 'node:crypto';
import { type SpiffeId, parseInsecureJwtSvid } from '@sigil/spiffe';
import { type JwtSvidResponse } from '@sigil/agent-api';
import { type Clock, ExpiryDeadline, systemClock } from '@sigil/runtime';
import {
  JWT_SVID_LIMITS,
  JwtSigningLane,
  type JwtSvidCaller,
  type JwtSvidLimitError,
  type JwtSvidLimits,
  jwtMissCost,
} from './jwt-signing-lane.js';
import { jwtReuseDeadline } from './rotation.js';

/** Signs a JWT-SVID of an entry for an audience (the server's `POST /agent/v1/svids/jwt`). */
export type JwtSvidSource = (entryId: string, audience: readonly string[]) => Promise<JwtSvidResponse>;

export interface JwtSvidCacheOptions {
  readonly clock?: Clock;
  /** Overrides of {@link JWT_SVID_LIMITS}. */
  readonly limits?: Partial<JwtSvidLimits>;
  /** Where misses wait for the server; by default one built from the limits. */
  readonly lane?: JwtSigningLane;
}

interface CachedToken {
  readonly key: string;
  /** The audience part of the key. */
  readonly audienceSet: string;
  readonly entryId: string;
  readonly token: string;
  /** The `kid` of the authority key that signed it. */
  readonly kid: string;
  /** Until when it is handed out again (half its lifetime, whatever the wall clock does meanwhile). */
  readonly reuseUntil: ExpiryDeadline;
  /** The uid whose miss had it signed: its share of the cache pays for it. */
  readonly uid: number;
  readonly bytes: number;
}

// What a cached token costs beyond its strings: the record, two map slots, the Date.
const RECORD_OVERHEAD_BYTES = 256;

/**
 * JWT-SVIDs per (entry, audience set), handed out again until half their lifetime (SPIRE's agent does the same),
 * with concurrent requests for the same key sharing one call to the server. The audience set is order-insensitive
 * and without duplicates. The cache is bounded by bytes, least recently used first, and each uid by its own share
 * of it: a uid asking for endless audiences evicts its own tokens, not those of the other workloads. Misses go to
 * the server through the {@link JwtSigningLane}, which limits each uid.
 */
export class JwtSvidCache {
  /** Every token, least recently used first. */
  private readonly tokens = new Map<string, CachedToken>();
  /** The tokens each uid had signed, least recently used first. */
  private readonly byUid = new Map<number, Map<string, CachedToken>>();
  private readonly bytesByUid = new Map<number, number>();
  private totalBytes = 0;
  private readonly inFlight = new Map<string, Promise<string>>();
  /** Per `kid`, the latest expiry of the tokens handed out under it (what the agent reports in its sync). */
  private readonly handedOut = new Map<string, Date>();
  private tainted: ReadonlySet<string> = new Set();
  /** Tokens cached or being signed per audience set, over all entries: a set absent here can only be a miss. */
  private readonly audienceSets = new Map<string, number>();
  private readonly limits: Pick<JwtSvidLimits, 'cacheMaxBytes' | 'cacheMaxBytesPerUid'>;
  private readonly clock: Clock;
  private readonly lane: JwtSigningLane;

  constructor(
    private readonly source: JwtSvidSource,
    options: JwtSvidCacheOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.limits = { ...JWT_SVID_LIMITS, ...options.limits };
    this.lane = options.lane ?? new JwtSigningLane({ ...JWT_SVID_LIMITS, ...options.limits }, this.clock);
  }

  /**
   * A JWT-SVID of `spiffeId` (entry `entryId`) for every audience in `audience`, for `caller`.
   * @throws JwtSvidLimitError when it is not cached and the caller is over its limits.
   */
  async fetch(
    entryId: string,
    spiffeId: SpiffeId,
    audience: readonly string[],
    caller: JwtSvidCaller,
  ): Promise<string> {
    const audienceSet = audienceKey(audience);
    const key = `${entryId}\u0000${audienceSet}`;
    const cached = this.tokens.get(key);
    if (cached !== undefined) {
      if (!cached.reuseUntil.passed(this.clock)) {
        this.touch(cached);
        return cached.token;
      }
      this.remove(cached);
    }
    const pending = this.inFlight.get(key);
    if (pending !== undefined) return pending;
    const request = this.lane
      .run(caller, () => this.sign(key, audienceSet, entryId, spiffeId, audience, caller.uid), jwtMissCost(audience))
      .finally(() => {
        this.inFlight.delete(key);
        this.countAudienceSet(audienceSet, -1);
      });
    this.inFlight.set(key, request);
    this.countAudienceSet(audienceSet, 1);
    return request;
  }

  /**
   * The {@link JwtSvidLimitError} a request of `caller` for `audience` gets when no entry's token for that audience
   * set is cached or being signed (so it can only be a miss, whichever of the caller's entries it is for) and the
   * caller is over its miss limits; undefined otherwise. Charges nothing: the Workload API asks before attesting
   * the caller, so that a flood of misses past the limits costs no attestation.
   */
  missRefusal(audience: readonly string[], caller: JwtSvidCaller): JwtSvidLimitError | undefined {
    const refusal = this.lane.refusal(caller, jwtMissCost(audience));
    if (refusal === undefined || this.audienceSets.has(audienceKey(audience))) return undefined;
    return refusal;
  }

  /**
   * Takes the server's tainted authority IDs: the tokens signed by a tainted key are dropped, so the next request
   * gets one signed by the active key (SPIRE's agent does the same). Returns how many were dropped.
   */
  taint(authorityIds: ReadonlySet<string>): number {
    this.tainted = authorityIds;
    let dropped = 0;
    for (const cached of [...this.tokens.values()]) {
      if (authorityIds.has(cached.kid)) {
        this.remove(cached);
        dropped++;
      }
    }
    return dropped;
  }

  /** Per `kid`, the latest expiry of the JWT-SVIDs handed out that have not expired. */
  issuers(now: Date): Map<string, Date> {
    for (const [kid, until] of this.handedOut) if (until.getTime() <= now.getTime()) this.handedOut.delete(kid);
    return new Map(this.handedOut);
  }

  /** Drops the tokens of an entry (removed, or now naming another SPIFFE ID). */
  forget(entryId: string): void {
    for (const cached of [...this.tokens.values()]) if (cached.entryId === entryId) this.remove(cached);
  }

  /** How many tokens are cached. */
  get size(): number {
    return this.tokens.size;
  }

  /** What the cached tokens cost, in bytes (as counted against the limits). */
  get bytes(): number {
    return this.totalBytes;
  }

  /** What the tokens signed for `uid` cost, in bytes. */
  bytesOf(uid: number): number {
    return this.bytesByUid.get(uid) ?? 0;
  }

  private async sign(
    key: string,
    audienceSet: string,
    entryId: string,
    spiffeId: SpiffeId,
    audience: readonly string[],
    uid: number,
  ): Promise<string> {
    const issuedAt = this.clock.now();
    const response = await this.source(entryId, [...new Set(audience)]);
    if (!response.spiffeId.equals(spiffeId)) {
      throw new Error(`server signed a JWT-SVID for ${response.spiffeId.toString()}, expected ${spiffeId.toString()}`);
    }
    // The token came over the authenticated server connection; check that it says what was asked for.
    const svid = parseInsecureJwtSvid(response.token, [...audience], { now: issuedAt });
    if (!svid.spiffeId.equals(spiffeId))
      throw new Error(`JWT-SVID sub is ${svid.spiffeId.toString()}, expected ${spiffeId.toString()}`);
    const missing = audience.find((each) => !svid.audience.includes(each));
    if (missing !== undefined) throw new Error(`JWT-SVID aud lacks ${JSON.stringify(missing)}`);
    const kid = tokenKid(response.token);
    const until = this.handedOut.get(kid);
    if (until === undefined || until.getTime() < svid.expiry.getTime()) this.handedOut.set(kid, svid.expiry);
    const previous = this.tokens.get(key);
    if (previous !== undefined) this.remove(previous);
    // Signed before a taint of its key reached us: handed out this once, never again.
    if (this.tainted.has(kid)) return response.token;
    this.add({
      key,
      audienceSet,
      entryId,
      token: response.token,
      kid,
      reuseUntil: ExpiryDeadline.start(jwtReuseDeadline(issuedAt, svid.expiry), this.clock),
      uid,
      // Keys may hold any Unicode (two bytes a character at worst); tokens are ASCII.
      bytes: key.length * 2 + response.token.length + RECORD_OVERHEAD_BYTES,
    });
    return response.token;
  }

  private add(token: CachedToken): void {
    // A token larger than the uid's whole share is handed out but not kept.
    if (token.bytes > this.limits.cacheMaxBytesPerUid) return;
    this.tokens.set(token.key, token);
    this.countAudienceSet(token.audienceSet, 1);
    let own = this.byUid.get(token.uid);
    if (own === undefined) this.byUid.set(token.uid, (own = new Map()));
    own.set(token.key, token);
    this.bytesByUid.set(token.uid, this.bytesOf(token.uid) + token.bytes);
    this.totalBytes += token.bytes;
    // First the uid's own share, then the whole cache.
    while (this.bytesOf(token.uid) > this.limits.cacheMaxBytesPerUid) {
      this.remove(own.values().next().value as CachedToken);
    }
    while (this.totalBytes > this.limits.cacheMaxBytes) {
      this.remove(this.tokens.values().next().value as CachedToken);
    }
  }

  private touch(token: CachedToken): void {
    this.tokens.delete(token.key);
    this.tokens.set(token.key, token);
    const own = this.byUid.get(token.uid);
    own?.delete(token.key);
    own?.set(token.key, token);
  }

  private remove(token: CachedToken): void {
    if (this.tokens.get(token.key) !== token) return;
    this.tokens.delete(token.key);
    this.countAudienceSet(token.audienceSet, -1);
    const own = this.byUid.get(token.uid);
    own?.delete(token.key);
    if (own?.size === 0) this.byUid.delete(token.uid);
    const left = this.bytesOf(token.uid) - token.bytes;
    if (left > 0) this.bytesByUid.set(token.uid, left);
    else this.bytesByUid.delete(token.uid);
    this.totalBytes -= token.bytes;
  }

  private countAudienceSet(audienceSet: string, change: 1 | -1): void {
    const count = (this.audienceSets.get(audienceSet) ?? 0) + change;
    if (count > 0) this.audienceSets.set(audienceSet, count);
    else this.audienceSets.delete(audienceSet);
  }
}

/**
 * An audience set as a key: order-insensitive, without duplicates. A SHA-256 of the sorted audiences, each prefixed
 * with its length in UTF-16 units, rather than the audiences themselves: up to 16 of 2 KiB each made a 32 KiB key, built (a Set of
 * them, then a join) for every request, and V8 hashes a string that long by its length alone, so such keys of one
 * length all collided in the maps.
 */
function audienceKey(audience: readonly string[]): string {
  const hash = createHash('sha256');
  let previous: string | undefined;
  for (const each of [...audience].sort()) {
    if (each === previous) continue;
    previous = each;
    // UTF-16 code units, exactly as JavaScript compares strings (UTF-8 would merge lone surrogates into U+FFFD).
    hash.update(`${each.length}:`).update(each, 'utf16le');
  }
  return hash.digest('base64');
}

/** The `kid` of a JWS that parseInsecureJwtSvid accepted (its header is well-formed JSON with a `kid`). */
function tokenKid(token: string): string {
  const header = JSON.parse(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString('utf8')) as {
    kid?: unknown;
  };
  return typeof header.kid === 'string' ? header.kid : '';
}
