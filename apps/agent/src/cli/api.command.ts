import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type MessageShape } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { TrustBundle, TrustDomain, parseX509Svid, verifyX509Svid } from '@sigil/spiffe';
import { type X509SVIDResponseSchema } from '@sigil/workload-api';
import { Command, Option } from 'commander';
import { CliError } from './cli-error.js';
import {
  type WorkloadConnection,
  describeRpcError,
  openWorkloadConnection,
  resolveSocketPath,
} from './workload-client.js';

type X509SvidResponse = MessageShape<typeof X509SVIDResponseSchema>;

export interface ApiOptions {
  socketPath?: string;
  output: 'pretty' | 'json';
  timeout: number;
}

const positiveSeconds = (value: string): number => {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0)
    throw new CliError(`--timeout: must be a positive number of seconds, got '${value}'`);
  return seconds;
};

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Adds the options every Workload API command takes. */
export function withWorkloadApiOptions(command: Command): Command {
  return command
    .option(
      '--socket-path <path>',
      'Workload API socket, a path or unix:///path (default: SPIFFE_ENDPOINT_SOCKET, else /tmp/sigil-agent/public/api.sock)',
    )
    .addOption(new Option('--output <format>', 'output format').choices(['pretty', 'json']).default('pretty'))
    .option('--timeout <seconds>', 'how long to wait for the agent', positiveSeconds, 5);
}

/** Runs `work` on a connection to the Workload API, turning RPC failures into one-line CLI errors. */
export async function withConnection<T>(
  options: ApiOptions,
  work: (connection: WorkloadConnection) => Promise<T>,
): Promise<T> {
  const connection = openWorkloadConnection(resolveSocketPath(options.socketPath, process.env));
  try {
    return await work(connection);
  } catch (error) {
    if (error instanceof CliError) throw error;
    if (error instanceof ConnectError || (error as Error).name === 'ConnectError') {
      throw new CliError(describeRpcError(error, connection.address));
    }
    throw error;
  } finally {
    connection.close();
  }
}

function print(options: ApiOptions & { jsonLines?: boolean }, data: unknown, pretty: () => string): void {
  const json = options.jsonLines === true ? JSON.stringify(data) : JSON.stringify(data, null, 2);
  process.stdout.write(options.output === 'json' ? `${json}\n` : `${pretty()}\n`);
}

function table(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)} : ${value}`).join('\n');
}

/** The parsed and verified content of one `X509SVIDResponse`. */
async function describeX509Response(response: X509SvidResponse) {
  return Promise.all(
    response.svids.map(async (svid, index) => {
      const parsed = await parseX509Svid(svid.x509Svid, svid.x509SvidKey).catch((error: Error) => {
        throw new CliError(`svids[${index}]: ${error.message}`);
      });
      const bundle = TrustBundle.fromX509Der(parsed.spiffeId.trustDomain, svid.bundle);
      await verifyX509Svid(svid.x509Svid, bundle).catch((error: Error) => {
        throw new CliError(
          `svids[${index}] (${parsed.spiffeId.toString()}) does not verify against its bundle: ${error.message}`,
        );
      });
      const leaf = parsed.certificates[0] as (typeof parsed.certificates)[number];
      return { svid, parsed, bundle, leaf };
    }),
  );
}

async function printX509Response(
  options: ApiOptions & { jsonLines?: boolean },
  response: X509SvidResponse,
): Promise<Awaited<ReturnType<typeof describeX509Response>>> {
  const svids = await describeX509Response(response);
  const federated = Object.entries(response.federatedBundles).map(
    ([key, der]) => [key, TrustBundle.fromX509Der(TrustDomain.parse(key), der)] as const,
  );
  print(
    options,
    {
      svids: svids.map(({ svid, parsed, bundle, leaf }) => ({
        spiffe_id: svid.spiffeId,
        hint: svid.hint,
        not_before: leaf.notBefore.toISOString(),
        not_after: leaf.notAfter.toISOString(),
        x509_svid: parsed.certificates
          .map((certificate) => toPem(PEM_LABEL.certificate, new Uint8Array(certificate.rawData)))
          .join(''),
        bundle: bundle.x509Pem(),
      })),
      federated_bundles: Object.fromEntries(federated.map(([key, bundle]) => [key, bundle.x509Pem()])),
    },
    () =>
      [
        `Received ${svids.length} svid${svids.length === 1 ? '' : 's'}`,
        ...svids.map(({ svid, leaf, bundle }) =>
          table([
            ['SPIFFE ID', svid.spiffeId],
            ['SVID valid after', leaf.notBefore.toISOString()],
            ['SVID valid until', leaf.notAfter.toISOString()],
            ['Hint', svid.hint === '' ? '(none)' : svid.hint],
            ...bundle.x509Authorities.map(
              (ca, i) => [`CA #${i + 1} valid until`, `${ca.notAfter.toISOString()} (${ca.subject})`] as const,
            ),
          ]),
        ),
        ...federated.map(
          ([key, bundle]) => `Federated bundle ${key}: ${bundle.x509Authorities.length} CA certificate(s)`,
        ),
      ].join('\n\n'),
  );
  return svids;
}

