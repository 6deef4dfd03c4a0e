import { Command, Option } from 'commander';
import { BUNDLE_ENDPOINT_PROFILES } from '../federation/bundle-endpoint-profiles.js';
import { FEDERATED_BUNDLE_LIMITS } from '../federation/federated-bundle-rules.js';
import { AdminClient, type AdminOptions, CliError, print, withAdminOptions } from './admin-client.js';
import { readInput } from './entry-data.js';

interface Relationship {
  trust_domain: string;
  bundle_endpoint_url: string;
  bundle_endpoint_profile: string;
  endpoint_spiffe_id?: string;
}

type SettingsOptions = AdminOptions & {
  trustDomain: string;
  bundleEndpointUrl: string;
  bundleEndpointProfile: string;
  endpointSpiffeId?: string;
  trustDomainBundlePath?: string;
  trustDomainBundleFormat: string;
};

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

/** The flags `create` and `update` share (SPIRE's `-trustDomain`, `-bundleEndpointURL`, …). */
function withSettings(command: Command): Command {
  return withAdminOptions(command)
    .requiredOption('--trust-domain <name>', 'the foreign trust domain (its name or SPIFFE ID)')
    .requiredOption('--bundle-endpoint-url <url>', "https:// URL of the trust domain's bundle endpoint")
    .addOption(
      new Option('--bundle-endpoint-profile <profile>', 'how the endpoint authenticates')
        .choices([...BUNDLE_ENDPOINT_PROFILES])
        .makeOptionMandatory(),
    )
    .option('--endpoint-spiffe-id <id>', "https_spiffe: the SPIFFE ID of the endpoint's server")
    .option(
      '--trust-domain-bundle-path <file>',
      "the trust domain's bundle to store first (https_spiffe needs it to authenticate the endpoint); - reads stdin",
    )
    .addOption(
      new Option('--trust-domain-bundle-format <format>', 'format of --trust-domain-bundle-path')
        .choices(['pem', 'spiffe'])
        .default('pem'),
    );
}

/** Stores `--trust-domain-bundle-path` as the trust domain's bundle, as `bundle set` does. */
async function setInitialBundle(client: AdminClient, options: SettingsOptions): Promise<void> {
  if (options.trustDomainBundlePath === undefined) return;
  const path = options.trustDomainBundlePath;
  const text = (await readInput(path, '--trust-domain-bundle-path', FEDERATED_BUNDLE_LIMITS.maxTextLength)).toString();
  if (text.trim() === '')
    throw new CliError(`--trust-domain-bundle-path: ${path === '-' ? 'standard input' : path} is empty`);
  await client.call('PUT', `/v1/federation/bundles/${encodeURIComponent(options.trustDomain)}`, {
    format: options.trustDomainBundleFormat,
    bundle: text,
  });
}

function settings(options: SettingsOptions): Omit<Relationship, 'trust_domain'> {
  return {
    bundle_endpoint_url: options.bundleEndpointUrl,
    bundle_endpoint_profile: options.bundleEndpointProfile,
    ...(options.endpointSpiffeId !== undefined && { endpoint_spiffe_id: options.endpointSpiffeId }),
  };
}

/** `sigil-server federation create|update|delete|list|show` (SPIRE `federation …`): federation relationships. */
export function federationCommand(): Command {
  const create = withSettings(new Command('create'))
    .description('create a federation relationship with a foreign trust domain')
    .action(async (options: SettingsOptions) => {
      const client = new AdminClient(options.adminSocket);
      await setInitialBundle(client, options);
      const { body } = await client.call('POST', '/v1/federation/relationships', {
        trust_domain: options.trustDomain,
        ...settings(options),
      });
      print(options, body, () => `Federation relationship created.\n\n${render(body as Relationship)}`);
    });

  const update = withSettings(new Command('update'))
    .description("replace a federation relationship's bundle endpoint settings")
    .action(async (options: SettingsOptions) => {
      const client = new AdminClient(options.adminSocket);
      await setInitialBundle(client, options);
      const { body } = await client.call('PUT', relationshipPath(options.trustDomain), settings(options));
      print(options, body, () => `Federation relationship updated.\n\n${render(body as Relationship)}`);
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
    .addCommand(list);
}
