import { Command, Option } from 'commander';
import { LOG_LEVELS } from '@sigil/logging';
import { AdminClient, type AdminOptions, print, table, withAdminOptions } from './admin-client.js';

interface LoggerLevels {
  current_level: string;
  launch_level: string;
}

function describe(levels: LoggerLevels): string {
  return table([
    ['Logger Level', levels.current_level],
    ['Launch Level', levels.launch_level],
  ]);
}

/** `sigil-server logger get|set|reset` (SPIRE's): the running server's log level, changed in memory only. */
export function loggerCommand(): Command {
  const get = withAdminOptions(new Command('get'))
    .description("show the server's current and launch log levels")
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', '/v1/logger');
      print(options, body, () => describe(body as LoggerLevels));
    });

  const set = withAdminOptions(new Command('set'))
    .description("set the server's log level until it restarts (or logger reset)")
    .addOption(new Option('--level <level>', 'the new log level').choices(LOG_LEVELS).makeOptionMandatory())
    .action(async (options: AdminOptions & { level: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('PUT', '/v1/logger', { level: options.level });
      print(options, body, () => describe(body as LoggerLevels));
    });

  const reset = withAdminOptions(new Command('reset'))
    .description("set the server's log level back to the launch level")
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('DELETE', '/v1/logger');
      print(options, body, () => describe(body as LoggerLevels));
    });

  return new Command('logger')
    .description("get or change the running server's log level (in memory only)")
    .addCommand(get)
    .addCommand(set)
    .addCommand(reset);
}
