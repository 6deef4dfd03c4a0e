import { Command, Option } from 'commander';
import { TrustBundle, TrustDomain, type SpiffeJwks } from '@sigil/spiffe';
import { FEDERATED_BUNDLE_LIMITS } from '../federation/federated-bundle-rules.js';
import { AdminClient, type AdminOptions, CliError, print, withAdminOptions } from './admin-client.js';
import { readInput } from './entry-data.js';

type BundleFormat = 'pem' | 'spiffe';

interface FederatedBundle {
  trust_domain: string;
  bundle: SpiffeJwks;
  updated_at: string;
}

const formatOption = (what: string): Option =>
  new Option('--format <format>', `${what}: pem certificates or the SPIFFE bundle (JWKS)`)
    .choices(['pem', 'spiffe'])
    .default('pem');

const bundlePath = (id: string): string => `/v1/federation/bundles/${encodeURIComponent(id)}`;

/** The bundle as `--format` asks: its X.509 authorities as PEM (by the one PEM codec), or the JWKS as JSON. */
function render(bundle: FederatedBundle, format: BundleFormat): string {
  if (format === 'spiffe') return JSON.stringify(bundle.bundle, null, 2);
  const parsed = TrustBundle.parseJwks(TrustDomain.parse(bundle.trust_domain), bundle.bundle);
  return parsed.x509Pem().trimEnd();
}

/** SPIRE's `bundle list` layout: each bundle under a banner with its trust domain's SPIFFE ID. */
function renderList(bundles: readonly FederatedBundle[], format: BundleFormat): string {
  const banner = '*'.repeat(40);
  return bundles
    .map((bundle) => [banner, `* spiffe://${bundle.trust_domain}`, banner, render(bundle, format)].join('\n'))
    .join('\n\n');
}

/**
 * `sigil-server bundle show|list|set|delete|count` (SPIRE `bundle …`): our own trust bundle (`show`) and the bundles
 * of foreign trust domains set by hand (the others).
 */
export function bundleCommand(): Command {
  const show = withAdminOptions(new Command('show'))
    .description("show the server's own trust bundle")
    .addOption(formatOption('output'))
    .action(async (options: AdminOptions & { format: BundleFormat }) => {
      const client = new AdminClient(options.adminSocket);
      const { body, text } = await client.call('GET', `/v1/bundle?format=${options.format}`);
      if (options.output === 'json' || options.format === 'spiffe') {
        process.stdout.write(`${JSON.stringify(options.format === 'pem' ? { pem: text } : body, null, 2)}\n`);
      } else {
        process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
      }
    });

  const list = withAdminOptions(new Command('list'))
    .description('list the bundles of foreign trust domains (federated bundles)')
    .option('--id <trust-domain>', 'only this trust domain (its name or SPIFFE ID)')
    .addOption(formatOption('output'))
    .action(async (options: AdminOptions & { id?: string; format: BundleFormat }) => {
      const client = new AdminClient(options.adminSocket);
      if (options.id !== undefined) {
        const { body } = await client.call('GET', bundlePath(options.id));
        const bundle = body as FederatedBundle;
        print(options, bundle, () => render(bundle, options.format));
        return;
      }
      const bundles: FederatedBundle[] = [];
      let pageToken: string | undefined;
      do {
        const query = new URLSearchParams({ page_size: '1000', ...(pageToken && { page_token: pageToken }) });
        const { body } = await client.call('GET', `/v1/federation/bundles?${query.toString()}`);
        const page = body as { bundles: FederatedBundle[]; next_page_token?: string };
        bundles.push(...page.bundles);
        pageToken = page.next_page_token;
      } while (pageToken);
      print(options, { bundles }, () =>
        bundles.length === 0 ? 'No federated bundles found' : renderList(bundles, options.format),
      );
    });

  const set = withAdminOptions(new Command('set'))
    .description('create or replace the bundle of a foreign trust domain')
    .requiredOption('--id <trust-domain>', 'the trust domain (its name or SPIFFE ID)')
    .option('--path <file>', 'file to read the bundle from; - (the default) reads standard input', '-')
    .addOption(formatOption('input'))
    .action(async (options: AdminOptions & { id: string; path: string; format: BundleFormat }) => {
      const bytes = await readInput(options.path, '--path', FEDERATED_BUNDLE_LIMITS.maxTextLength);
      const text = bytes.toString('utf8');
      if (text.trim() === '')
        throw new CliError(`--path: ${options.path === '-' ? 'standard input' : options.path} is empty`);
      const { body } = await new AdminClient(options.adminSocket).call('PUT', bundlePath(options.id), {
        format: options.format,
        bundle: text,
      });
      print(options, body, () => 'bundle set.');
    });

  const remove = withAdminOptions(new Command('delete'))
    .description('delete the bundle of a foreign trust domain')
    .requiredOption('--id <trust-domain>', 'the trust domain (its name or SPIFFE ID)')
    .addOption(
      new Option(
        '--mode <mode>',
        'restrict: refuse while entries federate with it; delete: delete those entries too; dissociate: remove the trust domain from their federates_with',
      )
        .choices(['restrict', 'delete', 'dissociate'])
        .default('restrict'),
    )
    .action(async (options: AdminOptions & { id: string; mode: string }) => {
      const { body } = await new AdminClient(options.adminSocket).call(
        'DELETE',
        `${bundlePath(options.id)}?mode=${options.mode}`,
      );
      print(options, body, () => 'bundle deleted.');
    });

  const count = withAdminOptions(new Command('count'))
    .description('count the bundles of foreign trust domains')
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', '/v1/federation/bundles/count');
      const { count: total } = body as { count: number };
      print(options, body, () => `${total} bundle${total === 1 ? '' : 's'}`);
    });

  return new Command('bundle').addCommand(show).addCommand(list).addCommand(set).addCommand(remove).addCommand(count);
}
