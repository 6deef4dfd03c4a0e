import { runCli, SIGIL_VERSION } from '@sigil/runtime';
import { Command } from 'commander';
import { adminTokenCommand } from './cli/admin-token.command.js';
import { agentCommand } from './cli/agent.command.js';
import { bundleCommand } from './cli/bundle.command.js';
import { exportCommand, importCommand, migrateCommand } from './cli/database.command.js';
import { entryCommand } from './cli/entry.command.js';
import { healthcheckCommand } from './cli/healthcheck.command.js';
import { localAuthorityCommand } from './cli/localauthority.command.js';
import { loggerCommand } from './cli/logger.command.js';
import { jwtCommand, x509Command } from './cli/mint.command.js';
import { runCommand } from './cli/run.command.js';
import { tokenCommand } from './cli/token.command.js';
import { validateCommand } from './cli/validate.command.js';

/** The `sigil-server` command tree (SPIRE's `spire-server` commands with `--kebab-case` flags). */
export function buildServerCli(): Command {
  return new Command('sigil-server')
    .description('Sigil server: the SPIFFE certificate authority, registry and admin API')
    .version(SIGIL_VERSION)
    .addCommand(runCommand())
    .addCommand(tokenCommand())
    .addCommand(entryCommand())
    .addCommand(agentCommand())
    .addCommand(bundleCommand())
    .addCommand(healthcheckCommand())
    .addCommand(adminTokenCommand())
    .addCommand(validateCommand())
    .addCommand(loggerCommand())
    .addCommand(localAuthorityCommand())
    .addCommand(x509Command())
    .addCommand(jwtCommand())
    .addCommand(migrateCommand())
    .addCommand(exportCommand())
    .addCommand(importCommand());
}

/** Runs the CLI: failures print one line, `Error: <message>`, and set a non-zero exit code (see `runCli`). */
export async function runServerCli(argv: readonly string[]): Promise<void> {
  await runCli(buildServerCli(), argv);
}
