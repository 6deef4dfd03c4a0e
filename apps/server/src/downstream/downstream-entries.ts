import { Inject, Injectable, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { CLOCK, type Clock } from '../common/clock.js';
import { EntriesService } from '../entries/entries.service.js';
import { EntryChangeLogService } from '../entries/entry-change-log.service.js';

/**
 * How long an answer is kept without a change notification. Notifications are hints that can be lost (a dropped
 * LISTEN connection), so an answer is also read again after this long.
 */
export const DOWNSTREAM_CACHE_TTL_MS = 5_000;
const MAX_CACHED = 10_000;
/** More downstream entries than this for one SPIFFE ID are not expected; the first page decides. */
const PAGE_SIZE = 100;

interface Answer {
  /** Until when (epoch ms) the SPIFFE ID has an unexpired downstream entry; 0: it has none. */
  readonly downstreamUntilMs: number;
  readonly readAtMs: number;
}

/**
 * Whether a SPIFFE ID has a registration entry with `downstream: true` (and that entry has not expired). PostgreSQL
 * is the source of truth: answers are cached per SPIFFE ID, dropped on every registry change notification (from
 * any replica) and after {@link DOWNSTREAM_CACHE_TTL_MS}.
 */
@Injectable()
export class DownstreamEntries implements OnModuleInit, OnApplicationShutdown {
  private readonly cache = new Map<string, Answer>();
  /** Bumped on every change: an answer read while a change came in is not kept. */
  private generation = 0;
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly entries: EntriesService,
    private readonly changeLog: EntryChangeLogService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  onModuleInit(): void {
    this.unsubscribe = this.changeLog.subscribe(() => {
      this.generation += 1;
      this.cache.clear();
    });
  }

  onApplicationShutdown(): void {
    this.unsubscribe?.();
  }

  async isDownstream(spiffeId: string): Promise<boolean> {
    const now = this.clock.now().getTime();
    let answer = this.cache.get(spiffeId);
    if (answer === undefined || now - answer.readAtMs >= DOWNSTREAM_CACHE_TTL_MS) {
      const generation = this.generation;
      answer = await this.read(spiffeId, now);
      if (generation === this.generation) {
        if (this.cache.size >= MAX_CACHED) this.cache.clear();
        this.cache.set(spiffeId, answer);
      }
    }
    return now < answer.downstreamUntilMs;
  }

  private async read(spiffeId: string, now: number): Promise<Answer> {
    const { entries } = await this.entries.listEntries({ spiffeId, downstream: true }, { pageSize: PAGE_SIZE });
    const until = Math.max(
      0,
      ...entries.map((entry) => (entry.expiresAt === null ? Number.POSITIVE_INFINITY : entry.expiresAt.getTime())),
    );
    return { downstreamUntilMs: until, readAtMs: now };
  }
}
