import { type Command } from 'commander';
import { LOG_LEVELS } from '@sigil/logging';
import { loggerCommand as buildLoggerCommand } from '@sigil/runtime';
import { AdminClient, type AdminOptions, withAdminOptions } from './admin-client.js';

/** `sigil-server logger get|set|reset` (SPIRE's): the running server's log level, changed in memory only. */
export function loggerCommand(): Command {
  return buildLoggerCommand<AdminOptions>({
    service: 'server',
    levels: LOG_LEVELS,
    withOptions: withAdminOptions,
    client: (options) => new AdminClient(options.adminSocket),
  });
}
