import { Command, InvalidArgumentError } from 'commander';
import { formatSelector } from '@sigil/runtime';
import {
  AdminClient,
  type AdminOptions,
  CliError,
  collect,
  collectSelector,
  durationFlag,
  print,
  table,
  withAdminOptions,
} from './admin-client.js';
import type { SyncEntryWire } from '@sigil/agent-api';

/** An entry as the admin API answers it: the agent API's sync entry plus `updated_at` (one definition of the keys). */
type Entry = SyncEntryWire & { updated_at: string };

interface BatchResult {
  status: { code: string; message: string };
  entry?: Entry;
}

interface EntryFieldOptions {
  spiffeId?: string;
  parentId?: string;
  selector?: { type: string; value: string }[];
  x509SvidTtl?: number;
  jwtSvidTtl?: number;
  dnsName?: string[];
  federatesWith?: string[];
  admin?: boolean;
  downstream?: boolean;
  hint?: string;
  expiresAt?: string;
}

/** `--expires-at` as RFC 3339, or as Unix seconds like SPIRE's `-entryExpiry`. */
function parseExpiry(value: string): string {
  const date = /^\d+$/.test(value) ? new Date(Number(value) * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError('must be an RFC 3339 time or Unix seconds');
  return date.toISOString();
}

function withEntryFields(command: Command): Command {
  return command
    .option('--selector <type:value>', 'selector, e.g. unix:uid:1000 (repeatable)', collectSelector)
    .option('--x509-svid-ttl <duration>', 'X509-SVID lifetime, e.g. 1h or 3600 (0: server default)', durationFlag(0))
    .option('--jwt-svid-ttl <duration>', 'JWT-SVID lifetime, e.g. 5m or 300 (0: server default)', durationFlag(0))
    .option('--dns-name <name>', 'DNS name for the X509-SVID (repeatable)', collect)
    .option('--federates-with <trust-domain>', 'trust domain whose bundle the workload also gets (repeatable)', collect)
    .option('--admin', 'the SVID may call the admin API')
    .option('--downstream', 'the SVID may act as a downstream CA')
    .option('--hint <hint>', 'hint that tells the workload which SVID to use')
    .option('--expires-at <time>', 'when the entry expires (RFC 3339 or Unix seconds)', parseExpiry);
}

function toBody(options: EntryFieldOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {
    spiffe_id: options.spiffeId,
    parent_id: options.parentId,
    selectors: options.selector,
    x509_svid_ttl: options.x509SvidTtl,
    jwt_svid_ttl: options.jwtSvidTtl,
    dns_names: options.dnsName,
    federates_with: options.federatesWith,
    admin: options.admin,
    downstream: options.downstream,
    hint: options.hint,
    expires_at: options.expiresAt,
  };
  return Object.fromEntries(Object.entries(body).filter(([, value]) => value !== undefined));
}

/** SPIRE's entry layout. */
function describe(entry: Entry): string {
  const ttl = (seconds: number): string => (seconds === 0 ? 'default' : String(seconds));
  return table([
    ['Entry ID', entry.id],
    ['SPIFFE ID', entry.spiffe_id],
    ['Parent ID', entry.parent_id],
    ['Revision', String(entry.revision_number)],
    ['X509-SVID TTL', ttl(entry.x509_svid_ttl)],
    ['JWT-SVID TTL', ttl(entry.jwt_svid_ttl)],
    ...(entry.expires_at ? [['Expiration time', entry.expires_at] as const] : []),
    ...entry.selectors.map((selector) => ['Selector', formatSelector(selector)] as const),
    ...entry.dns_names.map((name) => ['DNS name', name] as const),
    ...entry.federates_with.map((domain) => ['FederatesWith', domain] as const),
    ...(entry.admin ? [['Admin', 'true'] as const] : []),
    ...(entry.downstream ? [['Downstream', 'true'] as const] : []),
    ...(entry.hint ? [['Hint', entry.hint] as const] : []),
  ]);
}

const entryPath = (id: string): string => `/v1/entries/${encodeURIComponent(id)}`;

function filterQuery(options: { spiffeId?: string; parentId?: string; selector?: { type: string; value: string }[] }) {
  const query = new URLSearchParams();
  if (options.spiffeId !== undefined) query.set('spiffe_id', options.spiffeId);
  if (options.parentId !== undefined) query.set('parent_id', options.parentId);
  for (const { type, value } of options.selector ?? []) query.append('selector', `${type}:${value}`);
  return query;
}

/** `sigil-server entry create|show|update|delete|count` (SPIRE `entry …`). */
export function entryCommand(): Command {
  const create = withEntryFields(withAdminOptions(new Command('create')))
    .description('create a registration entry')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID the workload gets')
    .requiredOption('--parent-id <id>', 'SPIFFE ID of the agent (or node alias) the entry belongs to')
    .action(async (options: AdminOptions & EntryFieldOptions) => {
      if (!options.selector?.length) throw new CliError('--selector: at least one is required');
      const { body } = await new AdminClient(options.adminSocket).call('POST', '/v1/entries', {
        entries: [toBody(options)],
      });
      const [result] = (body as { results: BatchResult[] }).results;
      if (!result || result.status.code !== 'ok' || !result.entry) {
        throw new CliError(result?.status.message ?? 'the server returned no result');
      }
      const entry = result.entry;
      print(options, entry, () => describe(entry));
    });

  const show = withAdminOptions(new Command('show'))
    .description('show registration entries: one by --id, or all matching the filters')
    .option('--id <id>', 'entry ID')
    .option('--spiffe-id <id>', 'only entries with this SPIFFE ID')
    .option('--parent-id <id>', 'only entries with this parent ID')
    .option('--selector <type:value>', 'only entries with this selector (repeatable; all must match)', collectSelector)
    .action(async (options: AdminOptions & EntryFieldOptions & { id?: string }) => {
      const client = new AdminClient(options.adminSocket);
      let entries: Entry[];
      if (options.id !== undefined) {
        entries = [(await client.call('GET', entryPath(options.id))).body as Entry];
      } else {
        entries = [];
        let pageToken: string | null = null;
        do {
          const query = filterQuery(options);
          query.set('page_size', '500');
          if (pageToken) query.set('page_token', pageToken);
          const { body } = await client.call('GET', `/v1/entries?${query.toString()}`);
          const page = body as { entries: Entry[]; next_page_token: string | null };
          entries.push(...page.entries);
          pageToken = page.next_page_token;
        } while (pageToken);
      }
      print(options, { entries }, () =>
        [`Found ${entries.length} ${entries.length === 1 ? 'entry' : 'entries'}`, ...entries.map(describe)].join(
          '\n\n',
        ),
      );
    });

  const update = withEntryFields(withAdminOptions(new Command('update')))
    .description('update a registration entry; given fields replace the current ones')
    .requiredOption('--id <id>', 'entry ID')
    .option('--spiffe-id <id>', 'new SPIFFE ID')
    .option('--parent-id <id>', 'new parent ID')
    .action(async (options: AdminOptions & EntryFieldOptions & { id: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('PATCH', entryPath(options.id), toBody(options));
      print(options, body, () => describe(body as Entry));
    });

  const remove = withAdminOptions(new Command('delete'))
    .description('delete a registration entry')
    .requiredOption('--id <id>', 'entry ID')
    .action(async (options: AdminOptions & { id: string }) => {
      await new AdminClient(options.adminSocket).call('DELETE', entryPath(options.id));
      print(options, { deleted: options.id }, () => 'Deleted entry successfully');
    });

  const count = withAdminOptions(new Command('count'))
    .description('count registration entries')
    .option('--spiffe-id <id>', 'only entries with this SPIFFE ID')
    .option('--parent-id <id>', 'only entries with this parent ID')
    .option('--selector <type:value>', 'only entries with this selector (repeatable)', collectSelector)
    .action(async (options: AdminOptions & EntryFieldOptions) => {
      const query = filterQuery(options).toString();
      const { body } = await new AdminClient(options.adminSocket).call(
        'GET',
        `/v1/entries/count${query ? `?${query}` : ''}`,
      );
      const total = (body as { count: number }).count;
      print(options, body, () => `${total} registration ${total === 1 ? 'entry' : 'entries'}`);
    });

  return new Command('entry')
    .description('manage registration entries')
    .addCommand(create)
    .addCommand(show)
    .addCommand(update)
    .addCommand(remove)
    .addCommand(count);
}
