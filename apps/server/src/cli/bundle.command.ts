import { Command, Option } from 'commander';
import { AdminClient, type AdminOptions, withAdminOptions } from './admin-client.js';

/** `sigil-server bundle show [--format pem|spiffe]`: our trust bundle (SPIRE `bundle show`). */
export function bundleCommand(): Command {
  const show = withAdminOptions(new Command('show'))
    .description("show the server's own trust bundle")
    .addOption(
      new Option('--format <format>', 'pem certificates or the SPIFFE bundle (JWKS)')
        .choices(['pem', 'spiffe'])
        .default('pem'),
    )
    .action(async (options: AdminOptions & { format: 'pem' | 'spiffe' }) => {
      const client = new AdminClient(options.adminSocket);
      const { body, text } = await client.call('GET', `/v1/bundle?format=${options.format}`);
      if (options.output === 'json' || options.format === 'spiffe') {
        process.stdout.write(`${JSON.stringify(options.format === 'pem' ? { pem: text } : body, null, 2)}\n`);
      } else {
        process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      }
    });
  return new Command('bundle').description('show the trust bundle').addCommand(show);
}
