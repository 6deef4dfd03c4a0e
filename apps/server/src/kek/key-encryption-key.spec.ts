import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KEK_LENGTH_BYTES, KeyEncryptionKey } from './key-encryption-key.js';

const fileSource = { kind: 'file', path: '/dev/null', generated: false } as const;
const keyBytes = (fill: number) => new Uint8Array(KEK_LENGTH_BYTES).fill(fill);

describe('KeyEncryptionKey', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-kek-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips data bound to the same associated data, with a fresh iv each time', async () => {
    const kek = await KeyEncryptionKey.fromBytes(keyBytes(1), fileSource);
    const secret = Buffer.from('a private key');
    const first = await kek.encrypt(secret, 'ca_keys/1/x509');
    const second = await kek.encrypt(secret, 'ca_keys/1/x509');
    expect(first.equals(second)).toBe(false);
    expect(first.includes(secret)).toBe(false);
    expect(await kek.decrypt(first, 'ca_keys/1/x509')).toEqual(secret);
    expect(await kek.decrypt(second, 'ca_keys/1/x509')).toEqual(secret);
  });

  it('refuses to decrypt with other associated data (a ciphertext moved to another row)', async () => {
    const kek = await KeyEncryptionKey.fromBytes(keyBytes(1), fileSource);
    const sealed = await kek.encrypt(Buffer.from('secret'), 'ca_keys/1/x509');
    await expect(kek.decrypt(sealed, 'ca_keys/2/x509')).rejects.toThrow(
      "kek: cannot decrypt data bound to 'ca_keys/2/x509' (wrong key-encryption key, altered data or data of another row)",
    );
  });

  it('refuses to decrypt with another key, altered data, or a truncated or unknown layout', async () => {
    const kek = await KeyEncryptionKey.fromBytes(keyBytes(1), fileSource);
    const other = await KeyEncryptionKey.fromBytes(keyBytes(2), fileSource);
    const sealed = await kek.encrypt(Buffer.from('secret'), 'aad');
    await expect(other.decrypt(sealed, 'aad')).rejects.toThrow(/^kek: cannot decrypt data bound to 'aad'/);
    const altered = Buffer.from(sealed);
    altered[altered.length - 1] ^= 1;
    await expect(kek.decrypt(altered, 'aad')).rejects.toThrow(/^kek: cannot decrypt/);
    await expect(kek.decrypt(sealed.subarray(0, 20), 'aad')).rejects.toThrow(
      'kek: sealed data must be at least 29 bytes, got 20',
    );
    const wrongVersion = Buffer.from(sealed);
    wrongVersion[0] = 9;
    await expect(kek.decrypt(wrongVersion, 'aad')).rejects.toThrow('kek: unsupported sealed data version 9');
  });

  it('rejects raw keys of the wrong length', async () => {
    await expect(KeyEncryptionKey.fromBytes(new Uint8Array(16), fileSource)).rejects.toThrow(
      'kek: must be 32 bytes, got 16',
    );
  });

  it('generates <data-dir>/kek.key with mode 0600 at first start and reuses it afterwards', async () => {
    const dataDir = join(dir, 'server');
    const first = await KeyEncryptionKey.load({ dataDir });
    const path = join(dataDir, 'kek.key');
    expect(first.source).toEqual({ kind: 'file', path, generated: true });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(Buffer.from((await readFile(path, 'utf8')).trim(), 'base64')).toHaveLength(32);

    const second = await KeyEncryptionKey.load({ dataDir });
    expect(second.source).toEqual({ kind: 'file', path, generated: false });
    const sealed = await first.encrypt(Buffer.from('secret'), 'aad');
    expect((await second.decrypt(sealed, 'aad')).toString()).toBe('secret');
  });

  it('prefers SIGIL_KEK over any file and describes its source without the key', async () => {
    const raw = Buffer.from(keyBytes(7));
    const kek = await KeyEncryptionKey.load({ kekBase64: raw.toString('base64'), dataDir: dir });
    expect(kek.source).toEqual({ kind: 'env', name: 'SIGIL_KEK' });
    expect(JSON.stringify(kek)).toBe('{"kind":"env","name":"SIGIL_KEK"}');
    const fromFile = join(dir, 'k');
    await writeFile(fromFile, raw.toString('base64'), { mode: 0o600 });
    const same = await KeyEncryptionKey.load({ dataDir: dir, kekFile: fromFile });
    expect((await same.decrypt(await kek.encrypt(Buffer.from('x'), 'a'), 'a')).toString()).toBe('x');
  });

  it.each([
    ['not base64', '!!!not-base64!!!', 'SIGIL_KEK: must be 32 bytes encoded in base64, found non-base64 characters'],
    ['too short', Buffer.alloc(16).toString('base64'), 'SIGIL_KEK: must be 32 bytes encoded in base64, got 16 bytes'],
    ['too long', Buffer.alloc(33).toString('base64'), 'SIGIL_KEK: must be 32 bytes encoded in base64, got 33 bytes'],
  ])('rejects SIGIL_KEK that is %s', async (_name, value, message) => {
    await expect(KeyEncryptionKey.load({ kekBase64: value, dataDir: dir })).rejects.toThrow(message);
  });

  it.each([
    [0o640, 'mode 0640'],
    [0o604, 'mode 0604'],
    [0o660, 'mode 0660'],
  ])('refuses a key file with permissions %o', async (mode, shown) => {
    const path = join(dir, 'kek.key');
    await writeFile(path, Buffer.alloc(32).toString('base64'));
    await chmod(path, mode);
    await expect(KeyEncryptionKey.load({ dataDir: dir })).rejects.toThrow(
      `kek file ${path}: must not be accessible by group or others (${shown}); run chmod 600 ${path}`,
    );
  });

  it('refuses a key file of the wrong length and a configured file that is missing', async () => {
    const path = join(dir, 'kek.key');
    await writeFile(path, Buffer.alloc(31).toString('base64'), { mode: 0o600 });
    await expect(KeyEncryptionKey.load({ dataDir: dir })).rejects.toThrow(
      `kek file ${path}: must be 32 bytes encoded in base64, got 31 bytes`,
    );
    const missing = join(dir, 'missing.key');
    await expect(KeyEncryptionKey.load({ dataDir: dir, kekFile: missing })).rejects.toThrow(
      `kek file ${missing}: cannot be read (ENOENT)`,
    );
  });
});
