import { Command, Option } from 'commander';
import { BUNDLE_ENDPOINT_PROFILES } from '../federation/bundle-endpoint-profiles.js';
import { FEDERATED_BUNDLE_LIMITS } from '../federation/federated-bundle-rules.js';
import { AdminClient, type AdminOptions, CliError, print, withAdminOptions } from './admin-client.js';
import { readDataFile, readInput } from './entry-data.js';
import { type FederationDataItem, parseFederationData } from './federation-data.js';

interface Relationship {
  trust_domain: string;
  bundle_endpoint_url: string;
  bundle_endpoint_profile: string;
  endpoint_spiffe_id?: string;
}

type SettingsOptions = AdminOptions & {
  trustDomain?: string;
  bundleEndpointUrl?: string;
  bundleEndpointProfile?: string;
  endpointSpiffeId?: string;
  trustDomainBundlePath?: string;
  trustDomainBundleFormat?: string;
  data?: string;
};

/** The relationship flags `--data` replaces: given together, one would be silently ignored. */
const SETTINGS_FLAGS = [
  'trustDomain',
  'bundleEndpointUrl',
  'bundleEndpointProfile',
  'endpointSpiffeId',
  'trustDomainBundlePath',
  'trustDomainBundleFormat',
] as const;

const relationshipPath = (id: string): string => `/v1/federation/relationships/${encodeURIComponent(id)}`;

/** SPIRE's `federation show` layout. */
function render(relationship: Relationship): string {
  return [
    `Trust domain              : ${relationship.trust_domain}`,
    `Bundle endpoint URL       : ${relationship.bundle_endpoint_url}`,
    `Bundle endpoint profile   : ${relationship.bundle_endpoint_profile}`,
    ...(relationship.endpoint_spiffe_id ? [`Endpoint SPIFFE ID        : ${relationship.endpoint_spiffe_id}`] : []),
  ].join('\n');
}

/** The flags `create` and `update` share (SPIRE's `-trustDomain`, `-bundleEndpointURL`, …, `-data`). */
function withSettings(command: Command): Command {
  return withAdminOptions(command)
    .option('--trust-domain <name>', 'the foreign trust domain (its name or SPIFFE ID; required without --data)')
    .option(
      '--bundle-endpoint-url <url>',
      "https:// URL of the trust domain's bundle endpoint (required without --data)",
    )
    .addOption(
      new Option(
        '--bundle-endpoint-profile <profile>',
        'how the endpoint authenticates (required without --data)',
      ).choices([...BUNDLE_ENDPOINT_PROFILES]),
    )
    .option('--endpoint-spiffe-id <id>', "https_spiffe: the SPIFFE ID of the endpoint's server")
    .option(
      '--trust-domain-bundle-path <file>',
      "the trust domain's bundle to store first (https_spiffe needs it to authenticate the endpoint); - reads stdin",
    )
    .addOption(
      new Option('--trust-domain-bundle-format <format>', 'format of --trust-domain-bundle-path (default pem)').choices(
        ['pem', 'spiffe'],
      ),
    )
    .option(
      '--data <file>',
      'SPIRE\'s JSON file ({"federation_relationships": [...]}), or - for stdin; no other relationship flag',
    );
}

/** The relationships to write: from `--data`, or the one the flags describe. */
async function relationshipsFrom(options: SettingsOptions): Promise<FederationDataItem[]> {
  if (options.data !== undefined) {
    const given = SETTINGS_FLAGS.filter((key) => options[key] !== undefined);
    if (given.length > 0) {
      const flags = given.map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
      throw new CliError(`--data: cannot be combined with ${flags.join(', ')}`, 1, 'invalid_argument');
    }
    return parseFederationData(await readDataFile(options.data));
  }
  for (const [key, flag] of [
    ['trustDomain', '--trust-domain'],
    ['bundleEndpointUrl', '--bundle-endpoint-url'],
    ['bundleEndpointProfile', '--bundle-endpoint-profile'],
  ] as const) {
    if (options[key] === undefined) throw new CliError(`${flag}: required (or --data)`, 1, 'invalid_argument');
  }
  return [
    {
      trust_domain: options.trustDomain!,
      bundle_endpoint_url: options.bundleEndpointUrl!,
      bundle_endpoint_profile: options.bundleEndpointProfile!,
      ...(options.endpointSpiffeId !== undefined && { endpoint_spiffe_id: options.endpointSpiffeId }),
    },
  ];
}

