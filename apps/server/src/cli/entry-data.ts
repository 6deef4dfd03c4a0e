import { readFile } from 'node:fs/promises';
import { CliError } from '@sigil/runtime';

/**
 * `entry create|update|delete --data FILE|-`: SPIRE's JSON batch files, read and checked here, mapped to the admin
 * API's entry bodies. Entries are SPIRE's `common.RegistrationEntries`
 * (`{"entries": [{"spiffe_id": "spiffe://…", "parent_id": "…", "selectors": [{"type", "value"}], "entry_id",
 * "x509_svid_ttl", "jwt_svid_ttl", "dns_names", "federates_with", "admin", "downstream", "hint", "entryExpiry"}]}`),
 * deletions SPIRE's `BatchDeleteEntryRequest` (`{"ids": ["…"]}`). Go's JSON decoder matches keys case-insensitively,
 * so this does too; a key SPIRE does not have, or one Sigil does not support with a value set, is refused by name.
 */

/** Largest file or stdin `--data` reads (a 500-entry batch with long IDs is well under 2 MiB). */
export const MAX_DATA_BYTES = 16 * 1024 * 1024;

/** SPIRE's entry keys (lowercased) → Sigil's admin API field; `null`: output-only in SPIRE, ignored here. */
const ENTRY_KEYS: Readonly<Record<string, string | null>> = {
  entry_id: 'id',
  spiffe_id: 'spiffe_id',
  parent_id: 'parent_id',
  selectors: 'selectors',
  x509_svid_ttl: 'x509_svid_ttl',
  jwt_svid_ttl: 'jwt_svid_ttl',
  dns_names: 'dns_names',
  federates_with: 'federates_with',
  admin: 'admin',
  downstream: 'downstream',
  hint: 'hint',
  entryexpiry: 'expires_at',
  revision_number: null,
  created_at: null,
};

/** SPIRE keys Sigil has no feature for: refused when set, accepted at their zero value. */
const UNSUPPORTED_KEYS: Readonly<Record<string, string>> = {
  store_svid: 'SVIDStore plugins are not supported',
  additional_attributes: 'additional attributes (X509-SVID prefetch, JWT jti) are not supported',
};

/** An entry of a data file as the admin API takes it (create body, or with `id` the full replacement on update). */
export type EntryBody = Record<string, unknown>;

/** Reads `--data`: a file, or stdin for `-`, at most {@link MAX_DATA_BYTES}, parsed as JSON. */
export async function readDataFile(path: string): Promise<unknown> {
  const bytes = await readInput(path, '--data', MAX_DATA_BYTES);
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (error) {
    throw new CliError(`--data: not JSON: ${(error as Error).message}`, 1, 'invalid_argument');
  }
}

/** Reads what `flag` names: a file, or stdin for `-`, refused past `maxBytes`. */
export async function readInput(path: string, flag: string, maxBytes: number): Promise<Buffer> {
  let bytes: Buffer;
  try {
    bytes = path === '-' ? await readStdin(flag, maxBytes) : await readFile(path);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`${flag}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  if (bytes.length > maxBytes) throw new CliError(`${flag}: larger than ${maxBytes} bytes`);
  return bytes;
}

async function readStdin(flag: string, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new CliError(`${flag}: stdin is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * The entries of a SPIRE registration file, each as an admin API body. `forUpdate`: each must carry `entry_id`, and
 * the body replaces the whole entry, as SPIRE's update does (a field left out is cleared: no DNS names, no hint, no
 * expiry, default TTLs, not admin, not downstream).
 */
export function parseEntriesData(data: unknown, forUpdate: boolean): EntryBody[] {
  const list = field(data, 'entries', '--data');
  if (!Array.isArray(list) || list.length === 0)
    throw invalid('--data: "entries" must be a list of at least one entry');
  return list.map((raw, index) => parseEntry(raw, `entries[${index}]`, forUpdate));
}

/** The entry IDs of a SPIRE batch delete file (`{"ids": [...]}`). */
export function parseDeleteData(data: unknown): string[] {
  const ids = field(data, 'ids', '--data');
  if (!Array.isArray(ids) || ids.length === 0) throw invalid('--data: "ids" must be a list of at least one entry ID');
  return ids.map((id, index) => {
    if (typeof id !== 'string' || id === '') throw invalid(`--data: ids[${index}] must be a non-empty string`);
    return id;
  });
}

function parseEntry(raw: unknown, where: string, forUpdate: boolean): EntryBody {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalid(`${where}: must be an object`);
  const body: EntryBody = forUpdate
    ? {
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: [],
        federates_with: [],
        admin: false,
        downstream: false,
        hint: '',
        expires_at: null,
      }
    : {};
  for (const [key, value] of Object.entries(raw)) {
    const name = key.toLowerCase();
    const unsupported = UNSUPPORTED_KEYS[name];
    if (unsupported !== undefined) {
      if (value === false || value === null || (typeof value === 'object' && Object.keys(value).length === 0)) continue;
      throw invalid(`${where}.${key}: ${unsupported}`);
    }
    if (!(name in ENTRY_KEYS)) throw invalid(`${where}: unknown key ${JSON.stringify(key)}`);
    const target = ENTRY_KEYS[name];
    if (target === null || target === undefined || value === null) continue;
    if (target === 'expires_at') {
      body[target] = expiry(value, `${where}.${key}`);
    } else if (target === 'id') {
      if (value !== '') body[target] = value;
    } else {
      // Types and meaning are checked by the server, which names the field.
      body[target] = value;
    }
  }
  if (forUpdate && typeof body['id'] !== 'string') throw invalid(`${where}: entry_id is required to update an entry`);
  return body;
}

/** SPIRE's `entryExpiry`: Unix seconds, 0 for none. */
function expiry(value: unknown, where: string): string | null {
  if (value === 0) return null;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`${where}: must be Unix seconds (0: no expiry), got ${JSON.stringify(value)}`);
  }
  return new Date(value * 1000).toISOString();
}

/** A top-level key of a data file, matched case-insensitively as Go's decoder does. */
function field(data: unknown, name: string, where: string): unknown {
  if (typeof data !== 'object' || data === null || Array.isArray(data))
    throw invalid(`${where}: must be a JSON object`);
  const keys = Object.keys(data).filter((key) => key.toLowerCase() === name);
  if (keys.length !== 1) throw invalid(`${where}: must have one "${name}" key`);
  return (data as Record<string, unknown>)[keys[0]!];
}

function invalid(message: string): CliError {
  return new CliError(message, 1, 'invalid_argument');
}
