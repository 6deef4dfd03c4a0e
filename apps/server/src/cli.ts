import { type LazyCommand, lazyProgram, runCli } from '@sigil/runtime/cli';
import type { Command } from 'commander';

/**
 * The subcommands of `sigil-server` (SPIRE's `spire-server` commands with `--kebab-case` flags), each module loaded
 * only when the command line names it: `--help` and the admin client commands never load NestJS, TypeORM or the
 * database drivers, which only `run` needs.
 */
const SERVER_COMMANDS: readonly LazyCommand[] = [
  {
    name: 'run',
    description: 'run the server (flags override SIGIL_* environment variables, which override the config file)',
    load: async () => (await import('./cli/run.command.js')).runCommand(),
  },
  {
    name: 'token',
    description: 'manage join tokens',
    load: async () => (await import('./cli/token.command.js')).tokenCommand(),
  },
  {
    name: 'entry',
    description: 'manage registration entries',
    load: async () => (await import('./cli/entry.command.js')).entryCommand(),
  },
  {
    name: 'agent',
    description: 'manage attested agents',
    load: async () => (await import('./cli/agent.command.js')).agentCommand(),
  },
  {
    name: 'bundle',
    description: 'show the trust bundle; manage the bundles of foreign trust domains',
    load: async () => (await import('./cli/bundle.command.js')).bundleCommand(),
  },
  {
    name: 'federation',
    description: 'manage federation relationships with foreign trust domains',
    load: async () => (await import('./cli/federation.command.js')).federationCommand(),
  },
  {
    name: 'healthcheck',
    description: 'check that the server is up and ready',
    load: async () => (await import('./cli/healthcheck.command.js')).healthcheckCommand(),
  },
  {
    name: 'admin-token',
    description: 'manage bearer admin tokens',
    load: async () => (await import('./cli/admin-token.command.js')).adminTokenCommand(),
  },
  {
    name: 'validate',
    description: 'check the configuration run would use (same flags, environment and file) without starting the server',
    load: async () => (await import('./cli/validate.command.js')).validateCommand(),
  },
  {
    name: 'logger',
    description: "get or change the running server's log level (in memory only)",
    load: async () => (await import('./cli/logger.command.js')).loggerCommand(),
  },
  {
    name: 'localauthority',
    description: "manage the server's own X.509 CA and JWT key (prepare, activate, taint, revoke)",
    load: async () => (await import('./cli/localauthority.command.js')).localAuthorityCommand(),
  },
  {
    name: 'x509',
    description: 'X509-SVIDs signed by the server (SPIRE x509)',
    load: async () => (await import('./cli/mint.command.js')).x509Command(),
  },
  {
    name: 'jwt',
    description: 'JWT-SVIDs signed by the server (SPIRE jwt)',
    load: async () => (await import('./cli/mint.command.js')).jwtCommand(),
  },
  {
    name: 'migrate',
    description:
      "apply this release's pending database migrations (same database options as run); --dry-run lists them",
    load: async () => (await import('./cli/database.command.js')).migrateCommand(),
  },
  {
    name: 'export',
    description:
      'write every row of the database (entries, agents, sealed CA keys, bundles, token hashes, …) to a JSON file',
    load: async () => (await import('./cli/database.command.js')).exportCommand(),
  },
  {
    name: 'import',
    description:
      'load a file written by sigil-server export into the configured database (new, or emptied with --force)',
    load: async () => (await import('./cli/database.command.js')).importCommand(),
  },
];

/**
 * The `sigil-server` command tree: with `argv`, only the subcommand it names is loaded (see `lazyProgram`);
 * without, the whole tree.
 */
export async function buildServerCli(argv?: readonly string[]): Promise<Command> {
  return lazyProgram(
    'sigil-server',
    'Sigil server: the SPIFFE certificate authority, registry and admin API',
    SERVER_COMMANDS,
    argv,
  );
}

/** Runs the CLI: failures print one line, `Error: <message>`, and set a non-zero exit code (see `runCli`). */
export async function runServerCli(argv: readonly string[]): Promise<void> {
  await runCli(await buildServerCli(argv), argv);
}
