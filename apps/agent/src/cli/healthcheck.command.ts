import { Code, ConnectError } from '@connectrpc/connect';
import { Command } from 'commander';
import { type ApiOptions, withConnection, withWorkloadApiOptions } from './api.command.js';
import { CliError } from './cli-error.js';
import { describeRpcError } from './workload-client.js';

/**
 * `sigil-agent healthcheck`: exit 0 when the agent's Workload API answers, through the API itself. A caller with no
 * identity is still an answer (PERMISSION_DENIED means the agent is up, synced and attesting callers); UNAVAILABLE
 * (not ready yet), a timeout or no socket are not.
 */
export function healthcheckCommand(): Command {
  return withWorkloadApiOptions(new Command('healthcheck'))
    .description('check that the agent serves the Workload API')
    .action(async (options: ApiOptions) => {
      await withConnection(options, async ({ client, address }) => {
        try {
          for await (const _ of client.fetchX509Bundles({}, { timeoutMs: options.timeout * 1000 })) break;
        } catch (error) {
          if (ConnectError.from(error).code !== Code.PermissionDenied) {
            throw new CliError(`agent is unhealthy: ${describeRpcError(error, address)}`);
          }
        }
        process.stdout.write(
          options.output === 'json' ? `${JSON.stringify({ healthy: true, address })}\n` : 'Agent is healthy.\n',
        );
      });
    });
}
