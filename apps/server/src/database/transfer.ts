import type { DataSource, EntityManager, EntityMetadata, EntityTarget, ObjectLiteral } from 'typeorm';
import { CaKeyEntity } from '../ca/ca-key.entity.js';
import { CA_KEYS_REVISION_SEQUENCE } from '../ca/ca-keys.repository.js';
import { RevisionCounterEntity } from '../entries/entry-event.entity.js';
import { X509popChallengeEntity } from '../node-attestation/x509pop/x509pop-challenge.entity.js';
import { ENTITIES, SCHEMA_VERSION } from './data-source.js';

type ColumnMetadata = EntityMetadata['columns'][number];

/** `format` of a file written by `sigil-server export`. */
export const EXPORT_FORMAT = 'sigil-server-export';
/** Version of the file's layout (the rows themselves follow the schema, {@link SCHEMA_VERSION}). */
export const EXPORT_FORMAT_VERSION = 1;

/**
 * Every row of the server's database, table by table, as `sigil-server export` writes it and `sigil-server import`
 * reads it. Columns keep their database names; timestamps are ISO 8601 strings, `bytea` columns base64. CA private
 * keys stay sealed under the key-encryption key, admin and join tokens stay SHA-256 hashes.
 */
export interface ExportFile {
  format: typeof EXPORT_FORMAT;
  format_version: typeof EXPORT_FORMAT_VERSION;
  /** The newest migration of the exporting release: the file's rows have that schema. */
  schema_version: string;
  exported_at: string;
  tables: Record<string, Record<string, unknown>[]>;
}

/** What an import wrote: rows per table. */
export type ImportCounts = Record<string, number>;

/** An export file that does not hold what this release can import, or a target it refuses; the message says which. */
export class TransferError extends Error {
  override readonly name = 'TransferError';
}

/**
 * The tables in the order rows are inserted (parents first: an entry before its selectors). The change log and
 * revision counter come along, so agents that synced up to revision R against the old database get deltas after R
 * from the new one. Identity columns (`audit_log.id`) are left out: PostgreSQL numbers the rows again, in order.
 */
function tablesOf(dataSource: DataSource): EntityMetadata[] {
  return ENTITIES.filter((entity) => !TRANSIENT.has(entity)).map((entity) => dataSource.getMetadata(entity));
}

/**
 * Tables of passing state, neither exported nor imported: outstanding x509pop challenges live a minute and are
 * answerable once; a restored database starts without any, and agents ask for new ones.
 */
const TRANSIENT: ReadonlySet<(typeof ENTITIES)[number]> = new Set([X509popChallengeEntity]);

function exportedColumns(metadata: EntityMetadata): ColumnMetadata[] {
  // GENERATED ALWAYS AS IDENTITY (`audit_log.id`) takes no value on insert; the uuid keys are kept.
  return metadata.columns.filter((column) => column.generatedIdentity !== 'ALWAYS');
}

function columnType(column: ColumnMetadata): string {
  return typeof column.type === 'string' ? column.type : column.type.name.toLowerCase();
}

/**
 * Reads every table in one REPEATABLE READ transaction, so the file is one consistent snapshot even while servers
 * keep writing (on PostgreSQL; the embedded database is only opened by a stopped server's data dir).
 */
export async function exportDatabase(dataSource: DataSource, now: Date = new Date()): Promise<ExportFile> {
  const tables: ExportFile['tables'] = {};
  await dataSource.transaction('REPEATABLE READ', async (manager) => {
    for (const metadata of tablesOf(dataSource)) {
      const columns = exportedColumns(metadata);
      const builder = manager
        .createQueryBuilder(metadata.target as EntityTarget<ObjectLiteral>, 'row')
        // Every column, `select: false` ones (token hashes, sealed keys) too.
        .select(columns.map((column) => `row.${column.propertyPath}`));
      for (const [index, column] of metadata.primaryColumns.entries()) {
        builder[index === 0 ? 'orderBy' : 'addOrderBy'](`row.${column.propertyPath}`);
      }
      const rows = await builder.getMany();
      tables[metadata.tableName] = rows.map((row) =>
        Object.fromEntries(columns.map((column) => [column.databaseName, toFileValue(column.getEntityValue(row))])),
      );
    }
  });
  return {
    format: EXPORT_FORMAT,
    format_version: EXPORT_FORMAT_VERSION,
    schema_version: SCHEMA_VERSION,
    exported_at: now.toISOString(),
    tables,
  };
}

