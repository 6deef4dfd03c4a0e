import { type SpiffeId, parseInsecureJwtSvid } from '@sigil/spiffe';
import { type JwtSvidResponse } from '../attestation/agent-api.js';
import { type Clock, systemClock } from '@sigil/runtime';
import { jwtReuseDeadline } from './rotation.js';

/** Signs a JWT-SVID of an entry for an audience (the server's `POST /agent/v1/svids/jwt`). */
export type JwtSvidSource = (entryId: string, audience: readonly string[]) => Promise<JwtSvidResponse>;

interface CachedToken {
  readonly entryId: string;
  readonly token: string;
  readonly reuseUntil: Date;
}

/** Most tokens kept; beyond it the oldest go first (a workload asking for endless audiences cannot grow the agent). */
export const DEFAULT_MAX_JWT_SVIDS = 10_000;

/**
 * JWT-SVIDs per (entry, audience set), handed out again until half their lifetime (SPIRE's agent does the same),
 * with concurrent requests for the same key sharing one call to the server. The audience set is order-insensitive
 * and without duplicates.
 */
export class JwtSvidCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(
    private readonly source: JwtSvidSource,
    private readonly clock: Clock = systemClock,
    private readonly maxTokens = DEFAULT_MAX_JWT_SVIDS,
  ) {}

  /** A JWT-SVID of `spiffeId` (entry `entryId`) for every audience in `audience`. */
  async fetch(entryId: string, spiffeId: SpiffeId, audience: readonly string[]): Promise<string> {
    const key = cacheKey(entryId, audience);
    const cached = this.tokens.get(key);
    if (cached !== undefined && this.clock.now().getTime() < cached.reuseUntil.getTime()) return cached.token;
    const pending = this.inFlight.get(key);
    if (pending !== undefined) return pending;
    const request = this.sign(key, entryId, spiffeId, audience).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, request);
    return request;
  }

  /** Drops the tokens of an entry (removed, or now naming another SPIFFE ID). */
  forget(entryId: string): void {
    for (const [key, cached] of this.tokens) if (cached.entryId === entryId) this.tokens.delete(key);
  }

  /** How many tokens are cached. */
  get size(): number {
    return this.tokens.size;
  }

  private async sign(key: string, entryId: string, spiffeId: SpiffeId, audience: readonly string[]): Promise<string> {
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
    this.tokens.delete(key);
    this.tokens.set(key, { entryId, token: response.token, reuseUntil: jwtReuseDeadline(issuedAt, svid.expiry) });
    this.evict();
    return response.token;
  }

  private evict(): void {
    if (this.tokens.size <= this.maxTokens) return;
    const now = this.clock.now().getTime();
    for (const [key, cached] of this.tokens) if (cached.reuseUntil.getTime() <= now) this.tokens.delete(key);
    for (const key of this.tokens.keys()) {
      if (this.tokens.size <= this.maxTokens) break;
      this.tokens.delete(key);
    }
  }
}

function cacheKey(entryId: string, audience: readonly string[]): string {
  return [entryId, ...[...new Set(audience)].sort()].join('\u0000');
}
