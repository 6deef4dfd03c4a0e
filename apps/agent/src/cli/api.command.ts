import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  CliError,
  DurationError,
  parseDurationMs,
  printResult,
  recordTable,
  singleAudienceProblem,
} from '@sigil/runtime/cli';
import { type TrustBundle, certificateChainDer, certificateSummary, encodePem, verifyX509Svid } from '@sigil/spiffe';
import { type WorkloadApiClient, WorkloadApiError, type X509Context } from '@sigil/workload-api/client';
import { Command, InvalidArgumentError, Option } from 'commander';
import { describeWorkloadError, openWorkloadClient, resolveWorkloadAddress } from './workload-client.js';

export interface ApiOptions {
  socketPath?: string;
  output: 'pretty' | 'json';
  timeout: number;
}

/** `--timeout` as a duration (`5s`, `1m`, `0.5`), in seconds. */
const positiveSeconds = (value: string): number => {
  let ms: number;
  try {
    ms = parseDurationMs(value);
  } catch (error) {
    if (error instanceof DurationError) throw new CliError(`--timeout: ${error.message}`);
    throw error;
  }
  if (ms <= 0) throw new CliError(`--timeout: must be longer than 0, got '${value}'`);
  return ms / 1000;
};

/** Adds the options every Workload API command takes. */
export function withWorkloadApiOptions(command: Command): Command {
  return command
    .option(
      '--socket-path <path>',
      'Workload API socket, a path or unix:///path (default: SPIFFE_ENDPOINT_SOCKET, else /tmp/sigil-agent/public/api.sock)',
    )
    .addOption(new Option('--output <format>', 'output format').choices(['pretty', 'json']).default('pretty'))
    .option('--timeout <duration>', 'how long to wait for the agent, e.g. 5s or 5', positiveSeconds, 5);
}

/**
 * Runs `work` with a `@sigil/workload-api` client of the Workload API and an abort signal for the timeout, turning
 * failures into one-line CLI errors.
 */
export async function withClient<T>(
  options: ApiOptions,
  work: (client: WorkloadApiClient, signal: AbortSignal, address: string) => Promise<T>,
): Promise<T> {
  const address = resolveWorkloadAddress(options.socketPath, process.env);
  const client = openWorkloadClient(address);
  try {
    return await work(client, AbortSignal.timeout(options.timeout * 1000), address);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(describeWorkloadError(error, address, options.timeout));
  } finally {
    await client.close();
  }
}

function print(options: ApiOptions & { jsonLines?: boolean }, data: unknown, pretty: () => string): void {
  printResult(options.output === 'json', data, pretty, options.jsonLines === true);
}

/** Every SVID must verify against the bundle the Workload API sent with it, or the command fails. */
async function verifyContext(context: X509Context): Promise<void> {
  for (const [index, svid] of context.svids.entries()) {
    try {
      await verifyX509Svid(certificateChainDer(svid), context.bundles);
    } catch (error) {
      throw new CliError(
        `svids[${index}] (${svid.spiffeId.toString()}) does not verify against its bundle: ${(error as Error).message}`,
      );
    }
  }
}

function ownBundle(context: X509Context, index: number): TrustBundle {
  return context.bundles.getBundleForTrustDomain(
    (context.svids[index] as X509Context['svids'][number]).spiffeId.trustDomain,
  );
}

function federatedBundles(context: X509Context): TrustBundle[] {
  const own = new Set(context.svids.map((svid) => svid.spiffeId.trustDomain.name));
  return context.bundles.bundles().filter((bundle) => !own.has(bundle.trustDomain.name));
}

/** An SVID's chain in PEM, leaf first. */
function chainPem(svid: X509Context['svids'][number]): string {
  return encodePem('CERTIFICATE', certificateChainDer(svid));
}

