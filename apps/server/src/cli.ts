import { Command } from 'commander';

/** The `sigil-server` command tree. Subcommands register themselves here as their features land. */
export function buildServerCli(): Command {
  const program = new Command('sigil-server')
    .description('Sigil server: the SPIFFE certificate authority, registry and admin API')
    .version('0.1.0')
    .showHelpAfterError()
    .configureOutput({ outputError: (str, write) => write(str) });
  return program;
}
