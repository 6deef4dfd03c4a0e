import { Command } from 'commander';
import { apiCommand } from './cli/api.command.js';
import { CliError } from './cli/cli-error.js';
import { healthcheckCommand } from './cli/healthcheck.command.js';
import { runCommand } from './cli/run.command.js';

/** The `sigil-agent` command tree (SPIRE's `spire-agent run|api|healthcheck` with `--kebab-case` flags). */
export function buildAgentCli(): Command {
  return new Command('sigil-agent')
    .description('Sigil agent: node attestation, SVID cache and the SPIFFE Workload API')
    .version('0.1.0')
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(text) })
    .addCommand(runCommand())
    .addCommand(apiCommand())
    .addCommand(healthcheckCommand());
}

/**
 * Runs the CLI; failures print one line, `Error: <message>`, and set a non-zero exit code (the stack too with
 * SIGIL_DEBUG=1 for unexpected errors).
 */
export async function runAgentCli(argv: readonly string[]): Promise<void> {
  try {
    await buildAgentCli().parseAsync([...argv]);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`Error: ${message.split('\n')[0]}\n`);
    if (!(error instanceof CliError) && process.env['SIGIL_DEBUG'] === '1' && error instanceof Error) {
      process.stderr.write(`${error.stack}\n`);
    }
    process.exitCode = error instanceof CliError ? error.exitCode : 1;
  }
}
