import { createHash } from 'node:crypto';
import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { type ServerConfig } from '../config.js';
import { JoinTokenEntity } from './join-token.entity.js';
import { JoinTokensRepository } from './join-tokens.repository.js';
import { JoinTokensService } from './join-tokens.service.js';

const config = { trustDomain: TrustDomain.parse('example.org'), joinTokenTtlSeconds: 600 } as ServerConfig;

describe('JoinTokensService', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let service: JoinTokensService;

  beforeAll(async () => {
    db = await useTestDatabase();
    clock = new FakeClock(Date.UTC(2026, 0, 1));
    service = new JoinTokensService(
      new JoinTokensRepository(db.dataSource.getRepository(JoinTokenEntity)),
      config,
      clock,
    );
  });

  afterAll(async () => {
    await db?.close();
  });

  it('stores only the SHA-256 of the token, never the token, and does not select the hash by default', async () => {
    const created = await service.create({ spiffeId: 'spiffe://example.org/host/web-1' });
    expect(created.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(created.expiresAt.getTime() - clock.now().getTime()).toBe(600_000);

    const rows: Record<string, unknown>[] = await db.dataSource.query('SELECT * FROM join_tokens WHERE id = $1', [
      created.id,
    ]);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.['token_hash']).toBe(createHash('sha256').update(created.token).digest('hex'));
    expect(JSON.stringify(rows)).not.toContain(created.token);

    const entity = await db.dataSource.getRepository(JoinTokenEntity).findOneByOrFail({ id: created.id });
    expect(entity.tokenHash).toBeUndefined();
    expect(entity.spiffeId).toBe('spiffe://example.org/host/web-1');
  });

  it('is consumed once: the second use is refused', async () => {
    const created = await service.create({ spiffeId: 'spiffe://example.org/host/db' });
    const consumed = await service.consume(created.token, clock.now());
    expect(consumed.id).toBe(created.id);
    expect(consumed.spiffeId?.toString()).toBe('spiffe://example.org/host/db');
    await expect(service.consume(created.token, clock.now())).rejects.toMatchObject({
      kind: 'permission_denied',
      message: 'join token: unknown, expired or already used',
    });
  });

  // Attestations with one token reach several replicas at once; PGlite would run them one after the other.
  it.skipIf(isEmbeddedRun())(
    `gives a token to exactly one of many concurrent attestations on three replicas (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      const replicas = [service];
      for (let i = 0; i < 2; i++) {
        const pool = await db.connectAnother({ poolSize: 4 });
        replicas.push(
          new JoinTokensService(new JoinTokensRepository(pool.getRepository(JoinTokenEntity)), config, clock),
        );
      }
      for (let round = 0; round < 5; round++) {
        const created = await service.create({});
        const results = await Promise.allSettled(
          replicas.flatMap((replica) => Array.from({ length: 4 }, () => replica.consume(created.token, clock.now()))),
        );
        expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
        for (const result of results.filter((each) => each.status === 'rejected')) {
          expect((result as PromiseRejectedResult).reason).toMatchObject({
            kind: 'permission_denied',
            message: 'join token: unknown, expired or already used',
          });
        }
      }
    },
  );

  it('refuses an expired token and an unknown one with the same message', async () => {
    const created = await service.create({ ttlSeconds: 60 });
    const later = new Date(clock.now().getTime() + 60_000);
    await expect(service.consume(created.token, later)).rejects.toThrow('join token: unknown, expired or already used');
    await expect(service.consume('not-a-token', clock.now())).rejects.toThrow(
      'join token: unknown, expired or already used',
    );
    await expect(service.consume('', clock.now())).rejects.toThrow('join token: unknown, expired or already used');
  });

  it('prunes only expired tokens', async () => {
    const short = await service.create({ ttlSeconds: 10 });
    const long = await service.create({ ttlSeconds: 3600 });
    const pruned = await service.pruneExpired(new Date(clock.now().getTime() + 11_000));
    expect(pruned).toBeGreaterThanOrEqual(1);
    const ids = (await db.dataSource.query('SELECT id FROM join_tokens')).map((row: { id: string }) => row.id);
    expect(ids).not.toContain(short.id);
    expect(ids).toContain(long.id);
  });

  it.each([
    [{ ttlSeconds: 0 }, 'ttl: must be an integer from 1 to 604800 seconds, got 0'],
    [{ ttlSeconds: 604801 }, 'ttl: must be an integer from 1 to 604800 seconds, got 604801'],
    [
      { spiffeId: 'spiffe://other.org/host' },
      'spiffe_id: must be in trust domain example.org, got spiffe://other.org/host',
    ],
    [{ spiffeId: 'spiffe://example.org' }, 'spiffe_id: must have a path, not be the trust domain itself'],
    [
      { spiffeId: 'spiffe://example.org/sigil/agent/x' },
      "spiffe_id: paths under /sigil/ are reserved for Sigil's servers and agents",
    ],
  ])('rejects %o', async (input, message) => {
    await expect(service.create(input)).rejects.toMatchObject({ kind: 'invalid_argument', message });
  });

  it('names the SPIFFE ID rule a malformed spiffe_id breaks', async () => {
    await expect(service.create({ spiffeId: 'spiffe://example.org/a//b' })).rejects.toMatchObject({
      kind: 'invalid_argument',
      message: expect.stringMatching(/^spiffe_id: .*empty/),
    });
  });
});
