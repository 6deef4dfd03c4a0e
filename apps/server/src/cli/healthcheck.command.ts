import { Command } from 'commander';
import { AdminClient, type AdminOptions, CliError, print, withAdminOptions } from './admin-client.js';

/** `sigil-server healthcheck`: exit 0 when the server is ready (SPIRE `healthcheck`). */
export function healthcheckCommand(): Command {
  return withAdminOptions(new Command('healthcheck'))
    .option('--shallow', 'only check that the server is up, not that it is ready')
    .action(async (options: AdminOptions & { shallow?: boolean }) => {
      const client = new AdminClient(options.adminSocket);
      try {
        const { body } = await client.call('GET', options.shallow ? '/healthz' : '/readyz');
        print(options, body, () => 'Server is healthy.');
      } catch (error) {
        if (error instanceof CliError) throw new CliError(`server is unhealthy: ${error.message}`);
        throw error;
      }
    });
}
