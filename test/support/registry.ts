import type { DataSource } from 'typeorm';
import type { Clock } from '../../apps/server/src/common/clock.js';
import type { ServerConfig } from '../../apps/server/src/config.js';
import { EntriesRepository } from '../../apps/server/src/entries/entries.repository.js';
import { EntriesService } from '../../apps/server/src/entries/entries.service.js';
import { EntryChangeLogRepository } from '../../apps/server/src/entries/entry-change-log.repository.js';
import { EntryChangeLogService } from '../../apps/server/src/entries/entry-change-log.service.js';
import type { EntryChangeNotifier } from '../../apps/server/src/entries/entry-change-notifier.js';

/** One replica's registry on `dataSource`, wired as EntriesModule wires it: the entries service and its change log. */
export function createRegistry(
  dataSource: DataSource,
  notifier: EntryChangeNotifier,
  config: Pick<ServerConfig, 'trustDomain'>,
  clock: Clock,
): { entries: EntriesService; changeLog: EntryChangeLogService } {
  const repository = new EntriesRepository(dataSource);
  const changeLog = new EntryChangeLogService(new EntryChangeLogRepository(dataSource), repository, notifier);
  return { entries: new EntriesService(repository, changeLog, config, clock), changeLog };
}
