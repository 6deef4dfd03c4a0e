/**
 * The database operations of the real `sigil-server` binary: `migrate [--dry-run]` on a new database, `run
 * --skip-migrations` refusing an old schema, and the move from the embedded database to PostgreSQL with `export` and
 * `import`, after which an agent that attested against the first server keeps syncing, receives new entries and renews
 * its own SVID against the second one without attesting again.
 *
 * Migrations are tested on this run's database kind (a new embedded data dir, or a private PostgreSQL database); the
 * move always imports into a private database on the PostgreSQL server at 127.0.0.1:5432 (this run's DATABASE_URL
 * when set), created and dropped here.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../apps/server/src/database/data-source.js';
import { AgentStorage } from '../../apps/agent/src/storage/agent-storage.js';
import { isEmbeddedRun } from '../support/database.js';
import {
  AGENT_BIN,
  SERVER_BIN,
  type ServerProcess,
  type SigilProcess,
  agentReady,
  requireBuild,
  runBin,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';

const TD = 'spiffe://example.org';
const UID = process.getuid!();
const ALL = MIGRATIONS.map((migration) => migration.name);
const ADMIN_URL = process.env['DATABASE_URL'] || 'postgres://postgres@127.0.0.1:5432/postgres';

async function postgresReachable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const NO_POSTGRES = !(await postgresReachable());
const NO_POSTGRES_REASON = NO_POSTGRES ? ` (skipped: no PostgreSQL answers at ${new URL(ADMIN_URL).host})` : '';

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** A new, empty PostgreSQL database of this file's own; `drop()` in afterAll. */
async function privateDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `sigil_import_${randomBytes(6).toString('hex')}`;
  await admin((client) => client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin((client) => client.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`));
    },
  };
}

/** An entry for this test's user, under the agent's alias. */
const workloadEntry = (on: ServerProcess, spiffeId: string) =>
  on.json(['entry', 'create', '--parent-id', `${TD}/host/a`, '--spiffe-id', spiffeId, '--selector', `unix:uid:${UID}`]);

const server = (args: readonly string[], input?: string) => runBin(SERVER_BIN, args, {}, input);
const json = <T>(stdout: string): T => JSON.parse(stdout) as T;

describe('sigil-server migrate and --skip-migrations (real binary)', { timeout: 120_000 }, () => {
  let dir: string;
  let database: string[];
  const drops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    requireBuild();
    dir = await mkdtemp(join(tmpdir(), 'sigil-migrate-'));
    if (isEmbeddedRun()) {
      database = ['--data-dir', join(dir, 'server')];
    } else {
      const { url, drop } = await privateDatabase();
      drops.push(drop);
      database = ['--data-dir', join(dir, 'server'), '--database-url', url];
    }
  });

  afterAll(async () => {
    for (const drop of drops) await drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('lists every migration on a new database without changing it, applies them once, then has none', async () => {
    const dry = await server(['migrate', '--dry-run', ...database, '--output', 'json']);
    expect(dry.code).toBe(0);
    expect(json(dry.stdout)).toEqual({ dry_run: true, pending: ALL, schema_version: ALL.at(-1) });
    if (isEmbeddedRun()) {
      expect(existsSync(join(dir, 'server', 'db'))).toBe(false);
    } else {
      // Not even TypeORM's migrations table was created.
      const url = database[3]!;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`);
      await client.end();
      expect(rows).toEqual([{ n: 0 }]);
    }

    const applied = await server(['migrate', ...database]);
    expect(applied).toMatchObject({
      code: 0,
      stdout: `Applied ${ALL.length} migration(s):\n${ALL.map((n) => `  ${n}\n`).join('')}`,
    });
    const again = await server(['migrate', ...database, '--output', 'json']);
    expect(json(again.stdout)).toEqual({ dry_run: false, applied: [], schema_version: ALL.at(-1) });
    const dryAgain = await server(['migrate', '--dry-run', ...database]);
    expect(dryAgain).toMatchObject({ code: 0, stdout: `No migration pending: the schema is at ${ALL.at(-1)}.\n` });
  });

  it('run --skip-migrations refuses a database with pending migrations, naming them and the way out', async () => {
    const empty = isEmbeddedRun() ? ['--data-dir', join(dir, 'other')] : ['--database-url', (await fresh()).url];
    const run = await server([
      'run',
      ...empty,
      '--skip-migrations',
      '--port',
      '0',
      '--admin-socket',
      join(dir, 'a.sock'),
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `Error: database: the schema is behind this release, ${ALL.length} migration(s) pending (${ALL.join(', ')}); ` +
        'apply them with sigil-server migrate (same database options) first',
    );
    const bad = await server(['migrate', ...empty, '--output', 'json', '--database-pool-timeout', 'soon']);
    expect(bad.code).toBe(1);
    expect(json(bad.stderr)).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringContaining('--database-pool-timeout'),
    });
  });

  async function fresh(): Promise<{ url: string }> {
    const made = await privateDatabase();
    drops.push(made.drop);
    return made;
  }
});

