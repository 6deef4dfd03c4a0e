import 'reflect-metadata';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestAuthority, type TestAuthority } from '../../../../test/support/authority.js';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { AuthorityUsageRepository } from './authority-usage.repository.js';
import { AuthorityUsage } from './authority-usage.js';
import type { AuthorityKey } from './authority-key.js';
import type { AuthorityKind } from './ca-key.js';

const T0 = Date.UTC(2026, 0, 1);
const HOUR = 3600_000;
const AGENT_A = 'spiffe://example.org/sigil/agent/join_token/a';
const AGENT_B = 'spiffe://example.org/sigil/agent/join_token/b';

/**
 * Taint publication and the revoke rule (issue 14): `revoke` is refused while an agent's last report, stored in
 * PostgreSQL by whichever replica served its sync, names an unexpired SVID issued by the key, or while an agent with
 * a valid SVID has never reported; `force` overrides it.
 */
describe('localauthority taint and revoke: the in-use rule', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let authority: TestAuthority;
  /** The agents' reports, as the sync stores them (another instance: another replica's). */
  let usage: AuthorityUsage;

  beforeAll(async () => {
    db = await useTestDatabase();
  });
  afterAll(async () => {
    await db?.close();
  });
  beforeEach(async () => {
    await db.dataSource.query('DELETE FROM ca_keys');
    await db.dataSource.query('DELETE FROM bundles');
    await db.dataSource.query('DELETE FROM agents');
    clock = new FakeClock(T0);
    authority = await createTestAuthority(db.dataSource, { clock });
    await authority.keys.tick({ waitForLock: true });
    usage = new AuthorityUsage(new AuthorityUsageRepository(db.dataSource));
  });

  async function addAgent(spiffeId: string, svidExpiresAt: Date, banned = false): Promise<void> {
    await db.dataSource.query(
      `INSERT INTO agents (spiffe_id, attestation_type, serial_number, svid_expires_at, selectors, banned)
       VALUES ($1, 'join_token', '01', $2, '[]'::jsonb, $3)`,
      [spiffeId, svidExpiresAt, banned],
    );
  }

  /** Rotates `kind` (prepare + activate) and taints the key that was active; returns it. */
  async function rotateAndTaint(kind: AuthorityKind): Promise<{ old: AuthorityKey; next: AuthorityKey }> {
    const old = authority.keys.slots(kind).active!;
    const next = await authority.keys.prepare(kind);
    await authority.keys.activate(kind, next.authorityId);
    await authority.keys.taint(kind, old.authorityId);
    return { old, next };
  }

  it('publishes a taint with the bundle: the sequence moves and the sync reads the tainted IDs', async () => {
    const old = authority.keys.slots('x509').active!;
    const next = await authority.keys.prepare('x509');
    await authority.keys.activate('x509', next.authorityId);
    const sequence = authority.bundles.ownBundle().sequenceNumber!;
    expect(authority.bundles.ownTaintedAuthorities()).toEqual([]);

    await authority.keys.taint('x509', old.authorityId);
    expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);
    expect(authority.bundles.ownTaintedAuthorities()).toEqual([old.authorityId]);
    // Another replica loads it from the database with the bundle.
    const replica = await createTestAuthority(db.dataSource, { clock, kek: authority.kek });
    await replica.keys.tick();
    expect(replica.bundles.ownTaintedAuthorities()).toEqual([old.authorityId]);
    // Revoked, it leaves the bundle and the tainted list.
    await authority.keys.revoke('x509', old.authorityId);
    expect(authority.bundles.ownTaintedAuthorities()).toEqual([]);
  });

  for (const kind of ['x509', 'jwt'] as const) {
    it(`${kind}: refuses revoke while an agent reports an unexpired SVID of the key, then accepts it`, async () => {
      const { old, next } = await rotateAndTaint(kind);
      await addAgent(AGENT_A, new Date(T0 + HOUR));
      await addAgent(AGENT_B, new Date(T0 + HOUR));
      await usage.report(AGENT_A, new Map([[old.authorityId, new Date(T0 + 2 * HOUR)]]));
      await usage.report(AGENT_B, new Map([[next.authorityId, new Date(T0 + 2 * HOUR)]]));

      const label = kind === 'x509' ? 'X509' : 'JWT';
      await expect(authority.keys.revoke(kind, old.authorityId)).rejects.toMatchObject({
        kind: 'failed_precondition',
        message:
          `authorityId: '${old.authorityId}' still issued ${label}-SVIDs in use: 1 agent, ` +
          `${AGENT_A} (until ${new Date(T0 + 2 * HOUR).toISOString()}); wait until the agents have replaced them ` +
          '(tainting makes them re-sign at once) and expired, or revoke with force, which removes the key from the ' +
          'bundle now: every SVID it issued then fails verification',
      });
      expect(authority.keys.slots(kind).old[0]!.revoked).toBe(false);

      // The agent re-signed: its next sync reports the new key only.
      await usage.report(AGENT_A, new Map([[next.authorityId, new Date(T0 + 2 * HOUR)]]));
      expect((await authority.keys.revoke(kind, old.authorityId)).revoked).toBe(true);
    });
  }

  it('counts an agent that never reported while its own SVID is valid, and ignores banned agents', async () => {
    const { old } = await rotateAndTaint('x509');
    await addAgent(AGENT_A, new Date(T0 + HOUR));
    await addAgent(AGENT_B, new Date(T0 + HOUR), true);
    await usage.report(AGENT_B, new Map([[old.authorityId, new Date(T0 + 2 * HOUR)]]));
    await expect(authority.keys.revoke('x509', old.authorityId)).rejects.toMatchObject({
      message: expect.stringContaining(
        `in use: 1 agent, ${AGENT_A} (has not reported which authorities issued its SVIDs);`,
      ) as string,
    });
    // Once its SVID expired (and it never came back), it holds nothing that verifies.
    clock.advance(HOUR + 1000);
    expect((await authority.keys.revoke('x509', old.authorityId)).revoked).toBe(true);
  });

  it('a report stands until the SVIDs it names expire, read by every replica', async () => {
    const { old } = await rotateAndTaint('jwt');
    await addAgent(AGENT_A, new Date(T0 + 10 * HOUR));
    await usage.report(AGENT_A, new Map([[old.authorityId, new Date(T0 + 5 * 60_000)]]));
    const replica = await createTestAuthority(db.dataSource, { clock, kek: authority.kek });
    await replica.keys.tick();
    await expect(replica.keys.revoke('jwt', old.authorityId)).rejects.toMatchObject({
      kind: 'failed_precondition',
      message: expect.stringContaining(`1 agent, ${AGENT_A} (until`) as string,
    });
    clock.advance(5 * 60_000 + 1000);
    expect((await replica.keys.revoke('jwt', old.authorityId)).revoked).toBe(true);
  });

  it('force revokes a key still in use', async () => {
    const { old } = await rotateAndTaint('x509');
    await addAgent(AGENT_A, new Date(T0 + HOUR));
    await usage.report(AGENT_A, new Map([[old.authorityId, new Date(T0 + 2 * HOUR)]]));
    await expect(authority.keys.revoke('x509', old.authorityId)).rejects.toMatchObject({ kind: 'failed_precondition' });
    expect((await authority.keys.revoke('x509', old.authorityId, { force: true })).revoked).toBe(true);
    expect(authority.bundles.ownTaintedAuthorities()).toEqual([]);
  });
});
