import { join, resolve } from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { SpiffeError, SpiffeId } from '@sigil/spiffe';
import { ensureOwnDir, writeFileAtomic } from '@sigil/runtime';
import {
  AdminClient,
  type AdminOptions,
  CliError,
  collect,
  durationFlag,
  print,
  withAdminOptions,
} from './admin-client.js';

/** Public files (certificates) as SPIRE writes them: readable by all; private keys and tokens: the owner only. */
const PUBLIC_MODE = 0o644;
const PRIVATE_MODE = 0o600;

interface MintOptions extends AdminOptions {
  spiffeId: SpiffeId;
  ttl?: number;
  write?: string;
}

function spiffeIdFlag(value: string): SpiffeId {
  try {
    return SpiffeId.parse(value);
  } catch (error) {
    if (error instanceof SpiffeError) throw new InvalidArgumentError(error.message);
    throw error;
  }
}

function withMintOptions(command: Command, what: string): Command {
  return withAdminOptions(command)
    .addOption(new Option('--spiffe-id <id>', `SPIFFE ID of the ${what}`).argParser(spiffeIdFlag).makeOptionMandatory())
    .option(
      '--ttl <duration>',
      `lifetime of the ${what} (e.g. 1h; default: the server's ${what} TTL, never beyond the signing key)`,
      durationFlag(1),
    );
}

/**
 * SPIRE prints a warning on stderr when the server gave a shorter life than asked (the signing key ends sooner).
 * `askedAt`: when the request left (the server signs at a whole second, hence the one second of slack).
 */
function warnIfCapped(what: string, options: MintOptions, askedAt: number, expiresAt: string): void {
  if (options.ttl !== undefined && Date.parse(expiresAt) < askedAt + (options.ttl - 1) * 1000) {
    process.stderr.write(`${what} lifetime was capped shorter than specified ttl; expires "${expiresAt}"\n`);
  }
}

/** The DER certificates of our own trust bundle's X.509 authorities (`x5c` of its `x509-svid` keys). */
async function rootCas(client: AdminClient): Promise<Buffer[]> {
  const { body } = await client.call('GET', '/v1/bundle?format=spiffe');
  const keys = (body as { keys?: { use?: string; x5c?: string[] }[] }).keys ?? [];
  const roots = keys.filter((key) => key.use === 'x509-svid').map((key) => Buffer.from(key.x5c?.[0] ?? '', 'base64'));
  if (roots.length === 0 || roots.some((der) => der.length === 0)) {
    throw new CliError('the server sent a bundle without X.509 authorities', 1, 'internal');
  }
  return roots;
}

/** The PKI lib, loaded only by the mint commands (the rest of the CLI starts without it). */
const pki = (): Promise<typeof import('@sigil/pki')> => import('@sigil/pki');

async function certificatesPem(ders: readonly Buffer[]): Promise<string> {
  const { PEM_LABEL, toPem } = await pki();
  return ders.map((der) => toPem(PEM_LABEL.certificate, der)).join('');
}

/**
 * `sigil-server x509 mint` (SPIRE's): makes a key pair here, sends only a CSR for `--spiffe-id` (and `--dns` names),
 * and prints or writes (`--write DIR`: svid.pem, key.pem 0600, bundle.pem) the X509-SVID, its key and the root CAs.
 */
export function x509Command(): Command {
  const mint = withMintOptions(new Command('mint'), 'X509-SVID')
    .description('mint an X509-SVID; the private key is made here and never leaves this machine')
    .option('--dns <name>', 'DNS name to include in the SVID (repeatable)', collect)
    .option('--write <dir>', 'write svid.pem, key.pem (mode 0600) and bundle.pem into this directory')
    .action(async (options: MintOptions & { dns?: string[] }) => {
      const { PEM_LABEL, PkiError, createCsr, exportPrivateKeyPkcs8, generateKeyPair, toPem } = await pki();
      const keys = await generateKeyPair();
      let csr: string;
      try {
        csr = (await createCsr({ keys, spiffeId: options.spiffeId, dnsNames: options.dns ?? [] })).pem;
      } catch (error) {
        if (error instanceof PkiError) throw new CliError(error.message, 1, 'invalid_argument');
        throw error;
      }
      const client = new AdminClient(options.adminSocket);
      const askedAt = Date.now();
      const { body } = await client.call('POST', '/v1/x509-svids/mint', {
        csr,
        ...(options.ttl !== undefined && { ttl: options.ttl }),
      });
      const minted = body as { cert_chain: string[]; expires_at: string };
      const chain = minted.cert_chain.map((der) => Buffer.from(der, 'base64'));
      const roots = await rootCas(client);
      warnIfCapped('X509-SVID', options, askedAt, minted.expires_at);
      const keyDer = Buffer.from(exportPrivateKeyPkcs8(keys.privateKey));
      const keyPem = toPem(PEM_LABEL.privateKey, keyDer);

      if (options.write !== undefined) {
        const dir = await ensureOwnDir(resolve(options.write), 0o755, '--write');
        const files = [
          ['svid.pem', await certificatesPem(chain), PUBLIC_MODE, 'X509-SVID'],
          ['key.pem', keyPem, PRIVATE_MODE, 'Private key'],
          ['bundle.pem', await certificatesPem(roots), PUBLIC_MODE, 'Root CAs'],
        ] as const;
        for (const [name, text, mode, label] of files) {
          await writeFileAtomic(join(dir, name), text, { mode });
          process.stdout.write(`${label} written to ${join(dir, name)}\n`);
        }
        return;
      }
      // SPIRE's JSON: the chain, the PKCS#8 key and the roots, each DER in base64.
      const result = {
        x509_svid: chain.map((der) => der.toString('base64')),
        private_key: keyDer.toString('base64'),
        root_cas: roots.map((der) => der.toString('base64')),
      };
      const [chainPem, rootsPem] = [await certificatesPem(chain), await certificatesPem(roots)];
      print(
        options,
        result,
        () => `X509-SVID:\n${chainPem}\nPrivate key:\n${keyPem}\nRoot CAs:\n${rootsPem.trimEnd()}`,
      );
    });
  return new Command('x509').addCommand(mint);
}

/**
 * `sigil-server jwt mint` (SPIRE's): a JWT-SVID for `--spiffe-id` and `--audience`, printed or written
 * (`--write FILE`, mode 0600).
 */
export function jwtCommand(): Command {
  const mint = withMintOptions(new Command('mint'), 'JWT-SVID')
    .description('mint a JWT-SVID')
    .addOption(
      new Option('--audience <aud>', 'audience of the JWT-SVID (repeatable)').argParser(collect).makeOptionMandatory(),
    )
    .option('--write <file>', 'write the token into this file (mode 0600) instead of printing it')
    .action(async (options: MintOptions & { audience: string[] }) => {
      const askedAt = Date.now();
      const { body } = await new AdminClient(options.adminSocket).call('POST', '/v1/jwt-svids/mint', {
        spiffe_id: options.spiffeId.toString(),
        audience: options.audience,
        ...(options.ttl !== undefined && { ttl: options.ttl }),
      });
      const minted = body as { token: string; expires_at: string };
      warnIfCapped('JWT-SVID', options, askedAt, minted.expires_at);
      if (options.write !== undefined) {
        const file = resolve(options.write);
        await writeFileAtomic(file, minted.token, { mode: PRIVATE_MODE });
        process.stdout.write(`JWT-SVID written to ${file}\n`);
        return;
      }
      print(options, minted, () => minted.token);
    });
  return new Command('jwt').addCommand(mint);
}
