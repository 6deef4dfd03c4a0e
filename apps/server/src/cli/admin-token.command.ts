import { Command } from 'commander';
import { AdminClient, type AdminOptions, durationFlag, print, table, withAdminOptions } from './admin-client.js';

interface AdminToken {
  name: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  token?: string;
}

/**
 * `sigil-server admin-token create|list|revoke`: bearer tokens for the admin API over TCP (SPIRE has none; its
 * remote admins use X509-SVIDs). Managed only through the local admin socket.
 */
export function adminTokenCommand(): Command {
  const create = withAdminOptions(new Command('create'))
    .description('create a bearer admin token; it is printed once and only its hash is stored')
    .requiredOption('--name <name>', 'unique name, recorded as the actor in the audit log')
    .option('--ttl <duration>', 'time until it expires, e.g. 30d or 720h (default: never)', durationFlag(1))
    .action(async (options: AdminOptions & { name: string; ttl?: number }) => {
      const { body } = await new AdminClient(options.adminSocket).call('POST', '/v1/admin-tokens', {
        name: options.name,
        ...(options.ttl !== undefined && { ttl: options.ttl }),
      });
      const token = body as AdminToken;
      print(options, token, () =>
        table([
          ['Name', token.name],
          ['Token', token.token ?? ''],
          ['Expires at', token.expires_at ?? 'never'],
        ]),
      );
    });

  const list = withAdminOptions(new Command('list'))
    .description('list admin tokens (names and dates; the tokens themselves are not stored)')
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', '/v1/admin-tokens');
      const tokens = (body as { admin_tokens: AdminToken[] }).admin_tokens;
      print(options, body, () =>
        tokens.length === 0
          ? 'No admin tokens'
          : tokens
              .map((token) =>
                table([
                  ['Name', token.name],
                  ['Created at', token.created_at],
                  ['Expires at', token.expires_at ?? 'never'],
                  ['Last used', token.last_used_at ?? 'never'],
                ]),
              )
              .join('\n\n'),
      );
    });

  const revoke = withAdminOptions(new Command('revoke'))
    .description('revoke an admin token')
    .requiredOption('--name <name>', 'name of the token')
    .action(async (options: AdminOptions & { name: string }) => {
      await new AdminClient(options.adminSocket).call('DELETE', `/v1/admin-tokens/${encodeURIComponent(options.name)}`);
      print(options, { revoked: options.name }, () => 'Admin token revoked');
    });

  return new Command('admin-token').addCommand(create).addCommand(list).addCommand(revoke);
}
