import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { SIGIL_RESERVED_PATH_PREFIX, isReservedSigilPath } from '@sigil/runtime';
import { SpiffeId } from '@sigil/spiffe';
import { SERVER_CONFIG, type ServerConfig } from '../config.js';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { generateSecretToken, hashSecretToken } from '../common/secret-token.js';
import { JoinTokensRepository } from './join-tokens.repository.js';

/** Bounds of a join token's lifetime: long enough to paste it into a provisioning step, short enough to expire. */
export const JOIN_TOKEN_TTL_BOUNDS = { min: 1, max: 7 * 86400 } as const;
const PRUNE_INTERVAL_MS = 60_000;

export interface CreatedJoinToken {
  /** Non-secret id of the token (the audit target, and the id in the agent's SPIFFE ID once it attests). */
  id: string;
  /** The secret itself; returned once and never stored. */
  token: string;
  expiresAt: Date;
  spiffeId: string | null;
}

export interface ConsumedJoinToken {
  /** Row id of the token: a stable, non-secret id for the agent's SPIFFE ID (the token itself must not appear). */
  id: string;
  /** The SPIFFE ID given at creation, if any. */
  spiffeId?: SpiffeId;
}

@Injectable()
export class JoinTokensService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger(JoinTokensService.name);
  private pruneTimer?: NodeJS.Timeout;

  constructor(
    private readonly repository: JoinTokensRepository,
    @Inject(SERVER_CONFIG) private readonly config: ServerConfig,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  onModuleInit(): void {
    this.pruneTimer = setInterval(() => {
      this.pruneExpired(this.clock.now()).catch((error: unknown) =>
        this.logger.warn({ msg: 'pruning expired join tokens failed', err: error }),
      );
    }, PRUNE_INTERVAL_MS);
    this.pruneTimer.unref();
  }

  onModuleDestroy(): void {
    clearInterval(this.pruneTimer);
  }

  /** Creates a join token; only its hash is stored, so the returned token is the only copy. */
  async create(input: { spiffeId?: string; ttlSeconds?: number }): Promise<CreatedJoinToken> {
    const ttlSeconds = input.ttlSeconds ?? this.config.joinTokenTtlSeconds;
    if (
      !Number.isInteger(ttlSeconds) ||
      ttlSeconds < JOIN_TOKEN_TTL_BOUNDS.min ||
      ttlSeconds > JOIN_TOKEN_TTL_BOUNDS.max
    ) {
      throw new AppError(
        'invalid_argument',
        `ttl: must be an integer from ${JOIN_TOKEN_TTL_BOUNDS.min} to ${JOIN_TOKEN_TTL_BOUNDS.max} seconds, got ${ttlSeconds}`,
      );
    }
    const spiffeId = input.spiffeId === undefined ? null : this.parseAgentAlias(input.spiffeId).toString();
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000);
    const token = generateSecretToken();
    const row = await this.repository.insert(hashSecretToken(token), spiffeId, now, expiresAt);
    this.logger.log({ msg: 'join token created', joinTokenId: row.id, spiffeId, ttlSeconds });
    return { id: row.id, token, expiresAt, spiffeId };
  }

  /**
   * Consumes a join token for node attestation: atomically and at most once, and only before it expires.
   *
   * @throws AppError `permission_denied` when the token is unknown, expired or already used (one message for all
   *   three, so a caller learns nothing about which tokens exist).
   */
  async consume(token: string, now: Date): Promise<ConsumedJoinToken> {
    const row =
      typeof token === 'string' && token.length > 0
        ? await this.repository.takeUnexpired(hashSecretToken(token), now)
        : undefined;
    if (!row) throw new AppError('permission_denied', 'join token: unknown, expired or already used');
    return row.spiffeId === null ? { id: row.id } : { id: row.id, spiffeId: SpiffeId.parse(row.spiffeId) };
  }

  /** Deletes expired tokens; returns how many went. */
  async pruneExpired(now: Date): Promise<number> {
    const pruned = await this.repository.deleteExpired(now);
    if (pruned > 0) this.logger.debug({ msg: 'expired join tokens pruned', count: pruned });
    return pruned;
  }

  private parseAgentAlias(value: string): SpiffeId {
    let id: SpiffeId;
    try {
      id = SpiffeId.parse(value);
    } catch (error) {
      throw new AppError('invalid_argument', `spiffe_id: ${(error as Error).message}`);
    }
    if (!id.isMemberOf(this.config.trustDomain)) {
      throw new AppError(
        'invalid_argument',
        `spiffe_id: must be in trust domain ${this.config.trustDomain.name}, got ${id.toString()}`,
      );
    }
    if (id.isRoot()) {
      throw new AppError('invalid_argument', 'spiffe_id: must have a path, not be the trust domain itself');
    }
    if (isReservedSigilPath(id.path)) {
      throw new AppError(
        'invalid_argument',
        `spiffe_id: paths under ${SIGIL_RESERVED_PATH_PREFIX} are reserved for Sigil's servers and agents`,
      );
    }
    return id;
  }
}
