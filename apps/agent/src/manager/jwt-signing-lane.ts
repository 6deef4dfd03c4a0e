import { type Clock, TokenBucketRateLimiter, systemClock } from '@sigil/runtime';
import { SERVER_LANE_CONNECTIONS } from '../client/tls-transport.js';

/** A caller of the Workload API as the JWT-SVID limits count it: by the uid the kernel reported (SO_PEERCRED). */
export interface JwtSvidCaller {
  readonly uid: number;
}

/**
 * What JWT-SVIDs may cost the agent, per uid and in all (issue 16 finding 5: one local user asking for ever-new
 * audiences used up the agent's server budget and pushed a real workload's JWT-SVID from 56 ms to 975 ms, and grew
 * the cache without a byte bound). Only misses count: a token served from the cache, or a request that joins one
 * being signed for the same identity and audiences, costs the server nothing.
 */
export interface JwtSvidLimits {
  /** Bytes of cached tokens (token and key) over all uids; the least recently used go first beyond it. */
  readonly cacheMaxBytes: number;
  /** Bytes of cached tokens signed for one uid; beyond it that uid's own least recently used go first. */
  readonly cacheMaxBytesPerUid: number;
  /** Misses one uid may send to the server per second, on average (token bucket refill). */
  readonly missRatePerSecond: number;
  /** Misses one uid may send at once after a quiet spell (token bucket size). */
  readonly missBurst: number;
  /** Misses of one uid being signed or waiting for a turn at once; the next gets RESOURCE_EXHAUSTED. */
  readonly maxPendingMissesPerUid: number;
  /**
   * JWT-SVID requests to the server at once over all uids (and connections kept for them), one uid holding at most
   * half of them. A free slot goes to the waiting uid with the fewest requests at the server, so a busy uid does not
   * delay a quiet one behind its queue.
   */
  readonly maxConcurrentSigning: number;
}

/**
 * The defaults. A host of ~100 workloads that all start at once, each fetching a token for one audience, fits in the
 * burst of a single uid (Kubernetes nodes often run every pod as one uid); steadily they refetch at half the 5 min
 * TTL, well under a request per second. A token is ~1 KB for a usual audience, ~45 KB at the largest request
 * allowed (16 audiences of 2048 bytes), so one uid holds 8 MiB: at least ~180 of the largest tokens, ~8,000 usual
 * ones; four such uids fill the cache before anyone else's token is evicted for them.
 */
export const JWT_SVID_LIMITS: JwtSvidLimits = Object.freeze({
  cacheMaxBytes: 32 * 1024 * 1024,
  cacheMaxBytesPerUid: 8 * 1024 * 1024,
  missRatePerSecond: 10,
  missBurst: 100,
  maxPendingMissesPerUid: 128,
  maxConcurrentSigning: SERVER_LANE_CONNECTIONS.jwt,
});

/**
 * What a miss takes from its uid's bucket: one token per started KiB of its audiences (UTF-8), at least one, at most
 * the burst. A usual request (a few short audiences) costs 1, so ~100 workloads of one uid starting at once still fit
 * in the burst; the largest request (16 audiences of 2 KiB, a ~45 KB token) costs 32, in proportion to what it costs
 * the agent and the server (decoding, hashing, signing and caching its audiences): a uid flooding the agent with them
 * got 100 of them signed in its first second, and the work of that burst alone delayed other workloads' calls by up
 * to 160 ms (`bench/dos/jwt-fanout.bench.ts`).
 */
export function jwtMissCost(audience: readonly string[]): number {
  let bytes = 0;
  for (const value of audience) bytes += Buffer.byteLength(value, 'utf8');
  return Math.max(1, Math.ceil(bytes / 1024));
}

/** A caller went past one of its JWT-SVID limits; the Workload API answers RESOURCE_EXHAUSTED with this message. */
export class JwtSvidLimitError extends Error {
  override readonly name = 'JwtSvidLimitError';

  constructor(
    readonly uid: number,
    readonly limit: 'rate' | 'pending',
    message: string,
  ) {
    super(message);
  }
}

interface Waiting {
  readonly start: () => void;
}

/**
 * The agent's lane for JWT-SVID signing at the server, apart from its own renewal, sync and X.509 rotation (which
 * have their own connections, see ServerClient): per uid a token bucket and a cap on pending misses, and over all
 * uids a fixed number of requests at once, at most half of them for one uid, handed out by uid: first to the uid
 * with the fewest running, then round-robin.
 */
export class JwtSigningLane {
  private readonly buckets: TokenBucketRateLimiter;
  private readonly pending = new Map<number, number>();
  /** Waiting misses per uid, in the order the uids get their next turn. */
  private readonly queues = new Map<number, Waiting[]>();
  private running = 0;
  private readonly runningByUid = new Map<number, number>();
  /** Half the slots: a busy uid always leaves room for another uid's miss to go at once. */
  private readonly maxRunningPerUid: number;