/** Writes svid.N.pem (chain), svid.N.key (PKCS#8, 0600) and bundle.N.pem, as SPIRE's `api fetch x509 -write`. */
async function writeX509Files(
  dir: string,
  svids: Awaited<ReturnType<typeof describeX509Response>>,
  response: X509SvidResponse,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [index, { svid, parsed, bundle }] of svids.entries()) {
    const chain = parsed.certificates.map((certificate) =>
      toPem(PEM_LABEL.certificate, new Uint8Array(certificate.rawData)),
    );
    await writeFile(join(dir, `svid.${index}.pem`), chain.join(''), { mode: 0o644 });
    await writeFile(join(dir, `svid.${index}.key`), toPem(PEM_LABEL.privateKey, svid.x509SvidKey), { mode: 0o600 });
    await writeFile(join(dir, `bundle.${index}.pem`), bundle.x509Pem(), { mode: 0o644 });
  }
  for (const [index, [key, der]] of Object.entries(response.federatedBundles).entries()) {
    await writeFile(
      join(dir, `federated_bundle.${index}.pem`),
      TrustBundle.fromX509Der(TrustDomain.parse(key), der).x509Pem(),
      { mode: 0o644 },
    );
  }
}

async function firstMessage<T>(stream: AsyncIterable<T>): Promise<T> {
  for await (const message of stream) return message;
  throw new CliError('the Workload API closed the stream without an answer');
}

function fetchX509Command(): Command {
  return withWorkloadApiOptions(new Command('x509'))
    .description("fetch the caller's X509-SVIDs and bundles (FetchX509SVID)")
    .option('--write <dir>', 'write svid.N.pem, svid.N.key (mode 0600) and bundle.N.pem into this directory')
    .action(async (options: ApiOptions & { write?: string }) => {
      await withConnection(options, async ({ client }) => {
        const response = await firstMessage(client.fetchX509SVID({}, { timeoutMs: options.timeout * 1000 }));
        const svids = await printX509Response(options, response);
        if (options.write !== undefined) {
          const dir = resolve(options.write);
          await writeX509Files(dir, svids, response);
          if (options.output !== 'json')
            process.stdout.write(`Wrote ${svids.length} SVID(s) and bundle(s) to ${dir}\n`);
        }
      });
    });
}

function fetchJwtCommand(): Command {
  return withWorkloadApiOptions(new Command('jwt'))
    .description('fetch a JWT-SVID for an audience (FetchJWTSVID)')
    .requiredOption('--audience <audience>', 'audience (repeatable)', collect)
    .option('--spiffe-id <id>', 'only the JWT-SVID of this SPIFFE ID')
    .action(async (options: ApiOptions & { audience: string[]; spiffeId?: string }) => {
      await withConnection(options, async ({ client }) => {
        const response = await client.fetchJWTSVID(
          { audience: options.audience, spiffeId: options.spiffeId ?? '' },
          { timeoutMs: options.timeout * 1000 },
        );
        print(
          options,
          { svids: response.svids.map((svid) => ({ spiffe_id: svid.spiffeId, svid: svid.svid, hint: svid.hint })) },
          () => response.svids.map((svid) => `token(${svid.spiffeId}):\n\t${svid.svid}`).join('\n'),
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
      await withConnection(options, async ({ client, address }) => {
        let response;
        try {
          response = await client.validateJWTSVID(
            { audience: options.audience, svid: options.svid },
            { timeoutMs: options.timeout * 1000 },
          );
        } catch (error) {
          const connectError = ConnectError.from(error);
          if (connectError.code === Code.InvalidArgument)
            throw new CliError(`SVID is not valid: ${connectError.rawMessage}`);
          throw new CliError(describeRpcError(error, address));
        }
        const claims = response.claims ?? {};
        print(options, { spiffe_id: response.spiffeId, claims }, () =>
          [
            'SVID is valid.',
            table([
              ['SPIFFE ID', response.spiffeId],
              ['Claims', JSON.stringify(claims)],
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
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await withConnection(options, async ({ client }) => {
          try {
            for await (const response of client.fetchX509SVID({}, { signal: stop.signal })) {
              if (options.output === 'pretty') process.stdout.write(`--- update at ${new Date().toISOString()} ---\n`);
              await printX509Response({ ...options, jsonLines: true }, response);
            }
          } catch (error) {
            if (stop.signal.aborted) return;
            throw error;
          }
        });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}

/** `sigil-agent api fetch x509|jwt`, `api validate jwt`, `api watch`: the Workload API from the command line. */
export function apiCommand(): Command {
  const fetch = new Command('fetch')
    .description('fetch SVIDs')
    .addCommand(fetchX509Command())
    .addCommand(fetchJwtCommand());
  const validate = new Command('validate').description('validate SVIDs').addCommand(validateJwtCommand());
  return new Command('api')
    .description('call the SPIFFE Workload API of a running agent')
    .addCommand(fetch)
    .addCommand(validate)
    .addCommand(watchCommand());
}
