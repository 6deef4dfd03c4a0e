import { Command, InvalidArgumentError, Option } from 'commander';
import { SELECTOR_MATCHES, formatSelector, sigilServerId } from '@sigil/runtime';
import { SpiffeId } from '@sigil/spiffe';
import { MAX_BATCH_SIZE } from '../entries/entry.js';
import { type EntryBody, parseDeleteData, parseEntriesData, readDataFile } from './entry-data.js';
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

/** What `--expires-at 0` parses to (commander turns a parser's null into ''): the entry never expires. */
const NO_EXPIRY = 'never';

/** `--expires-at` as RFC 3339, or as Unix seconds like SPIRE's `-entryExpiry`; 0 means no expiry. */
function parseExpiry(value: string): string {
  if (value === '0') return NO_EXPIRY;
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
    .option('--expires-at <time>', 'when the entry expires (RFC 3339 or Unix seconds; 0: never)', parseExpiry)
    .option('--data <file>', 'SPIRE\'s JSON batch file ({"entries": [...]}), or - for stdin; no other entry flag');
}

/** The entry flags that `--data` replaces: given together, one would be silently ignored. */
const ENTRY_FLAGS = [
  'spiffeId',
  'parentId',
  'selector',
  'x509SvidTtl',
  'jwtSvidTtl',
  'dnsName',
  'federatesWith',
  'admin',
  'downstream',
  'hint',
  'expiresAt',
  'entryId',
  'node',
  'id',
] as const;

function refuseFlagsWithData(options: object): void {
  const given = ENTRY_FLAGS.filter((key) => (options as Record<string, unknown>)[key] !== undefined);
  if (given.length > 0) {
    const flags = given.map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
    throw new CliError(`--data: cannot be combined with ${flags.join(', ')}`, 1, 'invalid_argument');
  }
}

/** One result of a batch: the entry written, or why it was not (SPIRE prints both, failures on stderr). */
interface BatchItem {
  status: { code: string; message: string };
  entry?: Entry;
  id?: string;
}

/**
 * Prints a batch's results as SPIRE does: the entries that succeeded, then each failure on stderr; fails (exit 1)
 * when any entry failed. With `--output json`: `{"results": [...]}` on stdout, in input order.
 */
function reportBatch(options: AdminOptions, verb: string, results: readonly BatchItem[], total: number): void {
  const failed = results.filter((result) => result.status.code !== 'ok');
  print(options, { results }, () =>
    results
      .filter((result) => result.status.code === 'ok')
      .map((result) => (result.entry ? describe(result.entry) : `Deleted entry with ID: ${result.id}`))
      .join('\n\n'),
  );
  if (options.output !== 'json') {
    for (const result of failed) {
      const which = result.entry ? `\n${describe(result.entry)}` : ` ${result.id ?? ''}`;
      process.stderr.write(
        `Failed to ${verb} the following entry (code: ${result.status.code}, msg: ${JSON.stringify(result.status.message)}):${which}\n`,
      );
    }
  }
  if (failed.length > 0) {
    throw new CliError(`failed to ${verb} ${failed.length} of ${total} entries`, 1, failed[0]!.status.code);
  }
}

/** Sends each body to the server and collects one result per entry, in order (a failure does not stop the rest). */
async function eachEntry<T>(
  items: readonly T[],
  send: (item: T) => Promise<Entry | undefined>,
  idOf: (item: T) => string | undefined,
): Promise<BatchItem[]> {
  const results: BatchItem[] = [];
  for (const item of items) {
    try {
      const entry = await send(item);
      results.push({ status: { code: 'ok', message: 'ok' }, ...(entry ? { entry } : { id: idOf(item) }) });
    } catch (error) {
      if (!(error instanceof CliError) || error.kind === 'unavailable' || error.kind === 'unknown') throw error;
      results.push({ status: { code: error.kind, message: error.message }, id: idOf(item) });
    }
  }
  return results;
}

