import { createHash } from 'node:crypto';
import { mkdtemp, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExecutableDigests } from './executable-digest.js';

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('ExecutableDigests', () => {
  let dir: string;
  let file: string;
  let warnings: string[];
  const logger = { warn: (message: string) => void warnings.push(message) };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-digest-'));
    file = join(dir, 'program');
    warnings = [];
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hashes a file larger than one read chunk', async () => {
    const content = Buffer.alloc(200_000, 'a');
    content.write('distinct tail', 199_000);
    await writeFile(file, content);
    expect(await new ExecutableDigests({ logger }).sha256(file)).toBe(sha256(content));
  });

  it('hashes again when the file changes, even with mtime set back', async () => {
    const digests = new ExecutableDigests({ logger });
    await writeFile(file, 'version 1');
    const fixed = new Date('2020-01-01T00:00:00Z');
    await utimes(file, fixed, fixed);
    expect(await digests.sha256(file)).toBe(sha256('version 1'));
    await writeFile(file, 'version 2');
    await utimes(file, fixed, fixed);
    expect(await digests.sha256(file)).toBe(sha256('version 2'));
  });

  it('gives no digest for a file over the limit and warns once per file version', async () => {
    const digests = new ExecutableDigests({ sizeLimitBytes: 10, logger });
    await writeFile(file, '12345678901');
    expect(await digests.sha256(file)).toBeUndefined();
    expect(await digests.sha256(file)).toBeUndefined();
    expect(warnings).toEqual([`executable ${file} is 11 bytes, over the 10-byte limit: no unix:sha256 selector`]);
    await truncate(file, 10);
    expect(await digests.sha256(file)).toBe(sha256('1234567890'));
  });

  it('rejects a missing file', async () => {
    await expect(new ExecutableDigests({ logger }).sha256(join(dir, 'missing'))).rejects.toThrow(/ENOENT/);
  });

  it('rejects a negative size limit', () => {
    expect(() => new ExecutableDigests({ sizeLimitBytes: -1 })).toThrow(
      'sizeLimitBytes: must be a non-negative integer, got -1',
    );
  });
});
