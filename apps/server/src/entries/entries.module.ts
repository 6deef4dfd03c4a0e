import { Module } from '@nestjs/common';
import { Database } from '../database/database.js';
import { EntriesController } from './entries.controller.js';
import { EntriesRepository } from './entries.repository.js';
import { EntriesService } from './entries.service.js';
import { EntryChangeLogRepository } from './entry-change-log.repository.js';
import { EntryChangeLogService } from './entry-change-log.service.js';
import { EntryChangeNotifier, createEntryChangeNotifier } from './entry-change-notifier.js';
import { EntryPruner } from './entry-pruner.js';

/**
 * The registry: `/v1/entries`, gap-safe revisions, change notification and pruning. Exports the entries service,
 * the change log (for the agent API's sync), and the change notifier for the agents module (agent record changes
 * travel on its connection).
 */
@Module({
  controllers: [EntriesController],
  providers: [
    EntriesRepository,
    EntriesService,
    EntryChangeLogRepository,
    EntryChangeLogService,
    EntryPruner,
    {
      provide: EntryChangeNotifier,
      inject: [Database],
      useFactory: (database: Database) => createEntryChangeNotifier(database),
    },
  ],
  exports: [EntriesService, EntryChangeLogService, EntryChangeNotifier],
})
export class EntriesModule {}
