import { Inject, Injectable, Logger } from '@nestjs/common';
import { CLOCK, type Clock } from '../common/clock.js';
import { AppError } from '../common/errors.js';
import { generateSecretToken, hashSecretToken } from '../common/secret-token.js';
import { type Actor } from './actor.js';
import { AdminTokensRepository } from './admin-tokens.repository.js';

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Prefix that makes a leaked token recognisable to secret scanners. */
export const ADMIN_TOKEN_PREFIX = 'sigil_admin_';
/** `last_used_at` is written at most this often per token, so authentication is not a write per request. */
const LAST_USED_RESOLUTION_MS = 60_000;

export interface AdminTokenInfo {
  name: string;
  createdAt: Date;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
}

export interface CreatedAdminToken extends AdminTokenInfo {
  /** The bearer secret; returned once and never stored. */
  token: string;
}

@Injectable()
export class AdminTokensService {
  private readonly logger = new Logger(AdminTokensService.name);

  constructor(
    private readonly repository: AdminTokensRepository,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  /** Creates a named bearer admin token. Only the local admin may: a leaked token must not be able to mint more. */
  async create(actor: Actor, input: { name: string; ttlSeconds?: number }): Promise<CreatedAdminToken> {
    requireLocalAdmin(actor);
    if (!NAME_PATTERN.test(input.name)) {
      throw new AppError('invalid_argument', 'name: must be 1-64 letters, digits, dots, dashes or underscores');
    }
    if (input.ttlSeconds !== undefined && (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 1)) {
      throw new AppError('invalid_argument', 'ttl: must be a positive integer number of seconds');
    }
    if (await this.repository.existsByName(input.name)) throw alreadyExists(input.name);
    const now = this.clock.now();
    const expiresAt = input.ttlSeconds === undefined ? null : new Date(now.getTime() + input.ttlSeconds * 1000);
    const token = generateSecretToken(ADMIN_TOKEN_PREFIX);
    // False: a concurrent create of the same name won the race on the unique constraint.
    if (!(await this.repository.insert(input.name, hashSecretToken(token), now, expiresAt))) {
      throw alreadyExists(input.name);
    }
    this.logger.log({ msg: 'admin token created', name: input.name });
    return { token, name: input.name, createdAt: now, expiresAt, lastUsedAt: null };
  }

  async list(actor: Actor): Promise<AdminTokenInfo[]> {
    requireLocalAdmin(actor);
    const rows = await this.repository.listAll();
    return rows.map(({ name, createdAt, expiresAt, lastUsedAt }) => ({ name, createdAt, expiresAt, lastUsedAt }));
  }

  async revoke(actor: Actor, name: string): Promise<void> {
    requireLocalAdmin(actor);
    if (!(await this.repository.deleteByName(name))) throw new AppError('not_found', `admin token ${name} not found`);
    this.logger.log({ msg: 'admin token revoked', name });
  }

  /** The name of the token's owner if the token is known and unexpired, else undefined. */
  async authenticate(token: string): Promise<string | undefined> {
    if (!token.startsWith(ADMIN_TOKEN_PREFIX) || token.length > 256) return undefined;
    const row = await this.repository.findByHash(hashSecretToken(token));
    const now = this.clock.now();
    if (!row || (row.expiresAt !== null && row.expiresAt <= now)) return undefined;
    if (row.lastUsedAt === null || now.getTime() - row.lastUsedAt.getTime() >= LAST_USED_RESOLUTION_MS) {
      await this.repository.markUsed(row.id, now);
    }
    return row.name;
  }
}

function requireLocalAdmin(actor: Actor): void {
  if (actor.kind !== 'local-admin') {
    throw new AppError('permission_denied', 'admin tokens can be managed only through the local admin socket');
  }
}

function alreadyExists(name: string): AppError {
  return new AppError('already_exists', `name: an admin token named ${name} already exists`);
}
