/**
 * The SPIRE-parity commands of the real `sigil-server` binary against a real server (both databases): entry batches
 * from SPIRE's JSON files, `--entry-id`, `--node`, clearing on update, the entry filters, `agent purge` and the
 * automatic pruning of long-expired agents, `agent list --expires-before/--can-reattest`, `validate`, and errors
 * (usage and server) as `Error: …` lines or as JSON with `--output json`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../../apps/server/src/database/embedded-postgres.js';
import {
  SERVER_BIN,
  closeTestDatabase,
  requireBuild,
  runBin,
  startServerProcess,
  type ServerProcess,
} from '../support/sigil-processes.js';

interface Entry {
  id: string;
  spiffe_id: string;
  parent_id: string;
  hint: string;
  admin: boolean;
  downstream: boolean;
  dns_names: string[];
  federates_with: string[];
  expires_at: string | null;
  x509_svid_ttl: number;
}

interface Result {
  status: { code: string; message: string };
  entry?: Entry;
  id?: string;
}

const DAY_MS = 86_400_000;
const AGENT = 'spiffe://example.org/sigil/agent/x509pop/node-1';

// Each command is a process of its own (about a second each on a busy machine); a test runs several.
describe('sigil-server SPIRE-parity commands (real binary, real server)', { timeout: 180_000 }, () => {
  let dir: string;
  let server: ServerProcess;

  /** Writes a data file and returns its path. */
  const dataFile = async (name: string, data: unknown): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, JSON.stringify(data));
    return path;
  };

  const names = async (args: readonly string[]): Promise<string[]> =>
    (await server.json<{ entries: Entry[] }>(['entry', 'show', ...args])).entries
      .map((entry) => entry.spiffe_id.replace('spiffe://example.org/', ''))
      .sort();

  beforeAll(async () => {
    requireBuild();
    dir = await mkdtemp(join(tmpdir(), 'sigil-cli-parity-'));
    server = await startServerProcess({ dir });
  });

  afterAll(async () => {
    await server?.process.stop('SIGKILL');
    await closeTestDatabase();
    await rm(dir, { recursive: true, force: true });
  });

  it("creates entries from SPIRE's JSON batch file, reporting each failure and exiting 1", async () => {
    const file = await dataFile('create.json', {
      entries: [
        {
          selectors: [{ type: 'unix', value: 'uid:1111' }],
          spiffe_id: 'spiffe://example.org/Blog',
          parent_id: AGENT,
          x509_svid_ttl: 200,
          jwt_svid_ttl: 30,
          admin: true,
          entryExpiry: Math.floor(Date.now() / 1000) + 86_400,
        },
        {
          selectors: [{ type: 'unix', value: 'uid:1111' }],
          spiffe_id: 'spiffe://example.org/Database',
          parent_id: AGENT,
          hint: 'internal',
          dns_names: ['db.example.org'],
          federates_with: ['partner.org'],
          downstream: true,
        },
        { selectors: [{ type: 'unix', value: 'uid:1' }], spiffe_id: 'spiffe://example.org/bad', parent_id: 'nope' },
      ],
    });
    const text = await server.cli(['entry', 'create', '--data', file]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/^Entry ID\s+: [0-9a-f-]{36}\nSPIFFE ID\s+: spiffe:\/\/example\.org\/Blog$/m);
    expect(text.stdout).toMatch(/^SPIFFE ID\s+: spiffe:\/\/example\.org\/Database$/m);
    expect(text.stdout).toMatch(/^Expiration time\s+: 20/m);
    expect(text.stderr).toContain('Failed to create the following entry (code: invalid_argument, msg: "parent_id:');
    expect(text.stderr).toMatch(/Error: failed to create 1 of 3 entries\n$/);

    // Again from stdin as JSON: the two are duplicates now (with the entry already there), the third still invalid.
    const again = await server.cli(
      ['entry', 'create', '--data', '-', '--output', 'json'],
      JSON.stringify({
        entries: [
          {
            selectors: [{ type: 'unix', value: 'uid:1111' }],
            spiffe_id: 'spiffe://example.org/Blog',
            parent_id: AGENT,
          },
        ],
      }),
    );
    expect(again.code).toBe(1);
    const { results } = JSON.parse(again.stdout) as { results: Result[] };
    expect(results).toEqual([
      expect.objectContaining({
        status: expect.objectContaining({ code: 'already_exists' }),
        entry: expect.objectContaining({ spiffe_id: 'spiffe://example.org/Blog', admin: true }),
      }),
    ]);
    expect(JSON.parse(again.stderr)).toEqual({ error: 'already_exists', message: 'failed to create 1 of 1 entries' });
  });

  it('refuses a data file it cannot map, naming the key, and --data mixed with entry flags', async () => {
    const unknown = await dataFile('unknown.json', { entries: [{ spiffe_id: 'spiffe://example.org/x', ttl: 5 }] });
    expect(await server.cli(['entry', 'create', '--data', unknown])).toMatchObject({
      code: 1,
      stderr: 'Error: entries[0]: unknown key "ttl"\n',
    });
    const store = await dataFile('store.json', {
      entries: [{ spiffe_id: 'spiffe://example.org/x', store_svid: true }],
    });
    expect((await server.cli(['entry', 'create', '--data', store])).stderr).toBe(
      'Error: entries[0].store_svid: SVIDStore plugins are not supported\n',
    );
    expect((await server.cli(['entry', 'create', '--data', '-'], '{"entries": [')).stderr).toMatch(
      /^Error: --data: not JSON: /,
    );
    expect((await server.cli(['entry', 'create', '--data', unknown, '--hint', 'h'])).stderr).toBe(
      'Error: --data: cannot be combined with --hint\n',
    );
    expect((await server.cli(['entry', 'update', '--data', unknown])).stderr).toBe(
      'Error: entries[0]: unknown key "ttl"\n',
    );
  });

  it('creates an entry under --entry-id, and a node alias with --node', async () => {
    const id = '6a0c5f8e-3b1d-4c2e-9f7a-1b2c3d4e5f60';
    const made = await server.json<Entry>(
      ['entry', 'create', '--entry-id', id, '--spiffe-id', 'spiffe://example.org/own-id'].concat([
        '--parent-id',
        AGENT,
        '--selector',
        'unix:uid:7',
      ]),
    );
    expect(made.id).toBe(id);
    const taken = await server.cli(
      ['entry', 'create', '--entry-id', id, '--spiffe-id', 'spiffe://example.org/other'].concat([
        '--parent-id',
        AGENT,
        '--selector',
        'unix:uid:8',
      ]),
    );
    expect(taken).toMatchObject({ code: 1, stderr: `Error: id: an entry with id "${id}" already exists\n` });

    const node = await server.json<Entry>([
      'entry',
      'create',
      '--node',
      '--spiffe-id',
      'spiffe://example.org/cluster/a',
      '--selector',
      'x509pop:ca:x',
    ]);
    expect(node.parent_id).toBe('spiffe://example.org/sigil/server');
    expect(
      (
        await server.cli([
          'entry',
          'create',
          '--node',
          '--spiffe-id',
          'spiffe://example.org/n',
          '--federates-with',
          'p.org',
          '--selector',
          'a:b',
        ])
      ).stderr,
    ).toBe('Error: --node: node entries cannot federate\n');
  });

  it('filters entry show and count by downstream, hint, federates-with and selectors with their match modes', async () => {
    expect(await names(['--downstream'])).toEqual(['Database']);
    expect(await names(['--hint', 'internal'])).toEqual(['Database']);
    expect(await names(['--federates-with', 'partner.org'])).toEqual(['Database']);
    expect(await names(['--federates-with', 'partner.org', '--federates-with', 'x.org'])).toEqual([]);
    expect(
      await names(['--federates-with', 'partner.org', '--federates-with', 'x.org', '--match-federates-with-on', 'any']),
    ).toEqual(['Database']);
    expect(await names(['--selector', 'unix:uid:1111', '--selector', 'unix:uid:7'])).toEqual([]);
    expect(
      await names(['--selector', 'unix:uid:1111', '--selector', 'unix:uid:7', '--match-selectors-on', 'subset']),
    ).toEqual(['Blog', 'Database', 'own-id']);
    expect(await names(['--selector', 'unix:uid:1111', '--match-selectors-on', 'exact'])).toEqual(['Blog', 'Database']);
    expect((await server.cli(['entry', 'count', '--downstream'])).stdout).toBe('1 registration entry\n');
    const bad = await server.cli(['entry', 'show', '--match-selectors-on', 'most']);
    expect(bad).toMatchObject({ code: 1 });
    expect(bad.stderr).toMatch(/^Error: option '--match-selectors-on <mode>' argument 'most' is invalid/);
  });

  it('updates from a data file by replacing whole entries, as SPIRE, and clears fields from flags', async () => {
    const [database] = (await server.json<{ entries: Entry[] }>(['entry', 'show', '--hint', 'internal'])).entries;
    const file = await dataFile('update.json', {
      entries: [
        {
          entry_id: database!.id,
          spiffe_id: 'spiffe://example.org/Database',
          parent_id: AGENT,
          selectors: [{ type: 'unix', value: 'uid:2222' }],
          x509_svid_ttl: 300,
        },
        { entry_id: '00000000-0000-4000-8000-000000000000', spiffe_id: 'spiffe://example.org/x', parent_id: AGENT },
      ],
    });
    const result = await server.cli(['entry', 'update', '--data', file, '--output', 'json']);
    expect(result.code).toBe(1);
    const { results } = JSON.parse(result.stdout) as { results: Result[] };
    expect(results[0]!.entry).toMatchObject({
      id: database!.id,
      x509_svid_ttl: 300,
      hint: '',
      dns_names: [],
      federates_with: [],
      downstream: false,
    });
    expect(results[1]).toMatchObject({
      status: { code: 'not_found' },
      id: '00000000-0000-4000-8000-000000000000',
    });

    const [blog] = (
      await server.json<{ entries: Entry[] }>(['entry', 'show', '--spiffe-id', 'spiffe://example.org/Blog'])
    ).entries;
    expect(blog).toMatchObject({ admin: true, expires_at: expect.any(String) });
    const cleared = await server.json<Entry>([
      'entry',
      'update',
      '--id',
      blog!.id,
      '--no-admin',
      '--expires-at',
      '0',
      '--hint',
      'kept',
    ]);
    expect(cleared).toMatchObject({ admin: false, expires_at: null, hint: 'kept', x509_svid_ttl: 200 });
  });

  it('deletes from SPIRE\'s {"ids": [...]} file, one result per id', async () => {
    const [own] = (
      await server.json<{ entries: Entry[] }>(['entry', 'show', '--spiffe-id', 'spiffe://example.org/own-id'])
    ).entries;
    const file = await dataFile('delete.json', { Ids: [own!.id, '00000000-0000-4000-8000-000000000000'] });
    const text = await server.cli(['entry', 'delete', '--data', file]);
    expect(text.code).toBe(1);
    expect(text.stdout).toBe(`Deleted entry with ID: ${own!.id}\n`);
    expect(text.stderr).toContain(
      'Failed to delete the following entry (code: not_found, msg: "entry \\"00000000-0000-4000-8000-000000000000\\" not found"): 00000000-0000-4000-8000-000000000000',
    );
    expect(await names(['--spiffe-id', 'spiffe://example.org/own-id'])).toEqual([]);
  });

  it('prints usage errors and server errors as one Error: line, or as JSON with --output json', async () => {
    expect(await server.cli(['entry', 'count', '--bogus'])).toMatchObject({
      code: 1,
      stdout: '',
      stderr: "Error: unknown option '--bogus'\n",
    });
    const usage = await server.cli(['entry', 'count', '--bogus', '--output', 'json']);
    expect(JSON.parse(usage.stderr)).toEqual({ error: 'invalid_argument', message: "unknown option '--bogus'" });
    const missing = await server.cli(['entry', 'show', '--id', 'nope', '--output', 'json']);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stderr)).toEqual({
      error: 'invalid_argument',
      message: 'id: must be an entry id (a lowercase uuid), got "nope"',
    });
    const help = await runBin(SERVER_BIN, ['entry', 'create', '--help']);
    expect(help).toMatchObject({ code: 0, stderr: '' });
    expect(help.stdout).toContain('--entry-id <uuid>');
    expect(await runBin(SERVER_BIN, ['nosuch'])).toMatchObject({
      code: 1,
      stderr: "Error: unknown command 'nosuch'\n",
    });
  });

  it('gets, sets and resets the running log level (logger), in memory only', async () => {
    expect(await server.cli(['logger', 'get'])).toMatchObject({
      code: 0,
      stdout: 'Logger Level : info\nLaunch Level : info\n',
    });
    expect(await server.json(['logger', 'set', '--level', 'debug'])).toEqual({
      current_level: 'debug',
      launch_level: 'info',
    });
    // At debug the server logs each admin request; back at info it does not.
    const from = server.process.output().length;
    await server.cli(['entry', 'count']);
    await server.process.waitFor(/"level":20/, { from });
    expect((await server.cli(['logger', 'reset'])).stdout).toBe('Logger Level : info\nLaunch Level : info\n');
    const bad = await server.cli(['logger', 'set', '--level', 'loud']);
    expect(bad.stderr).toMatch(
      /^Error: option '--level <level>' argument 'loud' is invalid\. Allowed choices are fatal/,
    );
    expect((await server.cli(['logger', 'set'])).stderr).toBe(
      "Error: required option '--level <level>' not specified\n",
    );
  });

  it('validates a configuration without starting, naming every bad key', async () => {
    const good = await runBin(SERVER_BIN, ['validate', '--trust-domain', 'example.org', '--data-dir', join(dir, 'v')]);
    expect(good).toMatchObject({ code: 0, stdout: 'Server configuration is valid.\n' });
    const bad = await runBin(SERVER_BIN, ['validate', '--trust-domain', 'Example.org', '--port', '99999']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^Error: invalid server configuration: --trust-domain: .*; --port: .*\n$/);
    const file = await dataFile('server.json', { trust_domain: 'example.org', bogus_key: 1 });
    const json = await runBin(SERVER_BIN, ['validate', '--config', file, '--output', 'json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stderr)).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringContaining('bogus_key'),
    });
  });

  describe('attested agents: purge, pruning and list filters', () => {
    const agents = {
      old: 'spiffe://example.org/sigil/agent/x509pop/old',
      banned: 'spiffe://example.org/sigil/agent/x509pop/banned',
      joinToken: 'spiffe://example.org/sigil/agent/join_token/old',
      recent: 'spiffe://example.org/sigil/agent/k8s_psat/c/recent',
      valid: 'spiffe://example.org/sigil/agent/x509pop/valid',
    };

    /** Stops the server, writes agent rows straight into its database, and starts it again with `flags`. */
    const seedAgents = async (
      rows: { id: string; type: string; expiresAt: Date; banned?: boolean; canReattest: boolean }[],
      flags: readonly string[] = [],
    ): Promise<void> => {
      await server.process.stop();
      const embedded = server.databaseUrl ? undefined : await startEmbeddedPostgres(join(server.dataDir, 'db'));
      const client = new pg.Client({ connectionString: server.databaseUrl ?? embedded!.url });
      await client.connect();
      try {
        for (const row of rows) {
          await client.query(
            `INSERT INTO agents (spiffe_id, attestation_type, serial_number, svid_expires_at, selectors, banned,
                                 can_reattest) VALUES ($1, $2, 'abcd', $3, '[]'::jsonb, $4, $5)`,
            [row.id, row.type, row.expiresAt, row.banned ?? false, row.canReattest],
          );
        }
      } finally {
        await client.end();
        await embedded?.stop();
      }
      server = await startServerProcess({ dir, port: server.port, flags });
    };

    const listed = async (args: readonly string[] = []): Promise<string[]> =>
      (await server.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list', ...args])).agents
        .map((agent) => agent.spiffe_id)
        .sort();

    beforeAll(async () => {
      const now = Date.now();
      await seedAgents(
        [
          { id: agents.old, type: 'x509pop', expiresAt: new Date(now - 40 * DAY_MS), canReattest: true },
          {
            id: agents.banned,
            type: 'x509pop',
            expiresAt: new Date(now - 40 * DAY_MS),
            banned: true,
            canReattest: true,
          },
          { id: agents.joinToken, type: 'join_token', expiresAt: new Date(now - 40 * DAY_MS), canReattest: false },
          { id: agents.recent, type: 'k8s_psat', expiresAt: new Date(now - DAY_MS), canReattest: true },
          { id: agents.valid, type: 'x509pop', expiresAt: new Date(now + 3_600_000), canReattest: true },
        ],
        // Off here, so that the purge command is what removes them.
        ['--prune-attested-nodes-expired-for', '0'],
      );
    });

    it('lists agents by --expires-before and --can-reattest', async () => {
      const tenDaysAgo = new Date(Date.now() - 10 * DAY_MS).toISOString();
      expect(await listed(['--expires-before', tenDaysAgo])).toEqual(
        [agents.banned, agents.joinToken, agents.old].sort(),
      );
      expect(await listed(['--can-reattest'])).toEqual([agents.banned, agents.old, agents.recent, agents.valid].sort());
      expect(await listed(['--expires-before', '2000-01-01'])).toEqual([]);
      const text = await server.cli(['agent', 'show', '--spiffe-id', agents.joinToken]);
      expect(text.stdout).toMatch(/^Can re-attest\s+: false$/m);
      expect((await server.cli(['agent', 'list', '--expires-before', 'tomorrow'])).stderr).toBe(
        "Error: option '--expires-before <time>' argument 'tomorrow' is invalid. must be a date (YYYY-MM-DD) or an RFC 3339 time\n",
      );
    });

    it('purges agents expired for 30 days by default, never banned or join_token ones; --dry-run removes nothing', async () => {
      const dry = await server.cli(['agent', 'purge', '--dry-run']);
      expect(dry).toMatchObject({ code: 0 });
      expect(dry.stdout).toBe(`Found 1 expired agent\n\nAgents that can be purged:\nSPIFFE ID : ${agents.old}\n`);
      expect(await listed()).toHaveLength(5);

      expect(await server.json(['agent', 'purge'])).toEqual({
        expired_agents: [{ agent_id: agents.old, deleted: true }],
      });
      expect(await listed()).toEqual([agents.banned, agents.joinToken, agents.recent, agents.valid].sort());

      const shorter = await server.cli(['agent', 'purge', '--expired-for', '12h']);
      expect(shorter.stdout).toBe(`Found 1 expired agent\n\nAgents purged:\nSPIFFE ID : ${agents.recent}\n`);
      expect((await server.cli(['agent', 'purge'])).stdout).toBe('No agents to purge.\n');
      expect((await server.cli(['agent', 'purge', '--expired-for', 'soon'])).stderr).toMatch(
        /^Error: option '--expired-for <duration>' argument 'soon' is invalid/,
      );
    });

    it('prunes long-expired agents that can re-attest on its own (prune_attested_nodes_expired_for)', async () => {
      const gone = 'spiffe://example.org/sigil/agent/x509pop/gone';
      await seedAgents(
        [{ id: gone, type: 'x509pop', expiresAt: new Date(Date.now() - 2 * 3_600_000), canReattest: true }],
        ['--prune-attested-nodes-expired-for', '1h'],
      );
      await server.process.waitFor(/"count":1,"msg":"expired agents pruned"|"msg":"expired agents pruned".*"count":1/);
      expect(await listed()).toEqual([agents.banned, agents.joinToken, agents.valid].sort());
    });
  });
});
