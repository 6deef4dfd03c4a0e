import { Inject, Injectable, Logger, Optional } from '@nestjs/common';
import { RateLimitedLog } from '@sigil/logging';
import { TokenBucketRateLimiter } from '@sigil/runtime';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { FairQueue, FairQueueFullError, type FairQueueOptions } from './fair-queue.js';
import { SIGNING_CHUNK_SIZE, signingConcurrency } from './signing-limits.js';

/** What an agent asks the server to sign, each kind with its own budget. */
export type SigningKind = 'renewal' | 'x509' | 'jwt';

export type SigningBudgetConfig = Pick<
  ServerConfig,
  | 'agentSignRatePerSecond'
  | 'agentSignBurst'
  | 'agentJwtSignRatePerSecond'
  | 'agentJwtSignBurst'
  | 'agentSignMaxInFlight'
  | 'agentRenewRatePerSecond'
  | 'agentRenewBurst'
  | 'signingQueueMaxItems'
> &
  Partial<Pick<ServerConfig, 'signingWorkers'>>;

/** Optional injection token: the fair queue's shape, for tests (the defaults are {@link SIGNING_CHUNK_SIZE} etc.). */
export const SIGNING_QUEUE_OPTIONS = Symbol('SIGNING_QUEUE_OPTIONS');

const KIND_NAMES: Readonly<Record<SigningKind, string>> = {
  renewal: 'agent SVID renewal',
  x509: 'X.509-SVID signing',
  jwt: 'JWT-SVID signing',
};

const KIND_KEYS: Readonly<Record<SigningKind, string>> = {
  renewal: 'agent_renew_rate, agent_renew_burst',
  x509: 'agent_sign_rate, agent_sign_burst',
  jwt: 'agent_jwt_sign_rate, agent_jwt_sign_burst',
};

const UNITS: Readonly<Record<SigningKind, string>> = { renewal: 'renewals', x509: 'CSRs', jwt: 'JWT-SVIDs' };

/** Most refused-request costs remembered for early refusals (one per agent and kind that was refused). */
const MAX_REMEMBERED_REFUSALS = 100_000;

/**
 * Everything that bounds an agent's signing on this server (issue 16, findings 2 and 5):
 * - one token bucket per agent and per kind (its own renewal, X.509-SVID CSRs, JWT-SVIDs), so JWT work never spends
 *   the X.509 budget and neither can stop the agent renewing its own SVID; X.509 is charged per CSR of a batch;
 * - at most `agent_sign_max_in_flight` X.509 batches of one agent in progress;
 * - one fair queue over all agents for the signing itself (X.509 in chunks, JWT one by one), so an agent within its
 *   budget but sending full batches cannot make another agent's single CSR wait behind them.
 *
 * Refusals are `resource_exhausted` (HTTP 429) with `Retry-After`; a full queue is `unavailable` (503: the agent tries
 * another replica). They are logged through {@link RateLimitedLog}, a few lines per agent and kind, then a count.
 */
@Injectable()
export class AgentSigningBudget {
  private readonly buckets: Readonly<Record<SigningKind, TokenBucketRateLimiter>>;
  private readonly limits: Readonly<Record<SigningKind, { ratePerSecond: number; burst: number }>>;
  private readonly inFlight = new Map<string, number>();
  /**
   * The cost of each agent's last refused request, per kind (`<kind> <agent>`): an agent that sent a 500-CSR batch
   * and was refused is refused early until its bucket holds that much again, not only while it is empty (at the
   * default rate one token is back every 2 ms, so every repeated batch would be read and parsed first). Dropped when
   * the agent's next charge passes; at most {@link MAX_REMEMBERED_REFUSALS} kept, oldest forgotten first.
   */
  private readonly refusedCosts = new Map<string, number>();
  private readonly maxInFlight: number;
  private readonly queue: FairQueue;
  private readonly refusals: RateLimitedLog;

  constructor(
    @Inject(SERVER_CONFIG) config: SigningBudgetConfig,
    @Inject(CLOCK) clock: Clock,
    @Optional() @Inject(SIGNING_QUEUE_OPTIONS) queueOptions?: FairQueueOptions,
  ) {
    this.limits = {
      renewal: { ratePerSecond: config.agentRenewRatePerSecond, burst: config.agentRenewBurst },
      x509: { ratePerSecond: config.agentSignRatePerSecond, burst: config.agentSignBurst },
      jwt: { ratePerSecond: config.agentJwtSignRatePerSecond, burst: config.agentJwtSignBurst },
    };
    this.buckets = {
      renewal: new TokenBucketRateLimiter(this.limits.renewal, clock),
      x509: new TokenBucketRateLimiter(this.limits.x509, clock),
      jwt: new TokenBucketRateLimiter(this.limits.jwt, clock),
    };
    this.maxInFlight = config.agentSignMaxInFlight;
    this.queue = new FairQueue(
      queueOptions ?? {
        chunkSize: SIGNING_CHUNK_SIZE,
        concurrency: signingConcurrency(config.signingWorkers ?? 0),
        maxQueuedItems: config.signingQueueMaxItems,
      },
    );
    this.refusals = new RateLimitedLog(new Logger(AgentSigningBudget.name), { now: () => clock.now().getTime() });
  }

