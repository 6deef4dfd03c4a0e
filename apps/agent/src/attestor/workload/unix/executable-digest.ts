import { createHash } from 'node:crypto';
import { type BigIntStats } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { RateLimitedLog, ContextLogger } from '@sigil/logging';
import { type Clock, type Selector, systemClock } from '@sigil/runtime';

/** Default upper bound on the size of an executable we hash: larger files get no `unix:sha256` selector. */
export const DEFAULT_EXECUTABLE_SIZE_LIMIT = 128 * 1024 * 1024;

/** Default bytes of executables hashed for the callers of one uid per minute (four files at the size limit). */
export const DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE = 4 * DEFAULT_EXECUTABLE_SIZE_LIMIT;

const MAX_CACHED_DIGESTS = 1024;
const QUOTA_WINDOW_MS = 60_000;
// Quota windows of uids seen are kept; past this many, the expired ones are dropped.
const MAX_QUOTA_WINDOWS = 4096;

/** Whether `selector` is a `unix:sha256:HEX` selector, the one that needs an executable hashed. */
export function isUnixSha256Selector(selector: Selector): boolean {
  return selector.type === 'unix' && selector.value.startsWith('sha256:');
}

/** The `unix:sha256:HEX` selector of a digest. */
export function unixSha256Selector(hex: string): Selector {
  return { type: 'unix', value: `sha256:${hex}` };
}

// Read through one buffer: a read stream's 64 KiB chunks left a 127 MiB executable's worth of garbage per hash
// (bench/dos/sha256-rehash: the agent's RSS grew 76 MiB under four hashes a minute).
const HASH_READ_BYTES = 1024 * 1024;

/** Lowercase hex SHA-256 of an open file, read from its start through one 1 MiB buffer (never whole into memory). */
export async function sha256OfFile(file: FileHandle): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(HASH_READ_BYTES);
  for (let position = 0; ;) {
    const { bytesRead } = await file.read(buffer, 0, HASH_READ_BYTES, position);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest('hex');
}

export interface ExecutableDigestOptions {
  /** Largest executable hashed, in bytes (default {@link DEFAULT_EXECUTABLE_SIZE_LIMIT}). */
  readonly sizeLimitBytes?: number;
  /**
   * Bytes hashed for the callers of one uid per minute (default {@link DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE});
   * over it, that uid's callers get no `unix:sha256` selector until the minute is over.
   */
  readonly uidQuotaBytesPerMinute?: number;
  readonly clock?: Clock;
  /** Computes the digest of an open file (default {@link sha256OfFile}); tests count calls through it. */
  readonly hashFile?: (file: FileHandle) => Promise<string>;
  readonly logger?: Pick<ContextLogger, 'warn'>;
}

// Identifies one version of one file. ctime is included on top of (dev, inode, mtime, size) because mtime can be
// set back by anyone who may write the file (utimes), while ctime cannot be forged that way. A touch therefore
// makes a new version, which is why hashing is queued and charged to the caller's uid.
function fileVersionKey(stats: BigIntStats): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
}

type Digest =
  { readonly kind: 'sha256'; readonly hex: string } | { readonly kind: 'too_large' } | { readonly kind: 'changed' };

interface QuotaWindow {
  start: number;
  bytes: number;
}