/** Stores the trust domain's bundle first, as `bundle set` does: `--trust-domain-bundle-path` or the data's. */
async function setInitialBundle(
  client: AdminClient,
  options: SettingsOptions,
  item: FederationDataItem,
): Promise<void> {
  let format: string;
  let text: string;
  if (item.bundleJwks !== undefined) {
    [format, text] = ['spiffe', item.bundleJwks];
  } else if (options.trustDomainBundlePath !== undefined) {
    const path = options.trustDomainBundlePath;
    text = (await readInput(path, '--trust-domain-bundle-path', FEDERATED_BUNDLE_LIMITS.maxTextLength)).toString();
    if (text.trim() === '')
      throw new CliError(`--trust-domain-bundle-path: ${path === '-' ? 'standard input' : path} is empty`);
    format = options.trustDomainBundleFormat ?? 'pem';
  } else {
    return;
  }
  await client.call('PUT', `/v1/federation/bundles/${encodeURIComponent(item.trust_domain)}`, { format, bundle: text });
}

function settings(item: FederationDataItem): Omit<Relationship, 'trust_domain'> {
  return {
    bundle_endpoint_url: item.bundle_endpoint_url,
    bundle_endpoint_profile: item.bundle_endpoint_profile,
    ...(item.endpoint_spiffe_id !== undefined && { endpoint_spiffe_id: item.endpoint_spiffe_id }),
  };
}

/** Writes each relationship in turn; the first failure stops (the ones before it stay written, as listed). */
async function writeAll(
  options: SettingsOptions,
  write: (client: AdminClient, item: FederationDataItem) => Promise<unknown>,
  done: string,
): Promise<void> {
  const client = new AdminClient(options.adminSocket);
  const written: unknown[] = [];
  for (const item of await relationshipsFrom(options)) {
    try {
      await setInitialBundle(client, options, item);
      written.push(await write(client, item));
    } catch (error) {
      if (written.length > 0 && error instanceof Error) {
        error.message = `${item.trust_domain}: ${error.message} (written before it: ${written
          .map((body) => (body as Relationship).trust_domain)
          .join(', ')})`;
      }
      throw error;
    }
  }
  const body = options.data === undefined ? written[0] : { relationships: written };
  print(options, body, () => written.map((one) => `${done}\n\n${render(one as Relationship)}`).join('\n\n'));
}

/** `sigil-server federation create|update|delete|list|show|refresh` (SPIRE `federation …`): federation relationships. */
export function federationCommand(): Command {
  const create = withSettings(new Command('create'))
    .description('create federation relationships with foreign trust domains (the flags, or a batch with --data)')
    .action(async (options: SettingsOptions) => {
      await writeAll(
        options,
        async (client, item) =>
          (
            await client.call('POST', '/v1/federation/relationships', {
              trust_domain: item.trust_domain,
              ...settings(item),
            })
          ).body,
        'Federation relationship created.',
      );
    });

  const update = withSettings(new Command('update'))
    .description("replace federation relationships' bundle endpoint settings (the flags, or a batch with --data)")
    .action(async (options: SettingsOptions) => {
      await writeAll(
        options,
        async (client, item) => (await client.call('PUT', relationshipPath(item.trust_domain), settings(item))).body,
        'Federation relationship updated.',
      );
    });

  const refresh = withAdminOptions(new Command('refresh'))
    .description("fetch a federated trust domain's bundle from its bundle endpoint now")
    .requiredOption('--id <trust-domain>', 'the trust domain (its name or SPIFFE ID)')
    .action(async (options: AdminOptions & { id: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call(
        'POST',
        `${relationshipPath(options.id)}/refresh`,
      );
      const { changed } = body as { changed: boolean };
      print(options, body, () => (changed ? 'Bundle refreshed (changed).' : 'Bundle refreshed (unchanged).'));
    });

  const remove = withAdminOptions(new Command('delete'))
    .description('delete a federation relationship (the trust domain bundle stays; see bundle delete)')
    .requiredOption('--id <trust-domain>', 'the trust domain (its name or SPIFFE ID)')
    .action(async (options: AdminOptions & { id: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('DELETE', relationshipPath(options.id));
      print(options, body, () => 'Federation relationship deleted.');
    });

  const show = withAdminOptions(new Command('show'))
    .description('show a federation relationship')
    .requiredOption('--id <trust-domain>', 'the trust domain (its name or SPIFFE ID)')
    .action(async (options: AdminOptions & { id: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', relationshipPath(options.id));
      print(options, body, () => render(body as Relationship));
    });

  const list = withAdminOptions(new Command('list'))
    .description('list the federation relationships')
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', '/v1/federation/relationships');
      const { relationships } = body as { relationships: Relationship[] };
      print(options, body, () =>
        relationships.length === 0
          ? 'No federation relationships found'
          : [`Found ${relationships.length} federation relationship${relationships.length === 1 ? '' : 's'}`]
              .concat(relationships.map(render))
              .join('\n\n'),
      );
    });

  return new Command('federation')
    .description('manage federation relationships with foreign trust domains')
    .addCommand(create)
    .addCommand(update)
    .addCommand(remove)
    .addCommand(show)
    .addCommand(list)
    .addCommand(refresh);
}
