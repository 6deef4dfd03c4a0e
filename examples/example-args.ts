import { parseArgs } from 'node:util';
import { X509Source, type X509Svid } from '@sigil/workload-api';

/** Where `npm start` (the quickstart) serves the Workload API. */
export const QUICKSTART_SOCKET = 'unix:///tmp/sigil-agent/public/api.sock';

/** Parses `--name value` flags; the `required` names are present afterwards (given, or from their default). Exits with a one-line reason on a bad command line. */
export function flags<N extends string, const R extends N = never>(
  usage: string,
  names: Readonly<Record<N, string | undefined>>,
  required: readonly R[] = [],
): Partial<Record<N, string>> & Record<R, string> & { address: string } {
  const options = Object.fromEntries(
    [...Object.keys(names), 'address'].map((name) => [name, { type: 'string' as const }]),
  );
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ options, strict: true }).values as Record<string, string | undefined>;
  } catch (error) {
    fail(`${(error as Error).message}\nusage: ${usage}`);
  }
  const result: Record<string, string> = {
    // The flag, else SPIFFE_ENDPOINT_SOCKET (what the library itself falls back to), else the quickstart's socket.
    address: (values['address'] as string | undefined) ?? process.env['SPIFFE_ENDPOINT_SOCKET'] ?? QUICKSTART_SOCKET,
  };
  for (const [name, fallback] of Object.entries(names) as [N, string | undefined][]) {
    const value = (values[name] as string | undefined) ?? fallback;
    if (value === undefined && (required as readonly string[]).includes(name))
      fail(`missing --${name}\nusage: ${usage}`);
    if (value !== undefined) result[name] = value;
  }
  return result as Partial<Record<N, string>> & Record<R, string> & { address: string };
}

/** A picker choosing the SVID of `spiffeId` among the workload's identities, or the default one when undefined. */
export function pickSvid(spiffeId: string | undefined): ((svids: readonly X509Svid[]) => X509Svid) | undefined {
  if (spiffeId === undefined) return undefined;
  return (svids) => {
    const svid = svids.find((candidate) => candidate.spiffeId.toString() === spiffeId);
    if (svid === undefined) {
      throw new Error(`this workload has no identity ${spiffeId} (it has ${svids.map((s) => s.spiffeId).join(', ')})`);
    }
    return svid;
  };
}

/** The workload's X.509 source (of `spiffeId`, or the default identity), or exit with the reason. */
export async function openX509Source(address: string, spiffeId: string | undefined): Promise<X509Source> {
  return X509Source.create({
    clientOptions: { address },
    picker: pickSvid(spiffeId),
    timeoutMs: 30_000,
    onError: (error) => console.error(`workload api: ${error.message}`),
  }).catch((error: Error) => fail(`cannot get an X.509-SVID: ${error.message}`));
}

export function fail(message: string): never {
  console.error(message);
  process.exit(1);
}
