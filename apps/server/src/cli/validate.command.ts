import { Command, Option } from 'commander';
import { printResult } from '@sigil/runtime';
import { configFromOptions, runCommand, type RunOptions } from './run.command.js';

/**
 * `sigil-server validate` (SPIRE's `spire-server validate`): loads the configuration `run` would load, from the same
 * flags, SIGIL_* environment and config file, and reports every bad key, without opening the database or listening.
 */
export function validateCommand(): Command {
  const command = new Command('validate');
  // The same options as run, each defined once there.
  for (const option of runCommand().options) command.addOption(option);
  return command
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action((options: RunOptions & { output: 'text' | 'json' }) => {
      const config = configFromOptions(options);
      printResult(
        options.output === 'json',
        { valid: true, trust_domain: config.trustDomain.name },
        () => 'Server configuration is valid.',
      );
    });
}
