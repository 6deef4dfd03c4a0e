import { Command, InvalidArgumentError } from 'commander';
import { formatSelector, type Selector } from '@sigil/runtime';
import {
  AdminClient,
  type AdminOptions,
  collectSelector,
  durationFlag,
  integerFlag,
  print,
  table,
  withAdminOptions,
} from './admin-client.js';

interface Agent {
  spiffe_id: string;
  attestation_type: string;
  serial_number: string;
  svid_expires_at: string;
  new_serial_number: string | null;
  new_svid_expires_at: string | null;
  selectors: { type: string; value: string }[];
  banned: boolean;
  can_reattest: boolean;
  last_seen_at: string | null;
}

function describe(agent: Agent): string {
  return table([
    ['SPIFFE ID', agent.spiffe_id],
    ['Attestation type', agent.attestation_type],
    ['Expiration time', agent.svid_expires_at],
    ['Serial number', agent.serial_number],
    ['Pending serial number', agent.new_serial_number ?? 'none'],
    ...(agent.new_svid_expires_at === null ? [] : [['Pending expiration time', agent.new_svid_expires_at] as const]),
    ['Banned', String(agent.banned)],
    ['Can re-attest', String(agent.can_reattest)],
    ['Last seen', agent.last_seen_at ?? 'never'],
    ...agent.selectors.map((selector) => ['Selector', formatSelector(selector)] as const),
  ]);
}

const agentPath = (spiffeId: string): string => `/v1/agents/${encodeURIComponent(spiffeId)}`;

interface FilterOptions {
  attestationType?: string;
  selector?: Selector[];
  banned?: boolean;
  expiresBefore?: string;
  canReattest?: boolean;
}

/** `--expires-before` as SPIRE takes it (`2026-01-31`, a date) or as an RFC 3339 time; sent as RFC 3339. */
function parseTime(value: string): string {
  const date = /^\d{4}-\d{2}-\d{2}$/.test(value) ? new Date(`${value}T00:00:00Z`) : new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
    throw new InvalidArgumentError('must be a date (YYYY-MM-DD) or an RFC 3339 time');
  }
  return date.toISOString();
}

function filterQuery(options: FilterOptions, extra: Record<string, string> = {}): string {
  const query = new URLSearchParams(extra);
  if (options.attestationType !== undefined) query.set('attestation_type', options.attestationType);
  if (options.banned) query.set('banned', 'true');
  if (options.expiresBefore !== undefined) query.set('expires_before', options.expiresBefore);
  if (options.canReattest) query.set('can_reattest', 'true');
  for (const selector of options.selector ?? []) query.append('selector', formatSelector(selector));
  const text = query.toString();
  return text ? `?${text}` : '';
}

function withFilters(command: Command): Command {
  return command
    .option('--attestation-type <type>', 'only agents attested this way (join_token, x509pop, k8s_psat)')
    .option('--selector <type:value>', 'only agents with this selector (repeatable; all must match)', collectSelector)
    .option('--banned', 'only banned agents')
    .option('--expires-before <time>', 'only agents whose SVID expires before this date or time (UTC)', parseTime)
    .option('--can-reattest', 'only agents that can attest again under the same ID');
}

/** `sigil-server agent list|show|evict|ban|count|purge` (SPIRE `agent …`). */
export function agentCommand(): Command {
  const list = withFilters(withAdminOptions(new Command('list')))
    .description('list attested agents')
    .option('--page-size <n>', 'agents per request', integerFlag(1, 500), 500)
    .action(async (options: AdminOptions & FilterOptions & { pageSize: number }) => {
      const client = new AdminClient(options.adminSocket);
      const agents: Agent[] = [];
      let pageToken: string | undefined;
      do {
        const extra: Record<string, string> = { page_size: String(options.pageSize) };
        if (pageToken) extra['page_token'] = pageToken;
        const { body } = await client.call('GET', `/v1/agents${filterQuery(options, extra)}`);
        const page = body as { agents: Agent[]; next_page_token?: string };
        agents.push(...page.agents);
        pageToken = page.next_page_token;
      } while (pageToken);
      print(options, { agents }, () =>
        agents.length === 0
          ? 'No attested agents found'
          : [`Found ${agents.length} attested agent${agents.length === 1 ? '' : 's'}:`, ...agents.map(describe)].join(
              '\n\n',
            ),
      );
    });

  const show = withAdminOptions(new Command('show'))
    .description('show one attested agent')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID of the agent')
    .action(async (options: AdminOptions & { spiffeId: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', agentPath(options.spiffeId));
      print(options, body, () => describe(body as Agent));
    });

  const evict = withAdminOptions(new Command('evict'))
    .description('evict an agent: it must attest again (this also lifts a ban)')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID of the agent')
    .action(async (options: AdminOptions & { spiffeId: string }) => {
      await new AdminClient(options.adminSocket).call('DELETE', agentPath(options.spiffeId));
      print(options, { evicted: options.spiffeId }, () => 'Agent evicted successfully');
    });

  const ban = withAdminOptions(new Command('ban'))
    .description('ban an agent: every call it makes is refused until it is evicted')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID of the agent')
    .action(async (options: AdminOptions & { spiffeId: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('POST', `${agentPath(options.spiffeId)}/ban`);
      print(options, body, () => 'Agent banned successfully');
    });

  const count = withFilters(withAdminOptions(new Command('count')))
    .description('count attested agents')
    .action(async (options: AdminOptions & FilterOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call(
        'GET',
        `/v1/agents/count${filterQuery(options)}`,
      );
      const { count: total } = body as { count: number };
      print(options, body, () => `${total} attested agent${total === 1 ? '' : 's'}`);
    });

  const purge = withAdminOptions(new Command('purge'))
    .description(
      'remove agents whose SVID expired long ago and that can attest again (banned and join_token agents are kept)',
    )
    .option(
      '--expired-for <duration>',
      'time since the agent SVID expired, e.g. 720h or 30d',
      durationFlag(0),
      30 * 86400,
    )
    .option('--dry-run', 'only list the agents that would be removed')
    .action(async (options: AdminOptions & { expiredFor: number; dryRun?: boolean }) => {
      const { body } = await new AdminClient(options.adminSocket).call('POST', '/v1/agents/purge', {
        expired_for: options.expiredFor,
        dry_run: options.dryRun === true,
      });
      const agents = (body as { expired_agents: { agent_id: string; deleted: boolean }[] }).expired_agents;
      print(options, body, () => {
        if (agents.length === 0) return 'No agents to purge.';
        const lines = [`Found ${agents.length} expired agent${agents.length === 1 ? '' : 's'}`, ''];
        lines.push(options.dryRun ? 'Agents that can be purged:' : 'Agents purged:');
        for (const agent of agents) lines.push(table([['SPIFFE ID', agent.agent_id]]));
        return lines.join('\n');
      });
    });

  return new Command('agent')
    .addCommand(list)
    .addCommand(show)
    .addCommand(evict)
    .addCommand(ban)
    .addCommand(count)
    .addCommand(purge);
}