/** Creates entries in batches of the admin API's size, one result per entry. */
async function createBatches(client: AdminClient, bodies: readonly EntryBody[]): Promise<BatchResult[]> {
  const results: BatchResult[] = [];
  for (let start = 0; start < bodies.length; start += MAX_BATCH_SIZE) {
    const { body } = await client.call('POST', '/v1/entries', { entries: bodies.slice(start, start + MAX_BATCH_SIZE) });
    results.push(...(body as { results: BatchResult[] }).results);
  }
  return results;
}

function toBody(options: EntryFieldOptions & { entryId?: string }): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: options.entryId,
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
    expires_at: options.expiresAt === NO_EXPIRY ? null : options.expiresAt,
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

interface FilterOptions {
  spiffeId?: string;
  parentId?: string;
  selector?: { type: string; value: string }[];
  matchSelectorsOn?: string;
  federatesWith?: string[];
  matchFederatesWithOn?: string;
  downstream?: boolean;
  hint?: string;
}

function filterQuery(options: FilterOptions) {
  const query = new URLSearchParams();
  if (options.spiffeId !== undefined) query.set('spiffe_id', options.spiffeId);
  if (options.parentId !== undefined) query.set('parent_id', options.parentId);
  for (const { type, value } of options.selector ?? []) query.append('selector', `${type}:${value}`);
  if (options.selector?.length) query.set('selector_match', options.matchSelectorsOn ?? 'superset');
  for (const domain of options.federatesWith ?? []) query.append('federates_with', domain);
  if (options.federatesWith?.length) query.set('federates_with_match', options.matchFederatesWithOn ?? 'superset');
  if (options.downstream) query.set('downstream', 'true');
  if (options.hint !== undefined) query.set('hint', options.hint);
  return query;
}

/** The filters of `entry show` and `entry count` (SPIRE's). */
function withFilters(command: Command): Command {
  return command
    .option('--spiffe-id <id>', 'only entries with this SPIFFE ID')
    .option('--parent-id <id>', 'only entries with this parent ID')
    .option(
      '--selector <type:value>',
      'only entries with these selectors (repeatable; see --match-selectors-on)',
      collectSelector,
    )
    .addOption(
      new Option('--match-selectors-on <mode>', 'superset: the entry has all the selectors; exact, subset, any')
        .choices(SELECTOR_MATCHES)
        .default('superset'),
    )
    .option('--federates-with <trust-domain>', 'only entries federating with these (repeatable)', collect)
    .addOption(
      new Option('--match-federates-with-on <mode>', 'how --federates-with matches, as --match-selectors-on')
        .choices(SELECTOR_MATCHES)
        .default('superset'),
    )
    .option('--downstream', 'only downstream entries')
    .option('--hint <hint>', 'only entries with this hint');
}

/** `--node`: the entry is a node alias, parented by the server of the SPIFFE ID's trust domain (SPIRE's `-node`). */
function nodeParent(spiffeId: string): string {
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(spiffeId);
  } catch (error) {
    throw new CliError(`--spiffe-id: ${(error as Error).message}`, 1, 'invalid_argument');
  }
  return sigilServerId(id.trustDomain).toString();
}

