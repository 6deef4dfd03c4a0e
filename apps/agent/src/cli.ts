import { Command } from 'commander';

/** The `sigil-agent` command tree. Subcommands register themselves here as their features land. */
export function buildAgentCli(): Command {
  const program = new Command('sigil-agent')
    .description('Sigil agent: node attestation, SVID cache and the SPIFFE Workload API')
    .version('0.1.0')
    .showHelpAfterError();
  return program;
}