function toFileValue(value: unknown): unknown {
  if (value instanceof Date) return value.toISOString();
  if (Buffer.isBuffer(value)) return value.toString('base64');
  return value ?? null;
}

/**
 * Checks `input` (parsed JSON) against this release's tables and converts every row to entity values. Throws a
 * {@link TransferError} naming the first problem's place (`tables.agents[2].banned: …`).
 */
export function parseExportFile(
  dataSource: DataSource,
  input: unknown,
): Map<EntityMetadata, Record<string, unknown>[]> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TransferError('input: must be a JSON object written by sigil-server export');
  }
  const file = input as Record<string, unknown>;
  if (file['format'] !== EXPORT_FORMAT) {
    throw new TransferError(`input: format must be '${EXPORT_FORMAT}' (a file written by sigil-server export)`);
  }
  if (file['format_version'] !== EXPORT_FORMAT_VERSION) {
    throw new TransferError(
      `input: format_version ${JSON.stringify(file['format_version'])} is not supported; this release reads ` +
        `${EXPORT_FORMAT_VERSION}`,
    );
  }
  if (file['schema_version'] !== SCHEMA_VERSION) {
    throw new TransferError(
      `input: schema_version ${JSON.stringify(file['schema_version'])} is not this release's (${SCHEMA_VERSION}); ` +
        'export and import with the same release (upgrade the source first, then export)',
    );
  }
  const tables = file['tables'];
  if (typeof tables !== 'object' || tables === null || Array.isArray(tables)) {
    throw new TransferError('input: tables must be an object of table name to rows');
  }
  const metadatas = tablesOf(dataSource);
  const known = new Set(metadatas.map((metadata) => metadata.tableName));
  const unknown = Object.keys(tables).filter((name) => !known.has(name));
  if (unknown.length > 0) throw new TransferError(`input: tables.${unknown[0]}: not a table of this release`);
  const parsed = new Map<EntityMetadata, Record<string, unknown>[]>();
  for (const metadata of metadatas) {
    const rows = (tables as Record<string, unknown>)[metadata.tableName];
    const where = `tables.${metadata.tableName}`;
    if (!Array.isArray(rows)) throw new TransferError(`input: ${where}: must be an array of rows`);
    parsed.set(
      metadata,
      rows.map((row: unknown, index) => parseRow(metadata, row, `${where}[${index}]`)),
    );
  }
  return parsed;
}

function parseRow(metadata: EntityMetadata, row: unknown, where: string): Record<string, unknown> {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) {
    throw new TransferError(`input: ${where}: must be an object of column values`);
  }
  const values = row as Record<string, unknown>;
  const columns = exportedColumns(metadata);
  const names = new Set(columns.map((column) => column.databaseName));
  const extra = Object.keys(values).find((key) => !names.has(key));
  if (extra !== undefined) throw new TransferError(`input: ${where}.${extra}: not a column of ${metadata.tableName}`);
  const entity: Record<string, unknown> = {};
  for (const column of columns) {
    const at = `${where}.${column.databaseName}`;
    if (!Object.hasOwn(values, column.databaseName)) throw new TransferError(`input: ${at}: missing`);
    column.setEntityValue(entity, parseValue(column, values[column.databaseName], at));
  }
  return entity;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})$/;