// The SVIDs and bundles are read from their DER, without @peculiar/x509 objects: loading that library would take
// several times as long as the rest of the command (see bench/README.md, "Client command start-up").
function printX509Context(options: ApiOptions & { jsonLines?: boolean }, context: X509Context): void {
  const federated = federatedBundles(context);
  const leaves = context.svids.map((svid) => certificateSummary(certificateChainDer(svid)[0] as Uint8Array));
  print(
    options,
    {
      svids: context.svids.map((svid, index) => ({
        spiffe_id: svid.spiffeId.toString(),
        hint: svid.hint ?? '',
        not_before: leaves[index]?.notBefore.toISOString(),
        not_after: leaves[index]?.notAfter.toISOString(),
        x509_svid: chainPem(svid),
        bundle: ownBundle(context, index).x509Pem(),
      })),
      federated_bundles: Object.fromEntries(
        federated.map((bundle) => [bundle.trustDomain.idString(), bundle.x509Pem()]),
      ),
    },
    () =>
      [
        `Received ${context.svids.length} svid${context.svids.length === 1 ? '' : 's'}`,
        ...context.svids.map((svid, index) =>
          recordTable([
            ['SPIFFE ID', svid.spiffeId.toString()],
            ['SVID valid after', leaves[index]?.notBefore.toISOString() ?? ''],
            ['SVID valid until', leaves[index]?.notAfter.toISOString() ?? ''],
            ['Hint', svid.hint ? svid.hint : '(none)'],
            ...ownBundle(context, index)
              .x509AuthoritiesDer()
              .map(certificateSummary)
              .map((ca, i) => [`CA #${i + 1} valid until`, `${ca.notAfter.toISOString()} (${ca.subject})`] as const),
          ]),
        ),
        ...federated.map(
          (bundle) =>
            `Federated bundle ${bundle.trustDomain.idString()}: ${bundle.x509AuthoritiesDer().length} CA certificate(s)`,
        ),
      ].join('\n\n'),
  );
}

/** Mode of the certificates written by `--write`: public data, readable by all, as SPIRE writes them. */
const CERTIFICATE_MODE = 0o644;
/** Mode of the private keys written by `--write`. */
const KEY_MODE = 0o600;

/**
 * Writes svid.N.pem (chain), svid.N.key (PKCS#8, 0600), bundle.N.pem and federated_bundle.N.pem (0644), as SPIRE's
 * `-write`. Each file is replaced atomically (`writeFileAtomic`): a symlink or file another user planted at one of
 * these names is replaced, never written through, and never keeps its mode.
 */
export async function writeX509Files(outputDir: string, context: X509Context): Promise<void> {
  // Loaded here, not at the top: @sigil/runtime's index brings its config validation (class-validator, ~0.3 s to
  // load), which `api fetch` without --write does not need.
  const { ensureOwnDir, writeFileAtomic } = await import('@sigil/runtime');
  const { PEM_LABEL, exportPrivateKeyPkcs8, toPem } = await import('@sigil/pki');
  const dir = await ensureOwnDir(outputDir, 0o755, '--write');
  for (const [index, svid] of context.svids.entries()) {
    await writeFileAtomic(join(dir, `svid.${index}.pem`), chainPem(svid), {
      mode: CERTIFICATE_MODE,
    });
    await writeFileAtomic(
      join(dir, `svid.${index}.key`),
      toPem(PEM_LABEL.privateKey, exportPrivateKeyPkcs8(svid.privateKey)),
      { mode: KEY_MODE },
    );
    await writeFileAtomic(join(dir, `bundle.${index}.pem`), ownBundle(context, index).x509Pem(), {
      mode: CERTIFICATE_MODE,
    });
  }
  for (const [index, bundle] of federatedBundles(context).entries()) {
    await writeFileAtomic(join(dir, `federated_bundle.${index}.pem`), bundle.x509Pem(), { mode: CERTIFICATE_MODE });
  }
  await removeStaleFiles(dir, context.svids.length, federatedBundles(context).length);
}

const WRITTEN_NAME = /^(?:svid\.(\d+)\.(?:pem|key)|bundle\.(\d+)\.pem|federated_bundle\.(\d+)\.pem)$/;

/**
 * Removes the files of an earlier `--write` that this one did not rewrite (an SVID or a federated bundle that is
 * gone), so that nothing that globs the directory keeps trusting a bundle or using a key that is no longer ours.
 */
async function removeStaleFiles(dir: string, svids: number, federated: number): Promise<void> {
  for (const name of await readdir(dir)) {
    const match = WRITTEN_NAME.exec(name);
    if (match === null) continue;
    const [, svid, bundle, federatedBundle] = match;
    const stale =
      federatedBundle !== undefined ? Number(federatedBundle) >= federated : Number(svid ?? bundle) >= svids;
    if (stale) await rm(join(dir, name), { force: true });
  }
}

function fetchX509Command(): Command {
  return withWorkloadApiOptions(new Command('x509'))
    .description("fetch the caller's X509-SVIDs and bundles (FetchX509SVID); the default of `api fetch`")
    .option('--write <dir>', 'write svid.N.pem, svid.N.key (mode 0600) and bundle.N.pem into this directory')
    .option('--silent', 'print nothing on success (with --write: only write the files)')
    .action(async (options: ApiOptions & { write?: string; silent?: boolean }) => {
      await withClient(options, async (client, signal) => {
        const context = await client.fetchX509Context({ signal });
        await verifyContext(context);
        if (!options.silent) printX509Context(options, context);
        if (options.write !== undefined) {
          const dir = resolve(options.write);
          await writeX509Files(dir, context);
          if (options.output !== 'json' && !options.silent)
            process.stdout.write(`Wrote ${context.svids.length} SVID(s) and their bundles to ${dir}\n`);
        }
      });
    });
}

