import { type Command, Option } from 'commander';
import { LOG_LEVELS } from '@sigil/logging';
import { AdminClient, loggerCommand as buildLoggerCommand } from '@sigil/runtime';

/** Where `sigil-agent logger` looks for the admin socket by default (SPIRE's `/tmp/spire-agent/private/admin.sock`). */
export const DEFAULT_AGENT_ADMIN_SOCKET = '/tmp/sigil-agent/private/admin.sock';

interface AgentAdminOptions {
  adminSocketPath: string;
  output: 'text' | 'json';
}

function withAgentAdminOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--admin-socket-path <path>', "the agent's admin socket (its run --admin-socket-path)")
        .env('SIGIL_AGENT_ADMIN_SOCKET_PATH')
        .default(DEFAULT_AGENT_ADMIN_SOCKET),
    )
    .addOption(new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'));
}

/**
 * `sigil-agent logger get|set|reset` (SPIRE's): the running agent's log level, changed in memory only, through the
 * admin socket the agent serves when started with `--admin-socket-path`.
 */
export function loggerCommand(): Command {
  return buildLoggerCommand<AgentAdminOptions>({
    service: 'agent',
    levels: LOG_LEVELS,
    withOptions: withAgentAdminOptions,
    client: (options) => new AdminClient(options.adminSocketPath, 'agent'),
  });
}
