import { runCli, SIGIL_VERSION } from '@sigil/runtime';
import { Command } from 'commander';
import { apiCommand } from './cli/api.command.js';
import { healthcheckCommand } from './cli/healthcheck.command.js';
import { loggerCommand } from './cli/logger.command.js';
import { runCommand } from './cli/run.command.js';
import { validateCommand } from './cli/validate.command.js';

/** The `sigil-agent` command tree (SPIRE's `spire-agent run|api|healthcheck` with `--kebab-case` flags). */
export function buildAgentCli(): Command {
  return new Command('sigil-agent')
    .description('Sigil agent: node attestation, SVID cache and the SPIFFE Workload API')
    .version(SIGIL_VERSION)
    .addCommand(runCommand())
    .addCommand(apiCommand())
    .addCommand(healthcheckCommand())
    .addCommand(validateCommand())
    .addCommand(loggerCommand());
}

/** Runs the CLI: failures print one line, `Error: <message>`, and set a non-zero exit code (see `runCli`). */
export async function runAgentCli(argv: readonly string[]): Promise<void> {
  await runCli(buildAgentCli(), argv);
}