  /** Items waiting in the signing queue, over every agent (for tests and metrics). */
  get queued(): number {
    return this.queue.queued;
  }

  /**
   * Charges `cost` units of `kind` to the agent's bucket.
   *
   * @throws AppError `resource_exhausted` with `retryAfterSeconds` when the bucket holds less (nothing is taken).
   */
  charge(agentId: string, kind: SigningKind, cost = 1): void {
    const bucket = this.buckets[kind];
    const key = `${kind} ${agentId}`;
    if (bucket.tryTake(agentId, cost)) {
      this.refusedCosts.delete(key);
      return;
    }
    this.refusedCosts.delete(key);
    this.refusedCosts.set(key, cost);
    if (this.refusedCosts.size > MAX_REMEMBERED_REFUSALS) {
      this.refusedCosts.delete(this.refusedCosts.keys().next().value!);
    }
    const { ratePerSecond, burst } = this.limits[kind];
    // At least 1: the bucket lacks something. A cost beyond the burst cannot happen (a batch is at most 500 CSRs and
    // the config keeps the X.509 burst at least that), but would be told to retry at the full refill.
    const retryAfterSeconds = Math.max(1, bucket.retryAfterSeconds(agentId, Math.min(cost, burst)));
    this.refuse(
      agentId,
      kind,
      `agent ${agentId}: over its ${KIND_NAMES[kind]} budget (${ratePerSecond} ${UNITS[kind]}/s, burst ${burst}; ` +
        `${KIND_KEYS[kind]}), this request costs ${cost}: retry in ${retryAfterSeconds} s`,
      retryAfterSeconds,
    );
  }

  /**
   * For a request whose body is not read yet: refuses it at once when it cannot pass anyway (the agent's bucket for
   * `kind` holds less than its last refused request cost, or is empty; for X.509 also when its batches in progress
   * are at the cap), so a caller looping on refusals costs no body parsing. Takes nothing; the request that passes
   * is charged in full later.
   *
   * @throws AppError `resource_exhausted` as {@link charge} and {@link enterBatch} would.
   */
  refuseEarly(agentId: string, kind: SigningKind): void {
    if (kind === 'x509' && (this.inFlight.get(agentId) ?? 0) >= this.maxInFlight) this.enterBatch(agentId);
    const cost = Math.min(this.refusedCosts.get(`${kind} ${agentId}`) ?? 1, this.limits[kind].burst);
    if (this.buckets[kind].retryAfterSeconds(agentId, cost) > 0) this.charge(agentId, kind, cost);
  }

  /**
   * Counts one X.509 batch of the agent as in progress until the returned function is called.
   *
   * @throws AppError `resource_exhausted` when `agent_sign_max_in_flight` batches are in progress already.
   */
  enterBatch(agentId: string): () => void {
    const count = this.inFlight.get(agentId) ?? 0;
    if (count >= this.maxInFlight) {
      this.refuse(
        agentId,
        'x509',
        `agent ${agentId}: ${count} X.509-SVID batches already in progress, at most ${this.maxInFlight} ` +
          `(agent_sign_max_in_flight): wait for one to finish, then retry`,
        1,
      );
    }
    this.inFlight.set(agentId, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.inFlight.get(agentId) ?? 1) - 1;
      if (left > 0) this.inFlight.set(agentId, left);
      else this.inFlight.delete(agentId);
    };
  }

  /**
   * Runs `work` over `items` in the fair signing queue, in turn with every other agent's work of any kind.
   *
   * @throws AppError `unavailable` (with `retryAfterSeconds`) when the queue is full.
   */
  async inTurn<T, R>(
    agentId: string,
    kind: SigningKind,
    items: readonly T[],
    work: (chunk: readonly T[], offset: number) => Promise<readonly R[]>,
  ): Promise<R[]> {
    try {
      // One line per agent and kind: an agent's JWT requests and its X.509 batches take turns too.
      return await this.queue.run(`${kind} ${agentId}`, items, work);
    } catch (error) {
      if (!(error instanceof FairQueueFullError)) throw error;
      this.refusals.warn(`queue-full`, { msg: 'signing refused: the signing queue is full', agentId, kind });
      throw new AppError('unavailable', `${error.message}: the server is busy signing, retry in 1 s`, {
        retryAfterSeconds: 1,
      });
    }
  }

  private refuse(agentId: string, kind: SigningKind, message: string, retryAfterSeconds: number): never {
    this.refusals.warn(`${kind} ${agentId}`, {
      msg: 'signing refused: agent over its limit',
      agentId,
      kind,
      reason: message,
    });
    throw new AppError('resource_exhausted', message, { retryAfterSeconds });
  }
}
