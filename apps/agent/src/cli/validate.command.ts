import { Command, Option } from 'commander';
import { printResult } from '@sigil/runtime';
import { insecureBootstrapWarning } from '../config.js';
import { configFromOptions, runCommand, type RunOptions } from './run.command.js';

/**
 * `sigil-agent validate` (SPIRE's `spire-agent validate`): loads the configuration `run` would load, from the same
 * flags, SIGIL_AGENT_* environment and config file, and reports every bad key, without attesting or listening.
 */
export function validateCommand(): Command {
  const command = new Command('validate');
  // The same options as run, each defined once there.
  for (const option of runCommand().options) command.addOption(option);
  return command
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action((options: RunOptions & { output: 'text' | 'json' }) => {
      const warning = insecureBootstrapWarning(configFromOptions(options));
      if (warning !== undefined) process.stderr.write(`sigil-agent: WARNING: ${warning}\n`);
      printResult(options.output === 'json', { valid: true }, () => 'Agent configuration is valid.');
    });
}