  constructor(
    private readonly limits: Pick<
      JwtSvidLimits,
      'missRatePerSecond' | 'missBurst' | 'maxPendingMissesPerUid' | 'maxConcurrentSigning'
    > = JWT_SVID_LIMITS,
    clock: Clock = systemClock,
  ) {
    this.maxRunningPerUid = Math.max(1, Math.floor(limits.maxConcurrentSigning / 2));
    this.buckets = new TokenBucketRateLimiter(
      { ratePerSecond: limits.missRatePerSecond, burst: limits.missBurst },
      clock,
    );
  }

  /** Misses of `uid` signed or waiting now. */
  pendingFor(uid: number): number {
    return this.pending.get(uid) ?? 0;
  }

  /** Requests to the server running now. */
  get active(): number {
    return this.running;
  }

  /**
   * Runs `sign` for a miss of `caller` when its turn comes, or throws {@link JwtSvidLimitError} at once when the uid
   * has too many misses pending or is over its rate (nothing is charged then). `cost` is {@link jwtMissCost}.
   */
  async run<T>(caller: JwtSvidCaller, sign: () => Promise<T>, cost = 1): Promise<T> {
    const { uid } = caller;
    const pending = this.pendingFor(uid);
    if (pending >= this.limits.maxPendingMissesPerUid) throw this.pendingError(uid);
    if (!this.buckets.tryTake(String(uid), this.bounded(cost))) throw this.rateError(uid);
    this.pending.set(uid, pending + 1);
    try {
      await this.turn(uid);
      try {
        return await sign();
      } finally {
        this.running--;
        const running = this.runningFor(uid) - 1;
        if (running > 0) this.runningByUid.set(uid, running);
        else this.runningByUid.delete(uid);
        this.dispatch();
      }
    } finally {
      const left = this.pendingFor(uid) - 1;
      if (left > 0) this.pending.set(uid, left);
      else this.pending.delete(uid);
    }
  }

  /**
   * The error {@link run} would throw for a miss of `caller` now, or undefined when it would take the miss; charges
   * nothing. Lets a request that can only be a miss be refused before any work is spent on it.
   */
  refusal(caller: JwtSvidCaller, cost = 1): JwtSvidLimitError | undefined {
    const { uid } = caller;
    if (this.pendingFor(uid) >= this.limits.maxPendingMissesPerUid) return this.pendingError(uid);
    if (this.buckets.retryAfterSeconds(String(uid), this.bounded(cost)) > 0) return this.rateError(uid);
    return undefined;
  }

  /** A cost the bucket can ever pay: at most its size. */
  private bounded(cost: number): number {
    return Math.min(Math.max(1, cost), this.limits.missBurst);
  }

  private pendingError(uid: number): JwtSvidLimitError {
    return new JwtSvidLimitError(
      uid,
      'pending',
      `uid ${uid}: too many JWT-SVID requests waiting for the server (at most ` +
        `${this.limits.maxPendingMissesPerUid}); retry when some have finished`,
    );
  }

  private rateError(uid: number): JwtSvidLimitError {
    return new JwtSvidLimitError(
      uid,
      'rate',
      `uid ${uid}: over its rate of JWT-SVIDs not in the agent's cache (${this.limits.missBurst} at once, then ` +
        `${this.limits.missRatePerSecond} per second, one per started KiB of audiences); retry later, or reuse audiences`,
    );
  }

  /** Resolves when `uid` may send its request (a slot is taken for it then). */
  private turn(uid: number): Promise<void> {
    return new Promise((resolve) => {
      const queue = this.queues.get(uid);
      const waiting = { start: resolve };
      if (queue === undefined) this.queues.set(uid, [waiting]);
      else queue.push(waiting);
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.running < this.limits.maxConcurrentSigning && this.queues.size > 0) {
      // The uid with the fewest requests at the server goes first (the first in line among equals), then to the
      // back of the line with whatever it has left.
      let uid: number | undefined;
      for (const candidate of this.queues.keys()) {
        if (this.runningFor(candidate) >= this.maxRunningPerUid) continue;
        if (uid === undefined || this.runningFor(candidate) < this.runningFor(uid)) uid = candidate;
        if (this.runningFor(uid) === 0) break;
      }
      // Every waiting uid holds its share of the slots already.
      if (uid === undefined) return;
      const queue = this.queues.get(uid as number) as Waiting[];
      this.queues.delete(uid as number);
      const next = queue.shift() as Waiting;
      if (queue.length > 0) this.queues.set(uid as number, queue);
      this.running++;
      this.runningByUid.set(uid as number, this.runningFor(uid as number) + 1);
      next.start();
    }
  }

  private runningFor(uid: number): number {
    return this.runningByUid.get(uid) ?? 0;
  }
}
