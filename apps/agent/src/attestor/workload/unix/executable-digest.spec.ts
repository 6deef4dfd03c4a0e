import { createHash } from 'node:crypto';
import { type FileHandle, mkdtemp, rm, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ExecutableDigests, sha256OfFile } from './executable-digest.js';

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The real digest function, counting the files it hashes; `gate` (when set) holds each hash until released. */
function countingHash() {
  const hashed: FileHandle[] = [];
  let release: (() => void) | undefined;
  let gate: Promise<void> | undefined;
  return {
    hashed,
    hold(): void {
      gate = new Promise((resolve) => (release = resolve));
    },
    release(): void {
      release?.();
      gate = undefined;
    },
    hashFile: async (file: FileHandle): Promise<string> => {
      hashed.push(file);
      await gate;
      return sha256OfFile(file);
    },
  };
}

/**
 * A clock that counts its readings. ExecutableDigests reads it once per request that needs a hash, after the file's
 * stat and right before the hash is queued, so the count tells when a request is waiting in the queue.
 */
function countingClock(): { clock: { now(): Date }; queued(count: number): Promise<void> } {
  let readings = 0;
  return {
    clock: { now: () => (readings++, new Date()) },
    queued: (count) => vi.waitFor(() => expect(readings).toBeGreaterThanOrEqual(count), { timeout: 20_000 }),
  };
}

const MINUTE = 60_000;

