import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { CLOCK, type Clock } from '../common/clock.js';
import { EntriesService } from './entries.service.js';
import { EntryChangeLogService } from './entry-change-log.service.js';

/** How often expired entries and old change-log rows are pruned. */
export const PRUNE_INTERVAL_MS = 60_000;
/** Change-log rows are kept this long; a reader further behind resynchronises in full. */
export const CHANGE_LOG_RETENTION_MS = 24 * 3600 * 1000;

/** Prunes expired entries and old change-log rows once a minute (every replica; the counter lock serialises). */
@Injectable()
export class EntryPruner implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger(EntryPruner.name);
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly entries: EntriesService,
    private readonly changeLog: EntryChangeLogService,
    @Inject(CLOCK) private readonly clock: Clock,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => {
      this.running ??= this.prune().finally(() => (this.running = undefined));
    }, PRUNE_INTERVAL_MS);
    this.timer.unref();
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** One pruning pass; failures are logged, the next pass tries again. */
  async prune(): Promise<void> {
    const now = this.clock.now();
    try {
      const expired = await this.entries.pruneExpired(now);
      if (expired.length > 0) this.logger.log({ msg: 'expired entries pruned', count: expired.length });
      await this.changeLog.pruneChangeLog(new Date(now.getTime() - CHANGE_LOG_RETENTION_MS));
    } catch (error) {
      this.logger.warn({ msg: 'pruning entries failed', err: error });
    }
  }
}
