import { Command, Option } from 'commander';
import { AdminClient, type AdminOptions, print, withAdminOptions } from './admin-client.js';

/** One authority as `/v1/authorities/{kind}` answers (the admin API's AuthorityResponse). */
export interface Authority {
  authority_id: string;
  state: string;
  expires_at: string;
  tainted: boolean;
  revoked: boolean;
  upstream_signed?: boolean;
}

export interface AuthorityState {
  active: Authority | null;
  prepared: Authority | null;
  old: Authority[];
}

type Kind = 'x509' | 'jwt';

const LABEL: Record<Kind, string> = { x509: 'X.509', jwt: 'JWT' };

/** SPIRE's lines for one authority, indented under its heading, plus whether it is tainted or revoked. */
function describe(kind: Kind, authority: Authority): string[] {
  const lines = [`  Authority ID: ${authority.authority_id}`, `  Expires at: ${authority.expires_at}`];
  if (kind === 'x509') {
    lines.push(
      authority.upstream_signed
        ? '  Upstream authority: signed by the upstream CA'
        : '  Upstream authority ID: No upstream authority',
    );
  }
  if (authority.tainted) lines.push('  Tainted: true');
  if (authority.revoked) lines.push('  Revoked: true');
  return lines;
}

function describeState(kind: Kind, state: AuthorityState): string {
  const section = (heading: string, authorities: Authority[]): string[] => [
    `${heading} ${LABEL[kind]} authority:`,
    ...(authorities.length === 0
      ? [`  No ${heading.toLowerCase()} ${LABEL[kind]} authority found`]
      : authorities.flatMap((authority, index) => [...(index > 0 ? [''] : []), ...describe(kind, authority)])),
  ];
  return [
    ...section('Active', state.active ? [state.active] : []),
    '',
    ...section('Prepared', state.prepared ? [state.prepared] : []),
    '',
    ...section('Old', state.old),
  ].join('\n');
}

type AuthorityIdOptions = AdminOptions & { authorityId: string; force?: boolean };

/**
 * One state change (`prepare`, `activate`, `taint`, `revoke`): SPIRE's JSON names the authority by what happened to
 * it (`{ "tainted_authority": … }`), and its text prints `Tainted X.509 authority:` with the authority's lines.
 */
function change(kind: Kind, action: 'prepare' | 'activate' | 'taint' | 'revoke', description: string): Command {
  const past = { prepare: 'prepared', activate: 'activated', taint: 'tainted', revoke: 'revoked' }[action];
  const command = withAdminOptions(new Command(action)).description(description);
  if (action !== 'prepare') {
    command.addOption(
      new Option(
        '--authority-id <id>',
        `the ${kind === 'x509' ? 'subject key identifier (hex)' : 'key id (kid)'} of the authority to ${action}`,
      ).makeOptionMandatory(),
    );
  }
  if (action === 'revoke') {
    command.option(
      '--force',
      'revoke even while agents still hold SVIDs issued by the authority that have not expired: every one of them ' +
        'fails verification at once',
    );
  }
  return command.action(async (options: AuthorityIdOptions) => {
    const body =
      action === 'prepare'
        ? undefined
        : { authority_id: options.authorityId, ...(options.force === true && { force: true }) };
    const { body: authority } = await new AdminClient(options.adminSocket).call(
      'POST',
      `/v1/authorities/${kind}/${action}`,
      body,
    );
    const name = `${past}_authority`;
    print(options, { [name]: authority }, () =>
      [
        `${past[0]!.toUpperCase()}${past.slice(1)} ${LABEL[kind]} authority:`,
        ...describe(kind, authority as Authority),
      ].join('\n'),
    );
  });
}

function kindCommand(kind: Kind): Command {
  const what = kind === 'x509' ? 'the X.509 CA' : 'the JWT signing key';
  const show = withAdminOptions(new Command('show'))
    .description(`show the active, prepared and old authorities of ${what}`)
    .action(async (options: AdminOptions) => {
      const { body } = await new AdminClient(options.adminSocket).call('GET', `/v1/authorities/${kind}`);
      print(options, body, () => describeState(kind, body as AuthorityState));
    });
  return new Command(kind)
    .description(`manage ${what} (SPIRE's localauthority ${kind})`)
    .addCommand(show)
    .addCommand(
      change(kind, 'prepare', `prepare a new authority now and publish it in the bundle (the next one activate takes)`),
    )
    .addCommand(change(kind, 'activate', 'activate the prepared authority: it signs from now on'))
    .addCommand(
      change(
        kind,
        'taint',
        'mark an old (no longer active) authority as tainted: every agent re-signs at once the SVIDs it issued',
      ),
    )
    .addCommand(
      change(
        kind,
        'revoke',
        'remove a tainted authority from the bundle (refused while agents still hold SVIDs it issued, unless --force)',
      ),
    );
}

/** `sigil-server localauthority x509|jwt show|prepare|activate|taint|revoke` (SPIRE's), over `/v1/authorities`. */
export function localAuthorityCommand(): Command {
  return new Command('localauthority').addCommand(kindCommand('x509')).addCommand(kindCommand('jwt'));
}