describe('ExecutableDigests', () => {
  let dir: string;
  let file: string;
  let warnings: string[];
  const logger = {
    warn: (message: string | { msg: string }) =>
      void warnings.push(typeof message === 'string' ? message : message.msg),
  };

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
    expect(await new ExecutableDigests({ logger }).sha256(file, 1000)).toBe(sha256(content));
  });

  it('hashes again when the file changes, even with mtime set back', async () => {
    const digests = new ExecutableDigests({ logger });
    await writeFile(file, 'version 1');
    const fixed = new Date('2020-01-01T00:00:00Z');
    await utimes(file, fixed, fixed);
    expect(await digests.sha256(file, 1000)).toBe(sha256('version 1'));
    await writeFile(file, 'version 2');
    await utimes(file, fixed, fixed);
    expect(await digests.sha256(file, 1000)).toBe(sha256('version 2'));
  });

  it('gives no digest for a file over the limit and warns once per uid and minute, however often it is touched', async () => {
    const digests = new ExecutableDigests({ sizeLimitBytes: 10, logger });
    await writeFile(file, '12345678901');
    expect(await digests.sha256(file, 1000)).toBeUndefined();
    expect(await digests.sha256(file, 1000)).toBeUndefined();
    for (let touch = 1; touch <= 5; touch++) {
      const later = new Date(Date.UTC(2020, 0, 1) + touch * 1000);
      await utimes(file, later, later);
      expect(await digests.sha256(file, 1000)).toBeUndefined();
    }
    expect(warnings).toEqual([`executable ${file} is 11 bytes, over the 10-byte limit: no unix:sha256 selector`]);
    await truncate(file, 10);
    expect(await digests.sha256(file, 1000)).toBe(sha256('1234567890'));
  });

  it('rejects a missing file', async () => {
    await expect(new ExecutableDigests({ logger }).sha256(join(dir, 'missing'), 1000)).rejects.toThrow(/ENOENT/);
  });

  it('hashes a file once for concurrent requests of the same version', async () => {
    const hash = countingHash();
    const digests = new ExecutableDigests({ logger, hashFile: hash.hashFile });
    await writeFile(file, 'shared');
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => digests.sha256(file, 1000 + (i % 2))));
    expect(results).toEqual(Array.from({ length: 8 }, () => sha256('shared')));
    expect(hash.hashed).toHaveLength(1);
    expect(await digests.sha256(file, 1000)).toBe(sha256('shared'));
    expect(hash.hashed).toHaveLength(1);
  });

  it('hashes different files one after another, never two at once', async () => {
    const hash = countingHash();
    const { clock, queued } = countingClock();
    const digests = new ExecutableDigests({ logger, hashFile: hash.hashFile, clock });
    const other = join(dir, 'other');
    await writeFile(file, 'first');
    await writeFile(other, 'second');
    hash.hold();
    const first = digests.sha256(file, 1000);
    const second = digests.sha256(other, 1001);
    await queued(2);
    expect(hash.hashed).toHaveLength(1);
    hash.release();
    expect(await Promise.all([first, second])).toEqual([sha256('first'), sha256('second')]);
    expect(hash.hashed).toHaveLength(2);
  });

  it('stops hashing for a uid over its quota of bytes per minute, not for another uid, and logs it once', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const hash = countingHash();
    const digests = new ExecutableDigests({
      logger,
      hashFile: hash.hashFile,
      uidQuotaBytesPerMinute: 25,
      clock: { now: () => new Date(now) },
    });
    await writeFile(file, '0123456789');
    // touch: a new file version (mtime and ctime), so each one is hashed again and charged.
    let touches = 0;
    const touch = async (): Promise<void> => {
      const later = new Date(Date.UTC(2020, 0, 1) + ++touches * 1000);
      await utimes(file, later, later);
    };
    expect(await digests.sha256(file, 1000)).toBe(sha256('0123456789'));
    await touch();
    expect(await digests.sha256(file, 1000)).toBe(sha256('0123456789'));
    await touch();
    expect(await digests.sha256(file, 1000)).toBeUndefined();
    await touch();
    expect(await digests.sha256(file, 1000)).toBeUndefined();
    expect(hash.hashed).toHaveLength(2);
    expect(warnings).toEqual([
      `uid 1000: executables of 20 bytes hashed in the last minute, a file of 10 bytes more is over the ` +
        `25-byte quota per uid and minute: no unix:sha256 selector until the minute is over`,
    ]);
    // Another uid has its own quota, and a digest already held costs nothing.
    expect(await digests.sha256(file, 1001)).toBe(sha256('0123456789'));
    expect(await digests.sha256(file, 1000)).toBe(sha256('0123456789'));
    expect(hash.hashed).toHaveLength(3);

    now += MINUTE;
    await touch();
    expect(await digests.sha256(file, 1000)).toBe(sha256('0123456789'));
    expect(hash.hashed).toHaveLength(4);
    await touch();
    await digests.sha256(file, 1000);
    await touch();
    expect(await digests.sha256(file, 1000)).toBeUndefined();
    // The refusal not logged in the first minute is counted in one line, before the next warning.
    expect(warnings.slice(1)).toEqual([
      expect.stringMatching(/^log lines dropped: 1 more like "uid 1000: .*" within 60000 ms$/),
      expect.stringMatching(/^uid 1000: executables of 20 bytes hashed in the last minute/),
    ]);
  });

  it('does not hash a file that changed while it waited for its turn', async () => {
    const hash = countingHash();
    const { clock, queued: untilQueued } = countingClock();
    const digests = new ExecutableDigests({ logger, hashFile: hash.hashFile, clock });
    const other = join(dir, 'other');
    await writeFile(other, 'busy');
    await writeFile(file, 'version 1');
    hash.hold();
    const first = digests.sha256(other, 1000);
    // In this order: the two opens race in libuv's pool, and the held hash must be the other file's.
    await untilQueued(1);
    const queued = digests.sha256(file, 1000);
    await untilQueued(2);
    // Another size: timestamps are coarse (a clock tick), the size tells this version apart for sure.
    await writeFile(file, 'version 2 longer');
    hash.release();
    expect(await first).toBe(sha256('busy'));
    expect(await queued).toBeUndefined();
    expect(hash.hashed).toHaveLength(1);
    expect(warnings).toEqual([`executable ${file} changed while it was being hashed: no unix:sha256 selector`]);
  });

  it('rejects a negative size limit', () => {
    expect(() => new ExecutableDigests({ sizeLimitBytes: -1 })).toThrow(
      'sizeLimitBytes: must be a non-negative integer, got -1',
    );
    expect(() => new ExecutableDigests({ uidQuotaBytesPerMinute: 1.5 })).toThrow(
      'uidQuotaBytesPerMinute: must be a non-negative integer, got 1.5',
    );
  });
});
