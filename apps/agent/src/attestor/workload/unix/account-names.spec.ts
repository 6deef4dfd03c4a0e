import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { AccountNames } from './account-names.js';

const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** What `getent(1)` (the C library's own NSS client) answers for an id, as the expected value. */
function getent(database: 'passwd' | 'group', id: number): string | undefined {
  try {
    return execFileSync('getent', [database, String(id)], { encoding: 'utf8' }).split(':')[0];
  } catch {
    return undefined;
  }
}

function freeId(database: 'passwd' | 'group'): number {
  for (let id = 3_999_999_000; ; id++) if (getent(database, id) === undefined) return id;
}

describe('AccountNames (getpwuid_r / getgrgid_r through koffi)', () => {
  it('names root and nobody as NSS does', async () => {
    const names = new AccountNames();
    expect(await names.userName(0)).toBe('root');
    expect(await names.groupName(0)).toBe('root');
    expect(await names.userName(NOBODY)).toBe(getent('passwd', NOBODY));
    expect(await names.groupName(NOBODY)).toBe(getent('group', NOBODY));
  });

  it('yields no name for ids no source knows, and for ids that are not ids', async () => {
    const names = new AccountNames();
    expect(await names.userName(freeId('passwd'))).toBeUndefined();
    expect(await names.groupName(freeId('group'))).toBeUndefined();
    expect(await names.userName(-1)).toBeUndefined();
    expect(await names.userName(2 ** 32)).toBeUndefined();
  });

  it('retries with a larger buffer on ERANGE, up to the bound', async () => {
    // nobody's passwd entry (name, password, gecos, home, shell) needs far more than 8 bytes of strings.
    const growing = new AccountNames({ initialBufferBytes: 8 });
    expect(await growing.userName(NOBODY)).toBe(getent('passwd', NOBODY));
    expect(await growing.groupName(0)).toBe('root');
    const bounded = new AccountNames({ initialBufferBytes: 8, maxBufferBytes: 16 });
    expect(await bounded.userName(NOBODY)).toBeUndefined();
  });

  it('shares one lookup among concurrent callers', async () => {
    const names = new AccountNames();
    const answers = await Promise.all(Array.from({ length: 50 }, () => names.userName(0)));
    expect(new Set(answers)).toEqual(new Set(['root']));
  });

  describe.skipIf(!isRoot)('a user created on this machine', () => {
    const suffix = randomBytes(4).toString('hex');
    const user = `sigil-u-${suffix}`;
    const group = `sigil-g-${suffix}`;
    let created = false;

    afterAll(() => {
      if (!created) return;
      execFileSync('userdel', [user]);
      execFileSync('groupdel', [group]);
    });

    it('names a user and group added with useradd/groupadd, and forgets them after the TTL once deleted', async () => {
      execFileSync('groupadd', [group]);
      execFileSync('useradd', ['--no-create-home', '--gid', group, user]);
      created = true;
      const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }));
      const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }));
      let now = 0;
      const names = new AccountNames({ ttlMs: 1000, now: () => now });
      expect(await names.userName(uid)).toBe(user);
      expect(await names.groupName(gid)).toBe(group);

      execFileSync('userdel', [user]);
      execFileSync('groupdel', [group]);
      created = false;
      now = 999;
      expect(await names.userName(uid)).toBe(user);
      now = 1000;
      expect(await names.userName(uid)).toBeUndefined();
      expect(await names.groupName(gid)).toBeUndefined();
    });
  });

  it.skipIf(isRoot)('names a user created on this machine (skipped: needs root to run useradd)', () => {});
});