/** `sigil-server entry create|show|update|delete|count` (SPIRE `entry …`). */
export function entryCommand(): Command {
  const create = withEntryFields(withAdminOptions(new Command('create')))
    .description('create registration entries: one from the flags, or a batch with --data')
    .option('--spiffe-id <id>', 'SPIFFE ID the workload gets (required without --data)')
    .option('--parent-id <id>', 'SPIFFE ID of the agent (or node alias) the entry belongs to')
    .option('--node', "the entry is a node alias: its parent is the server's ID (spiffe://<td>/sigil/server)")
    .option('--entry-id <uuid>', 'the entry ID to use, a lowercase UUID (default: a new one)')
    .action(async (options: AdminOptions & EntryFieldOptions & { entryId?: string; node?: boolean; data?: string }) => {
      const client = new AdminClient(options.adminSocket);
      if (options.data !== undefined) {
        refuseFlagsWithData(options);
        const bodies = parseEntriesData(await readDataFile(options.data), false);
        return reportBatch(options, 'create', await createBatches(client, bodies), bodies.length);
      }
      if (options.spiffeId === undefined)
        throw new CliError('--spiffe-id: required (or --data)', 1, 'invalid_argument');
      if (options.node) {
        if (options.parentId !== undefined) throw new CliError('--node: cannot be combined with --parent-id');
        if (options.federatesWith?.length) throw new CliError('--node: node entries cannot federate');
        options.parentId = nodeParent(options.spiffeId);
      }
      if (options.parentId === undefined)
        throw new CliError('--parent-id: required unless --node', 1, 'invalid_argument');
      if (!options.selector?.length) throw new CliError('--selector: at least one is required', 1, 'invalid_argument');
      const [result] = await createBatches(client, [toBody(options)]);
      if (!result || result.status.code !== 'ok' || !result.entry) {
        throw new CliError(result?.status.message ?? 'the server returned no result', 1, result?.status.code);
      }
      const entry = result.entry;
      print(options, entry, () => describe(entry));
    });

  const show = withFilters(withAdminOptions(new Command('show')))
    .description('show registration entries: one by --id, or all matching the filters')
    .option('--id <id>', 'entry ID')
    .action(async (options: AdminOptions & FilterOptions & { id?: string }) => {
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
    .description(
      'update registration entries: the given flags replace those fields of --id (--no-admin, --no-downstream, ' +
        "--hint '', --expires-at 0, a TTL of 0 clear one); --data replaces whole entries, as SPIRE does",
    )
    .option('--id <id>', 'entry ID (required without --data)')
    .option('--spiffe-id <id>', 'new SPIFFE ID')
    .option('--parent-id <id>', 'new parent ID')
    .option('--no-admin', 'the SVID may no longer call the admin API')
    .option('--no-downstream', 'the SVID may no longer act as a downstream CA')
    .action(async (options: AdminOptions & EntryFieldOptions & { id?: string; data?: string }) => {
      const client = new AdminClient(options.adminSocket);
      if (options.data !== undefined) {
        refuseFlagsWithData(options);
        const bodies = parseEntriesData(await readDataFile(options.data), true);
        const results = await eachEntry(
          bodies,
          async ({ id, ...body }) => (await client.call('PATCH', entryPath(id as string), body)).body as Entry,
          (body) => body['id'] as string,
        );
        return reportBatch(options, 'update', results, bodies.length);
      }
      if (options.id === undefined) throw new CliError('--id: required (or --data)', 1, 'invalid_argument');
      const { body } = await client.call('PATCH', entryPath(options.id), toBody(options));
      print(options, body, () => describe(body as Entry));
    });

  const remove = withAdminOptions(new Command('delete'))
    .description('delete registration entries: --id, or a batch with --data')
    .option('--id <id>', 'entry ID (required without --data)')
    .option('--data <file>', 'SPIRE\'s JSON batch file ({"ids": [...]}), or - for stdin')
    .action(async (options: AdminOptions & { id?: string; data?: string }) => {
      const client = new AdminClient(options.adminSocket);
      if (options.data !== undefined) {
        if (options.id !== undefined) throw new CliError('--data: cannot be combined with --id', 1, 'invalid_argument');
        const ids = parseDeleteData(await readDataFile(options.data));
        const results = await eachEntry(
          ids,
          async (id) => {
            await client.call('DELETE', entryPath(id));
            return undefined;
          },
          (id) => id,
        );
        return reportBatch(options, 'delete', results, ids.length);
      }
      if (options.id === undefined) throw new CliError('--id: required (or --data)', 1, 'invalid_argument');
      await client.call('DELETE', entryPath(options.id));
      print(options, { deleted: options.id }, () => 'Deleted entry successfully');
    });

  const count = withFilters(withAdminOptions(new Command('count')))
    .description('count registration entries')
    .action(async (options: AdminOptions & FilterOptions) => {
      const query = filterQuery(options).toString();
      const { body } = await new AdminClient(options.adminSocket).call(
        'GET',
        `/v1/entries/count${query ? `?${query}` : ''}`,
      );
      const total = (body as { count: number }).count;
      print(options, body, () => `${total} registration ${total === 1 ? 'entry' : 'entries'}`);
    });

  return new Command('entry')
    .addCommand(create)
    .addCommand(show)
    .addCommand(update)
    .addCommand(remove)
    .addCommand(count);
}
