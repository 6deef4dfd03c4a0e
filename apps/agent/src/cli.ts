import { type LazyCommand, lazyProgram, runCli } from '@sigil/runtime/cli';
import type { Command } from 'commander';

/**
 * The subcommands of `sigil-agent` (SPIRE's `spire-agent run|api|healthcheck` with `--kebab-case` flags), each module
 * loaded only when the command line names it: `--help`, `api` and `healthcheck` never load the agent itself (its
 * attestors, Workload API server, NestJS).
 */
const AGENT_COMMANDS: readonly LazyCommand[] = [
  {
    name: 'run',
    description: 'run the agent (flags override SIGIL_AGENT_* environment variables, which override the config file)',
    load: async () => (await import('./cli/run.command.js')).runCommand(),
  },
  {
    name: 'api',
    description: 'call the SPIFFE Workload API of a running agent (with @sigil/workload-api)',
    load: async () => (await import('./cli/api.command.js')).apiCommand(),
  },
  {
    name: 'healthcheck',
    description: 'check that the agent serves the Workload API',
    load: async () => (await import('./cli/healthcheck.command.js')).healthcheckCommand(),
  },
  {
    name: 'validate',
    description: 'check the configuration run would use (same flags, environment and file) without starting the agent',
    load: async () => (await import('./cli/validate.command.js')).validateCommand(),
  },
  {
    name: 'logger',
    description: "get or change the running agent's log level (in memory only)",
    load: async () => (await import('./cli/logger.command.js')).loggerCommand(),
  },
];

/**
 * The `sigil-agent` command tree: with `argv`, only the subcommand it names is loaded (see `lazyProgram`);
 * without, the whole tree.
 */
export async function buildAgentCli(argv?: readonly string[]): Promise<Command> {
  return lazyProgram(
    'sigil-agent',
    'Sigil agent: node attestation, SVID cache and the SPIFFE Workload API',
    AGENT_COMMANDS,
    argv,
  );
}

/** Runs the CLI: failures print one line, `Error: <message>`, and set a non-zero exit code (see `runCli`). */
export async function runAgentCli(argv: readonly string[]): Promise<void> {
  await runCli(await buildAgentCli(argv), argv);
}
