import { Command } from 'commander';
import { AdminClient, type AdminOptions, durationFlag, print, table, withAdminOptions } from './admin-client.js';

interface JoinToken {
  id: string;
  token: string;
  expires_at: string;
  spiffe_id: string | null;
}

/** `sigil-server token generate`: a single-use join token for node attestation (SPIRE `token generate`). */
export function tokenCommand(): Command {
  const generate = withAdminOptions(new Command('generate'))
    .description('generate a single-use join token for an agent')
    .option('--spiffe-id <id>', 'SPIFFE ID the agent attesting with the token is also known by')
    .option(
      '--ttl <duration>',
      'time until the token expires, e.g. 10m (default: the server join token TTL)',
      durationFlag(1),
    )
    .action(async (options: AdminOptions & { spiffeId?: string; ttl?: number }) => {
      const client = new AdminClient(options.adminSocket);
      const { body } = await client.call('POST', '/v1/join-tokens', {
        ...(options.spiffeId !== undefined && { spiffe_id: options.spiffeId }),
        ...(options.ttl !== undefined && { ttl: options.ttl }),
      });
      const token = body as JoinToken;
      print(options, token, () =>
        table([
          ['Token', token.token],
          ['Expires at', token.expires_at],
          ...(token.spiffe_id ? [['SPIFFE ID', token.spiffe_id] as const] : []),
        ]),
      );
    });
  return new Command('token').addCommand(generate);
}