/** Collects `--audience`: repeatable, each value a comma-separated list (SPIRE's `-audience a,b`). */
function collectAudiences(value: string, previous: string[] = []): string[] {
  const audiences = value.split(',');
  for (const audience of audiences) {
    const problem = singleAudienceProblem(audience, 'each audience');
    if (problem !== undefined) throw new InvalidArgumentError(`${problem} (in '${value}')`);
  }
  return [...previous, ...audiences];
}

function fetchJwtCommand(): Command {
  return withWorkloadApiOptions(new Command('jwt'))
    .description('fetch JWT-SVIDs for an audience (FetchJWTSVID)')
    .requiredOption('--audience <a,b>', 'audiences, comma-separated (repeatable)', collectAudiences)
    .option('--spiffe-id <id>', 'only the JWT-SVID of this SPIFFE ID')
    .action(async (options: ApiOptions & { audience: string[]; spiffeId?: string }) => {
      await withClient(options, async (client, signal) => {
        const svids = await client.fetchJwtSvids({
          audience: options.audience,
          ...(options.spiffeId !== undefined && { spiffeId: options.spiffeId }),
          signal,
        });
        print(
          options,
          {
            svids: svids.map((svid) => ({
              spiffe_id: svid.spiffeId.toString(),
              svid: svid.token,
              hint: svid.hint ?? '',
              expires_at: svid.expiry.toISOString(),
            })),
          },
          () => svids.map((svid) => `token(${svid.spiffeId.toString()}):\n\t${svid.token}`).join('\n'),
        );
      });
    });
}

function validateJwtCommand(): Command {
  return withWorkloadApiOptions(new Command('jwt'))
    .description('validate a JWT-SVID for an audience (ValidateJWTSVID)')
    .requiredOption('--audience <audience>', 'the audience the token must carry')
    .requiredOption('--svid <token>', 'the JWT-SVID')
    .action(async (options: ApiOptions & { audience: string; svid: string }) => {
      await withClient(options, async (client, signal) => {
        let svid;
        try {
          svid = await client.validateJwtSvid(options.svid, options.audience, { signal });
        } catch (error) {
          if (
            error instanceof WorkloadApiError &&
            (error.status === 'invalid_argument' || error.code === 'ERR_RESPONSE_INVALID')
          ) {
            throw new CliError(`SVID is not valid: ${error.message}`);
          }
          throw error;
        }
        print(options, { spiffe_id: svid.spiffeId.toString(), claims: svid.claims }, () =>
          [
            'SVID is valid.',
            recordTable([
              ['SPIFFE ID', svid.spiffeId.toString()],
              ['Claims', JSON.stringify(svid.claims)],
            ]),
          ].join('\n'),
        );
      });
    });
}

function watchCommand(): Command {
  return withWorkloadApiOptions(new Command('watch'))
    .description('print every X509-SVID update until interrupted (FetchX509SVID stream)')
    .action(async (options: ApiOptions) => {
      const address = resolveWorkloadAddress(options.socketPath, process.env);
      const client = openWorkloadClient(address);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        let updates = Promise.resolve();
        await client.watchX509Context(
          (context) => {
            updates = updates
              .then(async () => {
                await verifyContext(context);
                if (options.output === 'pretty')
                  process.stdout.write(`--- update at ${new Date().toISOString()} ---\n`);
                printX509Context({ ...options, jsonLines: true }, context);
              })
              .catch((error: unknown) => {
                process.stderr.write(`${(error as Error).message}\n`);
              });
          },
          // Failures are retried with a backoff; each is reported on one line.
          (error) => process.stderr.write(`${describeWorkloadError(error, address, options.timeout)}\n`),
          { signal: stop.signal },
        );
        await updates;
      } catch (error) {
        if (error instanceof CliError) throw error;
        throw new CliError(describeWorkloadError(error, address, options.timeout));
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        await client.close();
      }
    });
}

/** `sigil-agent api fetch x509|jwt`, `api validate jwt`, `api watch`: the Workload API from the command line. */
export function apiCommand(): Command {
  const fetch = new Command('fetch')
    .description('fetch SVIDs: x509 (the default) or jwt')
    .addCommand(fetchX509Command(), { isDefault: true })
    .addCommand(fetchJwtCommand());
  const validate = new Command('validate').description('validate SVIDs').addCommand(validateJwtCommand());
  return new Command('api').addCommand(fetch).addCommand(validate).addCommand(watchCommand());
}
