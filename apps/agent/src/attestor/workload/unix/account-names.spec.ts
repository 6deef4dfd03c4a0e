import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AccountNames, parseAccountFile } from './account-names.js';

describe('parseAccountFile', () => {
  it('maps ids to names, first line wins, skipping comments and malformed lines', () => {
    const text = [
      '# comment',
      'root:x:0:0:root:/root:/bin/bash',
      'toor:x:0:0:second root:/root:/bin/sh',
      'broken line',
      'noid:x::0::/:/bin/false',
      'svc:x:1001:1001::/home/svc:/bin/sh',
      '',
    ].join('\n');
    expect([...parseAccountFile(text)]).toEqual([
      [0, 'root'],
      [1001, 'svc'],
    ]);
  });
});

describe('AccountNames', () => {
  let dir: string;
  let passwd: string;
  let group: string;
  let now: number;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-accounts-'));
    passwd = join(dir, 'passwd');
    group = join(dir, 'group');
    await writeFile(passwd, 'alice:x:1000:1000::/home/alice:/bin/sh\n');
    await writeFile(group, 'staff:x:50:alice\n');
    now = 0;
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names users and groups and returns undefined for unknown ids', async () => {
    const names = new AccountNames({ passwdPath: passwd, groupPath: group });
    expect(await names.userName(1000)).toBe('alice');
    expect(await names.groupName(50)).toBe('staff');
    expect(await names.userName(4242)).toBeUndefined();
  });

  it('reuses a read within the TTL and rereads after it', async () => {
    const names = new AccountNames({ passwdPath: passwd, groupPath: group, ttlMs: 1000, now: () => now });
    expect(await names.userName(1000)).toBe('alice');
    await writeFile(passwd, 'bob:x:1000:1000::/home/bob:/bin/sh\n');
    now = 999;
    expect(await names.userName(1000)).toBe('alice');
    now = 1000;
    expect(await names.userName(1000)).toBe('bob');
  });

  it('yields no names when the files are missing', async () => {
    const names = new AccountNames({ passwdPath: join(dir, 'none'), groupPath: join(dir, 'none') });
    expect(await names.userName(0)).toBeUndefined();
    expect(await names.groupName(0)).toBeUndefined();
  });
});
