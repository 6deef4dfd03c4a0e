import { createPrivateKey } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestAuthority, randomKek, type TestAuthority } from '../../../../test/support/authority.js';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { sealingContext } from './authority-key.factory.js';

interface RawRow {
  id: string;
  kind: 'x509' | 'jwt';
  encrypted_private_key: Buffer;
  everything: string;
}

describe('CA private keys at rest', () => {
  let db: TestDatabase;
  let authority: TestAuthority;
  const clock = new FakeClock(Date.UTC(2026, 0, 1));

  beforeAll(async () => {
    db = await useTestDatabase();
    authority = await createTestAuthority(db.dataSource, { clock });
    await authority.keys.tick({ waitForLock: true });
    // A prepared key as well, so every state of the journal is looked at.
    await authority.keys.prepare('x509');
  });
  afterAll(async () => {
    await db?.close();
  });

  const rawRows = (): Promise<RawRow[]> =>
    db.dataSource.query(
      'SELECT id, kind, encrypted_private_key, row_to_json(k)::text AS everything FROM ca_keys k ORDER BY created_at',
    );

  it('stores only KEK-sealed private keys: no PKCS#8 DER and no private scalar in any column', async () => {
    const rows = await rawRows();
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      const pkcs8 = await authority.kek.decrypt(row.encrypted_private_key, sealingContext(row));
      const { d } = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
      const scalar = Buffer.from(d!, 'base64url');
      expect(scalar.length).toBe(32);
      // Layout: version 1, 12-byte IV, ciphertext, tag; never a DER SEQUENCE.
      expect(row.encrypted_private_key[0]).toBe(1);
      expect(row.encrypted_private_key.includes(pkcs8)).toBe(false);
      expect(row.encrypted_private_key.includes(scalar)).toBe(false);
      expect(row.everything).not.toContain(pkcs8.toString('hex'));
      expect(row.everything).not.toContain(scalar.toString('hex'));
      expect(row.everything).not.toContain(d);
    }
  });

  it('cannot be opened by a server holding another key-encryption key', async () => {
    const other = await createTestAuthority(db.dataSource, { clock, kek: await randomKek() });
    await expect(other.keys.tick()).rejects.toThrow(
      /^ca key [0-9a-f-]{36} \((x509|jwt)\): its private key cannot be opened with the key-encryption key from SIGIL_KEK/,
    );
    expect(other.ca.isReady()).toBe(false);
  });

  it('refuses a sealed key moved into another row (additional authenticated data binds it to its row)', async () => {
    const rows = await rawRows();
    const x509Row = rows.find((row) => row.id === authority.keys.slots('x509').active?.id);
    const jwtRow = rows.find((row) => row.id === authority.keys.slots('jwt').active?.id);
    // Both are P-256 keys, so without the binding the swap would go unnoticed and sign with the wrong key.
    await db.dataSource.query(
      `UPDATE ca_keys SET encrypted_private_key = CASE id WHEN $1::uuid THEN $4::bytea ELSE $3::bytea END
        WHERE id IN ($1::uuid, $2::uuid)`,
      [x509Row!.id, jwtRow!.id, x509Row!.encrypted_private_key, jwtRow!.encrypted_private_key],
    );
    const restarted = await createTestAuthority(db.dataSource, { clock, kek: authority.kek });
    await expect(restarted.keys.tick()).rejects.toThrow(
      `ca key ${x509Row!.id} (x509): its private key cannot be opened with the key-encryption key from SIGIL_KEK`,
    );
  });
});