function checkCount(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${name}: must be a non-negative integer, got ${value}`);
  }
  return value;
}

/**
 * SHA-256 digests of executables for the `unix:sha256` selector. The file is opened through `/proc/<pid>/exe`, so
 * the digest is of the very binary the process runs, even from another mount namespace or after the path was
 * replaced. Hashing costs a core for a large file and anyone who may write a file can make a new version of it
 * (`touch`), so the work is bounded: digests are cached by file version, concurrent requests for one version share
 * one hash, files are hashed one at a time (a queue), and the bytes hashed for the callers of one uid are limited
 * per minute. Over that quota the caller gets no digest, which can only make fewer entries match.
 */
export class ExecutableDigests {
  private readonly sizeLimitBytes: number;
  private readonly uidQuotaBytes: number;
  private readonly clock: Clock;
  private readonly hashFile: (file: FileHandle) => Promise<string>;
  private readonly logger: Pick<ContextLogger, 'warn'>;
  private readonly refusals: RateLimitedLog;
  // Insertion-ordered, so the oldest entry is evicted first once the cache is full.
  private readonly digests = new Map<string, Promise<Digest>>();
  private readonly quotas = new Map<number, QuotaWindow>();
  // The tail of the hashing queue: each hash starts once the one before it has settled.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: ExecutableDigestOptions = {}) {
    this.sizeLimitBytes = checkCount('sizeLimitBytes', options.sizeLimitBytes ?? DEFAULT_EXECUTABLE_SIZE_LIMIT);
    this.uidQuotaBytes = checkCount(
      'uidQuotaBytesPerMinute',
      options.uidQuotaBytesPerMinute ?? DEFAULT_UID_HASH_QUOTA_BYTES_PER_MINUTE,
    );
    this.clock = options.clock ?? systemClock;
    this.hashFile = options.hashFile ?? sha256OfFile;
    this.logger = options.logger ?? new ContextLogger(ExecutableDigests.name);
    const warn = (fields: object): void => this.logger.warn(fields);
    this.refusals = new RateLimitedLog(
      { warn, error: warn, log: warn },
      { linesPerInterval: 1, intervalMs: QUOTA_WINDOW_MS, now: () => this.clock.now().getTime() },
    );
  }

  /**
   * Lowercase hex SHA-256 of the file at `path` (typically `/proc/<pid>/exe`) for a caller of `uid`, or undefined
   * when the file is larger than the size limit, changed while it was being hashed, or hashing it would take `uid`
   * over its quota. Rejects when the file cannot be opened.
   */
  async sha256(path: string, uid: number): Promise<string | undefined> {
    const file = await open(path, 'r');
    try {
      const stats = await file.stat({ bigint: true });
      const key = fileVersionKey(stats);
      let digest = this.digests.get(key);
      if (digest === undefined) {
        if (stats.size > BigInt(this.sizeLimitBytes)) {
          // The result is cached like a digest, but a touch makes a new version: at most one line per uid and minute.
          this.refusals.warn(`too_large:${uid}`, {
            msg: `executable ${path} is ${stats.size} bytes, over the ${this.sizeLimitBytes}-byte limit: no unix:sha256 selector`,
            uid,
          });
          digest = Promise.resolve({ kind: 'too_large' });
        } else {
          if (!this.charge(uid, Number(stats.size))) return undefined;
          digest = this.enqueue(() => this.compute(file, stats, path, uid));
        }
        this.remember(key, digest);
      }
      const result = await digest;
      if (result.kind === 'changed' && this.digests.get(key) === digest) this.digests.delete(key);
      return result.kind === 'sha256' ? result.hex : undefined;
    } finally {
      await file.close();
    }
  }

  private enqueue(job: () => Promise<Digest>): Promise<Digest> {
    const run = this.queue.then(job);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async compute(file: FileHandle, stats: BigIntStats, path: string, uid: number): Promise<Digest> {
    // The file may have changed while the hash waited its turn: no need to read it then.
    if (await this.changedSince(file, stats, path, uid)) return { kind: 'changed' };
    const hex = await this.hashFile(file);
    if (await this.changedSince(file, stats, path, uid)) return { kind: 'changed' };
    return { kind: 'sha256', hex };
  }

  private async changedSince(file: FileHandle, stats: BigIntStats, path: string, uid: number): Promise<boolean> {
    const now = await file.stat({ bigint: true });
    if (fileVersionKey(now) === fileVersionKey(stats)) return false;
    // The caller's uid can make this happen at will (write while queued): at most one line per uid and minute.
    this.refusals.warn(`changed:${uid}`, {
      msg: `executable ${path} changed while it was being hashed: no unix:sha256 selector`,
      uid,
    });
    return true;
  }

  /** Charges `bytes` of hashing to `uid`; false (and a warning, at most one per uid and minute) when over quota. */
  private charge(uid: number, bytes: number): boolean {
    const now = this.clock.now().getTime();
    let window = this.quotas.get(uid);
    if (window === undefined || now - window.start >= QUOTA_WINDOW_MS || now < window.start) {
      window = { start: now, bytes: 0 };
      this.quotas.delete(uid);
      this.quotas.set(uid, window);
      this.dropExpiredWindows(now);
    }
    if (window.bytes + bytes <= this.uidQuotaBytes) {
      window.bytes += bytes;
      return true;
    }
    // One warning per uid and minute, then a count of the refusals not logged (a caller can repeat this at will).
    this.refusals.warn(`quota:${uid}`, {
      msg:
        `uid ${uid}: executables of ${window.bytes} bytes hashed in the last minute, a file of ${bytes} bytes more ` +
        `is over the ${this.uidQuotaBytes}-byte quota per uid and minute: no unix:sha256 selector until the minute ` +
        'is over',
      uid,
    });
    return false;
  }

  private dropExpiredWindows(now: number): void {
    if (this.quotas.size <= MAX_QUOTA_WINDOWS) return;
    for (const [uid, window] of this.quotas) {
      if (now - window.start >= QUOTA_WINDOW_MS) this.quotas.delete(uid);
    }
    // Insertion order is last-renewed first out: the oldest windows go when every uid is still current.
    for (const uid of this.quotas.keys()) {
      if (this.quotas.size <= MAX_QUOTA_WINDOWS) break;
      this.quotas.delete(uid);
    }
  }

  private remember(key: string, digest: Promise<Digest>): void {
    this.digests.set(key, digest);
    // A failed digest is not cached: the next call tries again.
    digest.catch(() => {
      if (this.digests.get(key) === digest) this.digests.delete(key);
    });
    if (this.digests.size > MAX_CACHED_DIGESTS) {
      const oldest = this.digests.keys().next().value;
      if (oldest !== undefined) this.digests.delete(oldest);
    }
  }
}
