import { existsSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { CliError, printResult } from '@sigil/runtime';
import type { Database } from '../database/database.js';
import type { MigrationMode } from '../database/data-source.js';
import { configFromOptions, runCommand, type RunOptions } from './run.command.js';

/** The options of `run` that say which database to open (the same flags, `SIGIL_*` environment and config file). */
const DATABASE_FLAGS = ['--config', '--data-dir', '--database-url', '--database-pool-timeout'];

function withDatabaseOptions(command: Command): Command {
  for (const option of runCommand().options) if (DATABASE_FLAGS.includes(option.long ?? '')) command.addOption(option);
  return command;
}

const outputOption = () => new Option('--output <format>', 'output format').choices(['text', 'json']).default('text');

/**
 * Opens the configured database (PostgreSQL, or the embedded one in the data dir) without Nest's application, with
 * log lines on stderr at warn level, so stdout holds only the command's answer.
 */
async function openDatabase(options: RunOptions, migrations: MigrationMode): Promise<Database> {
  const config = configFromOptions(options);
  const [
    { Database },
    { PendingMigrationsError },
    { Logger },
    { createRootLogger, PinoLoggerService },
    { default: pino },
  ] = await Promise.all([
    import('../database/database.js'),
    import('../database/data-source.js'),
    import('@nestjs/common'),
    import('../common/logging.js'),
    import('pino'),
  ]);
  Logger.overrideLogger(
    new PinoLoggerService(createRootLogger('warn', pino.destination({ fd: 2, sync: true }), { logFormat: 'text' })),
  );
  try {
    return await Database.open({
      ...(config.databaseUrl !== undefined && { databaseUrl: config.databaseUrl }),
      dataDir: config.dataDir,
      poolSize: 1,
      poolTimeoutMs: config.databasePoolTimeoutSeconds * 1000,
      migrations,
    });
  } catch (error) {
    if (error instanceof PendingMigrationsError) throw new CliError(error.message, 1, 'failed_precondition');
    const message = error instanceof Error ? error.message : String(error);
    throw new CliError(`cannot open the database: ${message}`, 1, 'unavailable');
  }
}

type MigrateOptions = RunOptions & { dryRun?: boolean; output: 'text' | 'json' };

/**
 * `sigil-server migrate [--dry-run]`: applies the pending migrations of this release (under the advisory lock `run`
 * takes, so it is safe while servers run), or lists them. On a data dir without an embedded database yet, the dry run
 * lists every migration and creates nothing.
 */
export function migrateCommand(): Command {
  return withDatabaseOptions(new Command('migrate'))
    .option('--dry-run', 'list the pending migrations without applying them or changing anything')
    .addOption(outputOption())
    .action(async (options: MigrateOptions) => {
      const { MIGRATIONS, SCHEMA_VERSION, pendingMigrations, runMigrations } =
        await import('../database/data-source.js');
      const config = configFromOptions(options);
      let names: string[];
      if (options.dryRun === true && config.databaseUrl === undefined && !existsSync(join(config.dataDir, 'db'))) {
        names = MIGRATIONS.map((migration) => migration.name);
      } else {
        const database = await openDatabase(options, 'leave');
        try {
          names =
            options.dryRun === true
              ? await pendingMigrations(database.dataSource)
              : await runMigrations(database.dataSource);
        } catch (error) {
          throw new CliError(`migrate: ${error instanceof Error ? error.message : String(error)}`, 1, 'unknown');
        } finally {
          await database.close();
        }
      }
      const dryRun = options.dryRun === true;
      printResult(
        options.output === 'json',
        { dry_run: dryRun, [dryRun ? 'pending' : 'applied']: names, schema_version: SCHEMA_VERSION },
        () => {
          if (names.length === 0) return `No migration pending: the schema is at ${SCHEMA_VERSION}.`;
          const head = dryRun ? `${names.length} migration(s) pending:` : `Applied ${names.length} migration(s):`;
          return [head, ...names.map((name) => `  ${name}`)].join('\n');
        },
      );
    });
}

/** `sigil-server export --path FILE|-`: every row of the database, as JSON (see database/transfer.ts). */
export function exportCommand(): Command {
  return withDatabaseOptions(new Command('export'))
    .requiredOption('--path <file>', 'file to create (mode 0600; an existing file is not overwritten), or - for stdout')
    .addOption(outputOption())
    .action(async (options: RunOptions & { path: string }) => {
      const { exportDatabase } = await import('../database/transfer.js');
      // The file first: an existing one is refused before the database is opened.
      const handle =
        options.path === '-'
          ? undefined
          : await open(options.path, 'wx', 0o600).catch((error: NodeJS.ErrnoException) => {
              throw new CliError(
                error.code === 'EEXIST'
                  ? `export: ${options.path} exists; remove it or name another file`
                  : `export: cannot create ${options.path} (${error.code ?? error.message})`,
                1,
                'invalid_argument',
              );
            });
      try {
        const database = await openDatabase(options, 'require');
        let text: string;
        try {
          text = `${JSON.stringify(await exportDatabase(database.dataSource))}\n`;
        } finally {
          await database.close();
        }
        if (handle === undefined) process.stdout.write(text);
        else await handle.writeFile(text);
        await handle?.close();
      } catch (error) {
        if (handle !== undefined) {
          await handle.close().catch(() => undefined);
          await rm(options.path, { force: true });
        }
        throw error;
      }
    });
}

type ImportOptions = RunOptions & { path: string; force?: boolean; output: 'text' | 'json' };

/**
 * `sigil-server import --path FILE|- [--force]`: writes an export into the configured database, migrated to this
 * release first, in one transaction. A database holding anything is refused unless `--force`, which deletes it all.
 */
export function importCommand(): Command {
  return withDatabaseOptions(new Command('import'))
    .requiredOption('--path <file>', 'file written by sigil-server export, or - for stdin')
    .option('--force', 'import into a database that holds data: every row it holds is deleted first')
    .addOption(outputOption())
    .action(async (options: ImportOptions) => {
      const text = await (options.path === '-' ? readStdin() : readFile(options.path, 'utf8')).catch(
        (error: NodeJS.ErrnoException) => {
          throw new CliError(
            `import: cannot read ${options.path} (${error.code ?? error.message})`,
            1,
            'invalid_argument',
          );
        },
      );
      let input: unknown;
      try {
        input = JSON.parse(text);
      } catch (error) {
        throw new CliError(`import: input is not JSON (${(error as Error).message})`, 1, 'invalid_argument');
      }
      const { TransferError, importDatabase } = await import('../database/transfer.js');
      const database = await openDatabase(options, 'apply');
      let counts: Record<string, number>;
      try {
        counts = await importDatabase(database.dataSource, input, { replace: options.force === true });
      } catch (error) {
        if (error instanceof TransferError) throw new CliError(`import: ${error.message}`, 1, 'invalid_argument');
        throw error;
      } finally {
        await database.close();
      }
      const total = Object.values(counts).reduce((sum, count) => sum + count, 0);
      printResult(options.output === 'json', { imported: counts }, () =>
        [
          `Imported ${total} row(s):`,
          ...Object.entries(counts).map(([table, count]) => `  ${table.padEnd(24)} ${count}`),
        ].join('\n'),
      );
    });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
