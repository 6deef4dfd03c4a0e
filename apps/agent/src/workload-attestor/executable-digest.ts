import { createHash } from 'node:crypto';
import { type BigIntStats } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { Logger } from '@nestjs/common';

/** Default upper bound on the size of an executable we hash: larger files get no `unix:sha256` selector. */
export const DEFAULT_EXECUTABLE_SIZE_LIMIT = 128 * 1024 * 1024;

const MAX_CACHED_DIGESTS = 1024;

export interface ExecutableDigestOptions {
  /** Largest executable hashed, in bytes (default {@link DEFAULT_EXECUTABLE_SIZE_LIMIT}). */
  readonly sizeLimitBytes?: number;
  readonly logger?: Pick<Logger, 'warn'>;
}

// Identifies one version of one file. ctime is included on top of (dev, inode, mtime, size) because mtime can be
// set back by anyone who may write the file (utimes), while ctime cannot be forged that way.
function fileVersionKey(stats: BigIntStats): string {
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}`;
}

type Digest =
  { readonly kind: 'sha256'; readonly hex: string } | { readonly kind: 'too_large' } | { readonly kind: 'changed' };

/**
 * SHA-256 digests of executables for the `unix:sha256` selector. The file is opened through `/proc/<pid>/exe`, so
 * the digest is of the very binary the process runs, even from another mount namespace or after the path was
 * replaced. Digests are cached by file version and computed once per version even under concurrent calls; the
 * file is streamed, never read whole into memory.
 */
export class ExecutableDigests {
  private readonly sizeLimitBytes: number;
  private readonly logger: Pick<Logger, 'warn'>;
  // Insertion-ordered, so the oldest entry is evicted first once the cache is full.
  private readonly digests = new Map<string, Promise<Digest>>();

  constructor(options: ExecutableDigestOptions = {}) {
    this.sizeLimitBytes = options.sizeLimitBytes ?? DEFAULT_EXECUTABLE_SIZE_LIMIT;
    if (!Number.isSafeInteger(this.sizeLimitBytes) || this.sizeLimitBytes < 0) {
      throw new Error(`sizeLimitBytes: must be a non-negative integer, got ${this.sizeLimitBytes}`);
    }
    this.logger = options.logger ?? new Logger(ExecutableDigests.name);
  }

  /**
   * Lowercase hex SHA-256 of the file at `path` (typically `/proc/<pid>/exe`), or undefined when the file is larger
   * than the size limit or changed while it was being hashed. Rejects when the file cannot be opened.
   */
  async sha256(path: string): Promise<string | undefined> {
    const file = await open(path, 'r');
    try {
      const stats = await file.stat({ bigint: true });
      const key = fileVersionKey(stats);
      let digest = this.digests.get(key);
      if (digest === undefined) {
        digest = this.compute(file, stats, path);
        this.remember(key, digest);
      }
      const result = await digest;
      if (result.kind === 'changed' && this.digests.get(key) === digest) this.digests.delete(key);
      return result.kind === 'sha256' ? result.hex : undefined;
    } finally {
      await file.close();
    }
  }

  private async compute(file: FileHandle, stats: BigIntStats, path: string): Promise<Digest> {
    if (stats.size > BigInt(this.sizeLimitBytes)) {
      // Logged once per file version: the result is cached like a digest.
      this.logger.warn(
        `executable ${path} is ${stats.size} bytes, over the ${this.sizeLimitBytes}-byte limit: no unix:sha256 selector`,
      );
      return { kind: 'too_large' };
    }
    const hash = createHash('sha256');
    for await (const chunk of file.createReadStream({ start: 0, autoClose: false })) hash.update(chunk as Buffer);
    const after = await file.stat({ bigint: true });
    if (fileVersionKey(after) !== fileVersionKey(stats)) {
      this.logger.warn(`executable ${path} changed while it was being hashed: no unix:sha256 selector`);
      return { kind: 'changed' };
    }
    return { kind: 'sha256', hex: hash.digest('hex') };
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
