import { WorkloadApiError } from '@sigil/workload-api/client';
import { Command } from 'commander';
import { type ApiOptions, withClient, withWorkloadApiOptions } from './api.command.js';
import { CliError } from '@sigil/runtime/cli';
import { describeWorkloadError } from './workload-client.js';

/**
 * `sigil-agent healthcheck`: exit 0 when the agent's Workload API answers, through the API itself. A caller with no
 * identity is still an answer (PERMISSION_DENIED means the agent is up, synced and attesting callers); UNAVAILABLE
 * (not ready yet), a timeout or no socket are not.
 */
export function healthcheckCommand(): Command {
  return withWorkloadApiOptions(new Command('healthcheck')).action(async (options: ApiOptions) => {
    await withClient(options, async (client, signal, address) => {
      try {
        await client.fetchX509Bundles({ signal });
      } catch (error) {
        if (!(error instanceof WorkloadApiError && error.status === 'permission_denied')) {
          throw new CliError(`agent is unhealthy: ${describeWorkloadError(error, address, options.timeout)}`);
        }
      }
      process.stdout.write(
        options.output === 'json' ? `${JSON.stringify({ healthy: true, address })}\n` : 'Agent is healthy.\n',
      );
    });
  });
}
