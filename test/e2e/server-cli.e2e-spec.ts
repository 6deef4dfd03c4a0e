import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../support/database.js';

const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/sigil-server.js');
const BUILT_MAIN = join(ROOT, 'dist/apps/server/main.js');

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real, built `sigil-server` binary. */
function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

/** Starts `sigil-server run` and resolves once it logs that it listens. */
function startServer(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [BIN, 'run', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  return new Promise((resolveStart, rejectStart) => {
    const timer = setTimeout(() => rejectStart(new Error(`server did not start in time:\n${output}`)), 90_000);
    const check = (): void => {
      if (output.includes('"msg":"sigil-server listening"')) {
        clearTimeout(timer);
        resolveStart({ child, log: () => output });
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      rejectStart(new Error(`server exited with ${code} before listening:\n${output}`));
    });
  });
}

describe('sigil-server CLI against a running server (real binary)', () => {
  let db: TestDatabase | undefined;
  let scratch: string;
  let socket: string;
  let server: { child: ChildProcess; log: () => string };
  const admin = (): string[] => ['--admin-socket', socket];

  beforeAll(async () => {
    if (!existsSync(BUILT_MAIN)) throw new Error(`${BUILT_MAIN} is missing: run \`npm run build\` first`);
    scratch = await mkdtemp(join(tmpdir(), 'sigil-cli-'));
    socket = join(scratch, 'admin', 'api.sock');
    const args = ['--trust-domain', 'example.org', '--port', '0', '--bind-address', '127.0.0.1'];
    args.push('--data-dir', join(scratch, 'data'), '--admin-socket', socket);
    // Both backends: PostgreSQL when the suite runs with DATABASE_URL, else the embedded database in the data dir.
    if (process.env['DATABASE_URL']) {
      db = await useTestDatabase({ poolSize: 1 });
      args.push('--database-url', db.url);
    }
    server = await startServer(args, { DATABASE_URL: '', SIGIL_LOG_LEVEL: 'info' });
  });

  afterAll(async () => {
    if (server?.child.exitCode === null) {
      server.child.kill('SIGKILL');
    }
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('prints help for every command group', async () => {
    for (const group of [[], ['run'], ['token', 'generate'], ['entry', 'create'], ['agent', 'list'], ['bundle']]) {
      const result = await cli([...group, '--help']);
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('Usage: sigil-server');
    }
  });

  it('reports healthy', async () => {
    const result = await cli(['healthcheck', ...admin()]);
    expect(result).toMatchObject({ code: 0, stdout: 'Server is healthy.\n' });
  });

  it('generates a join token, as text and as JSON', async () => {
    const text = await cli(['token', 'generate', '--spiffe-id', 'spiffe://example.org/host/a', ...admin()]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^Token\s+: [A-Za-z0-9_-]{43}$/m);
    const json = await cli(['token', 'generate', '--ttl', '300', '--output', 'json', ...admin()]);
    expect(json.code).toBe(0);
    const token = JSON.parse(json.stdout) as { token: string; expires_at: string };
    expect(token.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(new Date(token.expires_at).getTime()).toBeGreaterThan(Date.now());
  });

  it('creates, shows, counts and deletes an entry', async () => {
    const created = await cli([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/web',
      '--parent-id',
      'spiffe://example.org/sigil/agent/join_token/host-a',
      '--selector',
      'unix:uid:1000',
      '--selector',
      'unix:gid:1000',
      '--dns-name',
      'web.example.org',
      '--x509-svid-ttl',
      '1h30m',
      '--jwt-svid-ttl',
      '300',
      '--output',
      'json',
      ...admin(),
    ]);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const entry = JSON.parse(created.stdout) as { id: string; spiffe_id: string; x509_svid_ttl: number };
    expect(entry.spiffe_id).toBe('spiffe://example.org/web');
    // Durations take the same Go-style syntax as the server's own flags, and bare seconds.
    expect(entry).toMatchObject({ x509_svid_ttl: 5400, jwt_svid_ttl: 300 });

    const shown = await cli(['entry', 'show', '--id', entry.id, ...admin()]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toContain(`Entry ID`);
    expect(shown.stdout).toContain(entry.id);
    expect(shown.stdout).toMatch(/Selector\s+: unix:gid:1000/);
    const bySelector = await cli(['entry', 'show', '--selector', 'unix:uid:1000', '--output', 'json', ...admin()]);
    expect(JSON.parse(bySelector.stdout).entries.map((each: { id: string }) => each.id)).toEqual([entry.id]);

    expect((await cli(['entry', 'count', ...admin()])).stdout).toBe('1 registration entry\n');
    const updated = await cli([
      'entry',
      'update',
      '--id',
      entry.id,
      '--selector',
      'unix:uid:2000',
      '--hint',
      'web',
      ...admin(),
    ]);
    expect(updated.code).toBe(0);
    expect(updated.stdout).toMatch(/Selector\s+: unix:uid:2000/);
    expect(updated.stdout).toMatch(/Hint\s+: web/);
    expect(updated.stdout).not.toContain('unix:gid:1000');
    const deleted = await cli(['entry', 'delete', '--id', entry.id, ...admin()]);
    expect(deleted).toMatchObject({ code: 0, stdout: 'Deleted entry successfully\n' });
    expect((await cli(['entry', 'count', '--output', 'json', ...admin()])).stdout).toContain('"count": 0');
  });

  it('shows the server error on one line and exits non-zero', async () => {
    const id = randomUUID();
    const result = await cli(['entry', 'delete', '--id', id, ...admin()]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/^Error: .*not found.*\n$/);
    const invalid = await cli([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://other.org/x',
      '--parent-id',
      'spiffe://example.org/p',
      '--selector',
      'unix:uid:1',
      ...admin(),
    ]);
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr).toMatch(/^Error: spiffe_?[iI]d: .*example\.org.*\n$/);
  });

  it('shows the bundle as PEM that openssl reads, and as a SPIFFE bundle', async () => {
    const pem = await cli(['bundle', 'show', ...admin()]);
    expect(pem.code).toBe(0);
    expect(pem.stdout).toContain('-----BEGIN CERTIFICATE-----');
    const bundleFile = join(scratch, 'bundle.pem');
    await writeFile(bundleFile, pem.stdout);
    const text = await new Promise<string>((done, fail) =>
      execFile('openssl', ['x509', '-in', bundleFile, '-noout', '-text'], (error, stdout) =>
        error ? fail(error) : done(stdout),
      ),
    );
    expect(text).toContain('CA:TRUE');
    expect(text).toContain('URI:spiffe://example.org');

    const spiffe = await cli(['bundle', 'show', '--format', 'spiffe', ...admin()]);
    const jwks = JSON.parse(spiffe.stdout) as { keys: { use: string }[]; spiffe_sequence: number };
    expect(jwks.keys.map((key) => key.use)).toEqual(expect.arrayContaining(['x509-svid', 'jwt-svid']));
  });

  it('lists no agents yet', async () => {
    expect(await cli(['agent', 'list', ...admin()])).toMatchObject({ code: 0, stdout: 'No attested agents found\n' });
    expect((await cli(['agent', 'count', ...admin()])).stdout).toBe('0 attested agents\n');
  });

  it('refuses a bad duration or selector before calling the server, saying what is wrong', async () => {
    const ttl = await cli(['token', 'generate', '--ttl', '1hour', ...admin()]);
    expect(ttl.code).not.toBe(0);
    expect(ttl.stderr).toContain(`option '--ttl <duration>' argument '1hour' is invalid. must be a duration such as`);
    const selector = await cli(['entry', 'count', '--selector', 'un ix:uid:1', ...admin()]);
    expect(selector.code).not.toBe(0);
    expect(selector.stderr).toContain(`type: "un ix" may only contain letters, digits`);
  });

  it('refuses an unknown flag', async () => {
    const result = await cli(['entry', 'count', '--bogus', ...admin()]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("unknown option '--bogus'");
  });

  it('says when the server cannot be reached', async () => {
    const missing = join(scratch, 'nowhere', 'api.sock');
    const result = await cli(['healthcheck', '--admin-socket', missing]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toBe(`Error: server is unhealthy: cannot reach the server at ${missing}: is it running?\n`);
    const entry = await cli(['entry', 'count', '--admin-socket', missing]);
    expect(entry.stderr).toBe(`Error: cannot reach the server at ${missing}: is it running?\n`);
  });

  it('refuses a bad configuration before booting, naming every bad key', async () => {
    const result = await cli(
      ['run', '--trust-domain', 'Example.org', '--port', '99999', '--data-dir', join(scratch, 'bad')],
      {
        SIGIL_CA_KEY_TYPE: 'ed25519',
      },
    );
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("--trust-domain: must be a trust domain name, got 'Example.org'");
    expect(result.stderr).toContain("--port: must be a port number from 0 to 65535, got '99999'");
    expect(result.stderr).toContain("SIGIL_CA_KEY_TYPE: must be one of ec-p256, ec-p384, rsa-2048, got 'ed25519'");
    expect(result.stdout).not.toContain('listening');
    expect(existsSync(join(scratch, 'bad'))).toBe(false);
  });

  it('stops cleanly on SIGTERM and removes its admin socket', async () => {
    const exited = new Promise<number | null>((done) => server.child.once('exit', (code) => done(code)));
    server.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    await expect(stat(socket)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(server.log()).toContain('"msg":"server stopped"');
    expect(server.log()).not.toContain('PRIVATE KEY');
    if (!db) expect(server.log()).toContain('never calls fsync');
  });
});