/** One column's file value as the entity holds it; the database's own constraints check the rest at insert. */
function parseValue(column: ColumnMetadata, value: unknown, at: string): unknown {
  if (value === null) {
    if (column.isNullable) return null;
    throw new TransferError(`input: ${at}: must not be null`);
  }
  const fail = (rule: string): never => {
    const shown = JSON.stringify(value);
    throw new TransferError(
      `input: ${at}: must be ${rule}, got ${shown.length > 60 ? `${shown.slice(0, 60)}…` : shown}`,
    );
  };
  const type = columnType(column);
  switch (type) {
    case 'uuid':
      return typeof value === 'string' && UUID.test(value) ? value : fail('a lowercase UUID');
    case 'text':
    case 'varchar':
    case 'string': {
      if (typeof value !== 'string') return fail('a string');
      const length = Number(column.length);
      if (length > 0 && [...value].length > length) return fail(`at most ${length} characters`);
      return value;
    }
    case 'integer':
    case 'int':
      return Number.isSafeInteger(value) && Math.abs(value as number) < 2 ** 31 ? value : fail('an integer');
    case 'bigint': {
      const digits = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
      if (typeof digits !== 'string' || !/^-?\d{1,19}$/.test(digits)) return fail('an integer');
      // Entities with a transformer hold numbers; the others the string pg hands over.
      return column.transformer === undefined ? digits : Number(digits);
    }
    case 'boolean':
      return typeof value === 'boolean' ? value : fail('true or false');
    case 'timestamptz': {
      const time = typeof value === 'string' && ISO_TIMESTAMP.test(value) ? new Date(value) : undefined;
      return time !== undefined && !Number.isNaN(time.getTime()) ? time : fail('an ISO 8601 timestamp');
    }
    case 'bytea':
      return typeof value === 'string' && BASE64.test(value) ? Buffer.from(value, 'base64') : fail('base64');
    case 'jsonb':
      return value;
    default:
      throw new Error(`export: column ${column.entityMetadata.tableName}.${column.databaseName} has type ${type}`);
  }
}

/**
 * Writes the rows of an export file into `dataSource`'s database (migrated to this release), in one transaction.
 * A database that holds anything (an entry, an agent, a CA key, a token, a bundle, an audit record, a registry
 * revision above 0) is refused unless `replace` is set: then every row it holds is deleted first, in the same
 * transaction. Nothing is written when a row breaks a constraint; the error names the table.
 */
export async function importDatabase(
  dataSource: DataSource,
  input: unknown,
  options: { replace?: boolean } = {},
): Promise<ImportCounts> {
  const parsed = parseExportFile(dataSource, input);
  const counts: ImportCounts = {};
  await dataSource.transaction(async (manager) => {
    const held = await heldRows(manager, [...parsed.keys()]);
    if (held.length > 0 && options.replace !== true) {
      throw new TransferError(
        `the target database is not empty (${held.join(', ')}); import into a new database, or pass --force to ` +
          'delete everything it holds first',
      );
    }
    // Children first; the revision counter row the first migration made goes too, the file has the real one.
    for (const metadata of [...parsed.keys()].reverse()) {
      await manager.createQueryBuilder().delete().from(metadata.target).execute();
    }
    // Passing state of the database replaced goes with it: a challenge issued before the restore is not answerable.
    for (const entity of TRANSIENT) await manager.createQueryBuilder().delete().from(entity).execute();
    for (const [metadata, rows] of parsed) {
      // In chunks: PostgreSQL takes at most 65,535 parameters in one statement.
      const chunk = Math.max(1, Math.floor(10_000 / Math.max(1, exportedColumns(metadata).length)));
      for (let start = 0; start < rows.length; start += chunk) {
        try {
          await manager.insert(metadata.target, rows.slice(start, start + chunk));
        } catch (error) {
          throw new TransferError(
            `input: tables.${metadata.tableName}: ${error instanceof Error ? error.message : String(error)}`,
            { cause: error },
          );
        }
      }
      counts[metadata.tableName] = rows.length;
    }
    // Revisions taken from the sequence after the import must stay above every imported one.
    const revisions = parsed.get(dataSource.getMetadata(CaKeyEntity)) ?? [];
    const highest = revisions.reduce((max, row) => Math.max(max, Number(row['revision'])), 0);
    if (highest > 0) await manager.query('SELECT setval($1, $2)', [CA_KEYS_REVISION_SEQUENCE, highest]);
  });
  return counts;
}

/** `table: n rows` for each table holding anything beyond what the migrations put in a new database. */
async function heldRows(manager: EntityManager, metadatas: readonly EntityMetadata[]): Promise<string[]> {
  const held: string[] = [];
  for (const metadata of metadatas) {
    const builder = manager.createQueryBuilder(metadata.target as EntityTarget<ObjectLiteral>, 'row');
    // A new database has the registry's counter at revision 0 (first migration); one that moved on is not new.
    if (metadata.target === RevisionCounterEntity) builder.where('row.revision > 0 OR row.prunedThrough > 0');
    const count = await builder.getCount();
    if (count > 0) held.push(`${metadata.tableName}: ${count} row${count === 1 ? '' : 's'}`);
  }
  return held;
}