describe(
  `moving from the embedded database to PostgreSQL with export and import${NO_POSTGRES_REASON}`,
  { timeout: 300_000 },
  () => {
    let dir: string;
    let first: ServerProcess | undefined;
    let second: ServerProcess | undefined;
    let agent: SigilProcess | undefined;
    let target: { url: string; drop: () => Promise<void> } | undefined;

    beforeAll(async () => {
      requireBuild();
      dir = await mkdtemp(join(tmpdir(), 'sigil-move-'));
    });

    afterAll(async () => {
      await agent?.stop();
      await first?.process.stop();
      await second?.process.stop();
      await target?.drop();
      await rm(dir, { recursive: true, force: true });
    });

    const fetchIds = async (socketPath: string): Promise<string[]> => {
      const result = await runBin(AGENT_BIN, ['api', 'fetch', 'x509', '--socket-path', socketPath, '--output', 'json']);
      if (result.code !== 0) return [];
      return json<{ svids: { spiffe_id: string }[] }>(result.stdout)
        .svids.map((svid) => svid.spiffe_id)
        .sort();
    };
    const waitForIds = async (socketPath: string, expected: string[]): Promise<void> => {
      const deadline = Date.now() + 60_000;
      let seen: string[] = [];
      while (Date.now() < deadline) {
        seen = await fetchIds(socketPath);
        if (JSON.stringify(seen) === JSON.stringify(expected)) return;
        await new Promise((done) => setTimeout(done, 250));
      }
      const last = await runBin(AGENT_BIN, ['api', 'fetch', 'x509', '--socket-path', socketPath]);
      expect(seen, `last fetch: ${last.stderr}\nagent:\n${agent?.output().slice(-6000)}`).toEqual(expected);
    };

    it.skipIf(NO_POSTGRES)('keeps entries, agents and CA keys; the agent goes on without attesting again', async () => {
      // A server on the embedded database with an agent joined to it and a workload entry. SVIDs of 2 minutes, so the
      // agent renews its own SVID (at half its life) against the second server, and outlives the move.
      const ttl = ['--x509-svid-ttl', '120'];
      first = await startServerProcess({ dir: join(dir, 'a'), database: 'embedded', flags: ttl });
      const token = await first.joinToken(`${TD}/host/a`);
      await workloadEntry(first, `${TD}/web`);
      const bundle = join(dir, 'bundle.pem');
      await first.writeBundle(bundle);
      const socketPath = join(dir, 'agent', 'api.sock');
      const agentDir = join(dir, 'agent', 'data');
      agent = startAgentProcess({
        servers: [first.port],
        socketPath,
        dataDir: agentDir,
        trustBundle: bundle,
        joinToken: token,
      });
      await agentReady(agent);
      await waitForIds(socketPath, [`${TD}/web`]);
      const entries = await first.json<unknown>(['entry', 'show']);
      const agents = await first.json<{ agents: { spiffe_id: string; serial_number?: string }[] }>(['agent', 'list']);
      expect(agents.agents).toHaveLength(1);
      const agentId = agents.agents[0]!.spiffe_id;

      // The first server stops (the embedded database is only opened by one process); its data moves.
      expect(await first.process.stop()).toBe(0);
      const file = join(dir, 'export.json');
      const exported = await server(['export', '--data-dir', first.dataDir, '--path', file]);
      expect(exported).toMatchObject({ code: 0, stdout: '' });
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const text = await readFile(file, 'utf8');
      // Sealed keys and token hashes only: the file holds no PEM private key and not the join token.
      expect(text).not.toMatch(/PRIVATE KEY/);
      expect(text).not.toContain(token);
      expect(await server(['export', '--data-dir', first.dataDir, '--path', file])).toMatchObject({
        code: 1,
        stderr: `Error: export: ${file} exists; remove it or name another file\n`,
      });

      target = await privateDatabase();
      const imported = await server(['import', '--database-url', target.url, '--path', file, '--output', 'json']);
      expect(imported.code).toBe(0);
      const counts = json<{ imported: Record<string, number> }>(imported.stdout).imported;
      // The workload entry and the node alias the join token made; the token itself was used up.
      expect(counts).toMatchObject({
        registered_entries: 2,
        selectors: 2,
        agents: 1,
        join_tokens: 0,
        bundles: 1,
        revision_counters: 1,
      });
      expect(counts['ca_keys']).toBeGreaterThanOrEqual(2);

      // A second import into the now non-empty database is refused; --force replaces its content.
      const refused = await server(['import', '--database-url', target.url, '--path', '-'], text);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(
        /^Error: import: the target database is not empty \(registered_entries: 2 rows, .*\); import into a new database, or pass --force to delete everything it holds first\n$/,
      );
      const forced = await server(
        ['import', '--database-url', target.url, '--path', '-', '--force', '--output', 'json'],
        text,
      );
      expect(forced.code).toBe(0);
      expect(json<{ imported: Record<string, number> }>(forced.stdout).imported).toEqual(counts);
      const wrongSchema = JSON.stringify({ ...json<object>(text), schema_version: 'Registry1764000000000' });
      const badSchema = await server(['import', '--database-url', target.url, '--path', '-', '--force'], wrongSchema);
      expect(badSchema).toMatchObject({
        code: 1,
        stderr: `Error: import: input: schema_version "Registry1764000000000" is not this release's (${ALL.at(-1)}); export and import with the same release (upgrade the source first, then export)\n`,
      });

      // The second server, on PostgreSQL with the first one's KEK, takes over the address the agent knows.
      const svidBefore = await new AgentStorage(agentDir).load(undefined);
      const from = agent.output().length;
      second = await startServerProcess({
        dir: join(dir, 'b'),
        database: { url: target.url },
        port: first.port,
        flags: [...ttl, '--kek-file', join(first.dataDir, 'kek.key')],
      });
      expect(await second.json<unknown>(['entry', 'show'])).toEqual(entries);
      const moved = await second.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list']);
      expect(moved.agents.map((each) => each.spiffe_id)).toEqual([agentId]);

      // A new entry reaches the agent through the second server, and the agent renews its own SVID there.
      await workloadEntry(second, `${TD}/db`);
      await waitForIds(socketPath, [`${TD}/db`, `${TD}/web`]);
      await agent.waitFor(/"msg":"agent SVID renewed"/, { from, timeoutMs: 150_000 });
      const svidAfter = await new AgentStorage(agentDir).load(undefined);
      expect(svidAfter?.svidChain[0]).not.toEqual(svidBefore?.svidChain[0]);
      expect(agent.output().match(/"msg":"node attested"/g)).toHaveLength(1);
      expect(agent.output().slice(from)).not.toMatch(/attesting this node|attesting again/);
    });
  },
);
