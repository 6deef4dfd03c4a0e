import { type Command, Option } from 'commander';
import { printResult } from '@sigil/runtime';
import { DEFAULT_ADMIN_SOCKET } from '../config.js';

export {
  AdminClient,
  type AdminResponse,
  CliError,
  collect,
  collectSelector,
  durationFlag,
  integerFlag,
  recordTable as table,
} from '@sigil/runtime';

export type OutputFormat = 'text' | 'json';

/** Options every admin subcommand shares. */
export interface AdminOptions {
  adminSocket: string;
  output: OutputFormat;
}

/** Adds `--admin-socket` (default as the server's, or `SIGIL_ADMIN_SOCKET`) and `--output`. */
export function withAdminOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--admin-socket <path>', 'local admin socket of the server')
        .env('SIGIL_ADMIN_SOCKET')
        .default(DEFAULT_ADMIN_SOCKET),
    )
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
}

/** Prints data as JSON (`--output json`) or as the text `render` gives. */
export function print(options: AdminOptions, data: unknown, render: () => string): void {
  printResult(options.output === 'json', data, render);
}
