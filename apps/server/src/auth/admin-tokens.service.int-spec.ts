import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { type Actor } from './actor.js';
import { AdminTokenEntity } from './admin-token.entity.js';
import { AdminTokensRepository } from './admin-tokens.repository.js';
import { AdminTokensService } from './admin-tokens.service.js';

const local: Actor = { kind: 'local-admin' };

describe('AdminTokensService', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let tokens: AdminTokensService;

  beforeAll(async () => {
    db = await useTestDatabase();
    clock = new FakeClock(Date.UTC(2026, 0, 1));
    tokens = new AdminTokensService(new AdminTokensRepository(db.dataSource.getRepository(AdminTokenEntity)), clock);
  });

  afterAll(async () => {
    await db?.close();
  });

  it('stores only the hash, authenticates the token and notes its use', async () => {
    const created = await tokens.create(local, { name: 'ci' });
    expect(created.token).toMatch(/^sigil_admin_[A-Za-z0-9_-]{43}$/);
    const rows: Record<string, unknown>[] = await db.dataSource.query('SELECT * FROM admin_tokens WHERE name = $1', [
      'ci',
    ]);
    expect(rows[0]?.['token_hash']).toBe(createHash('sha256').update(created.token).digest('hex'));
    expect(JSON.stringify(rows)).not.toContain(created.token);

    expect(await tokens.authenticate(created.token)).toBe('ci');
    const [info] = await tokens.list(local);
    expect(info?.lastUsedAt).toEqual(clock.now());
    expect(await tokens.authenticate(`${created.token}x`)).toBeUndefined();
    expect(await tokens.authenticate('Bearer nonsense')).toBeUndefined();
  });

  it('refuses expired and revoked tokens', async () => {
    const expiring = await tokens.create(local, { name: 'short', ttlSeconds: 60 });
    expect(await tokens.authenticate(expiring.token)).toBe('short');
    clock.advance(60_000);
    expect(await tokens.authenticate(expiring.token)).toBeUndefined();

    const revoked = await tokens.create(local, { name: 'gone' });
    await tokens.revoke(local, 'gone');
    expect(await tokens.authenticate(revoked.token)).toBeUndefined();
    await expect(tokens.revoke(local, 'gone')).rejects.toMatchObject({ kind: 'not_found' });
  });

  it('lets only the local admin manage tokens, so a leaked token cannot mint more', async () => {
    const remote: Actor = { kind: 'admin-token', name: 'ci' };
    const denied = {
      kind: 'permission_denied',
      message: 'admin tokens can be managed only through the local admin socket',
    };
    await expect(tokens.create(remote, { name: 'more' })).rejects.toMatchObject(denied);
    await expect(tokens.list(remote)).rejects.toMatchObject(denied);
    await expect(tokens.revoke(remote, 'ci')).rejects.toMatchObject(denied);
  });

  it('refuses a duplicate name and a malformed one', async () => {
    await expect(tokens.create(local, { name: 'ci' })).rejects.toMatchObject({
      kind: 'already_exists',
      message: 'name: an admin token named ci already exists',
    });
    await expect(tokens.create(local, { name: 'has space' })).rejects.toMatchObject({
      kind: 'invalid_argument',
      message: 'name: must be 1-64 letters, digits, dots, dashes or underscores',
    });
  });
});
