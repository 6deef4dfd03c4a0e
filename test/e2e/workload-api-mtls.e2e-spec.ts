/**
 * @sigil/workload-api end to end: real `sigil-server` and `sigil-agent` processes, and the built examples
 * (`dist/examples/mtls-server.js`, `mtls-client.js`) as two workload processes that talk HTTPS with mutual SPIFFE
 * authentication through the agent's Workload API. Needs `npm run build` first.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { X509Source } from '@sigil/workload-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase, useTestDatabase } from '../support/database.js';

const ROOT = resolve(import.meta.dirname, '../..');
const SERVER_BIN = join(ROOT, 'bin/sigil-server.js');
const AGENT_BIN = join(ROOT, 'bin/sigil-agent.js');
const EXAMPLES = join(ROOT, 'dist/examples');
const UID = process.getuid!();

interface Process {
  child: ChildProcess;
  output: () => string;
}

function start(args: readonly string[], env: NodeJS.ProcessEnv = {}): Process {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  return { child, output: () => output };
}

async function waitFor(process: Process, pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const match = process.output().match(pattern);
    if (match !== null) return match;
    if (process.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`${pattern} not seen (exit ${process.child.exitCode}):\n${process.output()}`);
    }
    await new Promise((done) => setTimeout(done, 50));
  }
}

function run(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      args,
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: 60_000 },
      (error, stdout, stderr) =>
        done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: stdout + stderr }),
    );
  });
}

/** A server of `trustDomain` and an agent joined to it, with entries for this test's uid. */
async function startTrustDomain(scratch: string, trustDomain: string, paths: readonly string[], db?: TestDatabase) {
  const dir = join(scratch, trustDomain);
  const admin = ['--admin-socket', join(dir, 'admin.sock')];
  const serverArgs = [SERVER_BIN, 'run', '--trust-domain', trustDomain, '--port', '0', '--bind-address', '127.0.0.1'];
  serverArgs.push('--data-dir', join(dir, 'server'), ...admin);
  if (db !== undefined) serverArgs.push('--database-url', db.url);
  const server = start(serverArgs, { SIGIL_LOG_LEVEL: 'info' });
  const [, port] = await waitFor(server, /"address":"127\.0\.0\.1:(\d+)".*"msg":"sigil-server listening"/, 90_000);

  const hostId = `spiffe://${trustDomain}/host`;
  const token = await run([SERVER_BIN, 'token', 'generate', '--spiffe-id', hostId, '--output', 'json', ...admin]);
  expect(token.code).toBe(0);
  const bundle = await run([SERVER_BIN, 'bundle', 'show', ...admin]);
  expect(bundle.code).toBe(0);
  await writeFile(join(dir, 'bundle.pem'), bundle.output);
  for (const path of paths) {
    const entry = [
      SERVER_BIN,
      'entry',
      'create',
      '--spiffe-id',
      `spiffe://${trustDomain}${path}`,
      '--parent-id',
      hostId,
    ];
    // The shortest X.509-SVID lifetime the server accepts: the agent rotates at about half of it.
    entry.push('--selector', `unix:uid:${UID}`, '--x509-svid-ttl', '60', ...admin);
    expect((await run(entry)).code).toBe(0);
  }
  const socket = join(dir, 'agent.sock');
  const agent = start([
    AGENT_BIN,
    'run',
    '--server-address',
    `127.0.0.1:${port}`,
    '--join-token',
    (JSON.parse(token.output) as { token: string }).token,
    '--trust-bundle',
    join(dir, 'bundle.pem'),
    '--socket-path',
    socket,
    '--data-dir',
    join(dir, 'agent'),
  ]);
  const address = `unix://${socket}`;
  // Ready once the workload gets every identity.
  const source = await X509Source.create({ clientOptions: { address }, timeoutMs: 60_000 });
  await waitUntil(() => source.getX509Svids().length === paths.length);
  await source.close();
  return { server, agent, address };
}

async function waitUntil(predicate: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((done) => setTimeout(done, 50));
  }
}

describe('mTLS between two workload processes through the real agent', () => {
  let scratch: string;
  let db: TestDatabase | undefined;
  let example: Awaited<ReturnType<typeof startTrustDomain>>;
  let other: Awaited<ReturnType<typeof startTrustDomain>>;
  let httpsServer: Process;
  let port: string;
  const children: Process[] = [];

  const client = (args: readonly string[], address = example.address) =>
    run([join(EXAMPLES, 'mtls-client.js'), '--url', `https://127.0.0.1:${port}/`, ...args], {
      SPIFFE_ENDPOINT_SOCKET: address,
    });

  beforeAll(async () => {
    for (const file of [SERVER_BIN, join(ROOT, 'dist/agent/main.js'), join(EXAMPLES, 'mtls-server.js')]) {
      if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`);
    }
    scratch = await mkdtemp(join(tmpdir(), 'sigil-wl-e2e-'));
    if (process.env['DATABASE_URL']) db = await useTestDatabase({ poolSize: 1 });
    example = await startTrustDomain(scratch, 'example.org', ['/server', '/client'], db);
    children.push(example.server, example.agent);
    other = await startTrustDomain(scratch, 'other.org', ['/intruder']);
    children.push(other.server, other.agent);

    httpsServer = start(
      [join(EXAMPLES, 'mtls-server.js'), '--spiffe-id', 'spiffe://example.org/server'].concat([
        '--authorize',
        'spiffe://example.org/client',
        '--port',
        '0',
      ]),
      { SPIFFE_ENDPOINT_SOCKET: example.address },
    );
    children.push(httpsServer);
    [, port] = (await waitFor(httpsServer, /listening on https:\/\/127\.0\.0\.1:(\d+)\//)) as [string, string];
  }, 240_000);

  afterAll(async () => {
    // Wait for each to exit before removing the scratch dir: a server still shutting down writes into its data dir
    // (rm then failed with ENOTEMPTY on the embedded database's files).
    for (const { child } of children.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('connects with the right SPIFFE IDs on both sides', async () => {
    const result = await client([
      '--spiffe-id',
      'spiffe://example.org/client',
      '--authorize',
      'spiffe://example.org/server',
    ]);
    expect(result.output).toMatch(
      /^200 from server certificate [0-9A-F]+: hello spiffe:\/\/example\.org\/client, this is spiffe:\/\/example\.org\/server$/m,
    );
    expect(result.code).toBe(0);
  });

  it('is refused when the server authorizer refuses the client', async () => {
    const before = httpsServer.output().length;
    const result = await client([
      '--spiffe-id',
      'spiffe://example.org/server',
      '--authorize',
      'spiffe://example.org/server',
    ]);
    expect(result.code).toBe(1);
    expect(result.output).not.toContain('200 from');
    await waitFor(httpsServer, /refused a connection: peer spiffe:\/\/example\.org\/server is not authorized/);
    expect(httpsServer.output().slice(before)).not.toContain('hello');
  });

  it('is refused when the client authorizer refuses the server', async () => {
    const result = await client([
      '--spiffe-id',
      'spiffe://example.org/client',
      '--authorize',
      'spiffe://example.org/db',
    ]);
    expect(result).toMatchObject({ code: 1 });
    expect(result.output).toContain('request failed: peer spiffe://example.org/server is not authorized');
  });

  it('is refused when the peer belongs to another trust domain', async () => {
    const result = await client(['--authorize', 'spiffe://example.org/server'], other.address);
    expect(result.code).toBe(1);
    // other.org holds no bundle of example.org: the server's chain does not verify, and nothing is sent.
    expect(result.output).toMatch(
      /request failed: (unable to verify the first certificate|unable to get local issuer)/,
    );
    expect(result.output).not.toContain('200 from');
  });

  it('keeps working across an SVID rotation: new connections get the new certificate, without restart', async () => {
    const pid = httpsServer.child.pid;
    const watcher = start(
      [join(EXAMPLES, 'mtls-client.js'), '--url', `https://127.0.0.1:${port}/`, '--every', '2'].concat([
        '--spiffe-id',
        'spiffe://example.org/client',
        '--authorize',
        'spiffe://example.org/server',
      ]),
      { SPIFFE_ENDPOINT_SOCKET: example.address },
    );
    children.push(watcher);
    const serials = (): Set<string> =>
      new Set([...watcher.output().matchAll(/^200 from server certificate ([0-9A-F]+):/gm)].map((m) => m[1]!));
    // X.509-SVIDs live 60 s and rotate at about half their lifetime.
    await waitUntil(() => serials().size >= 2, 75_000);
    watcher.child.kill('SIGINT');
    expect(watcher.output()).not.toContain('request failed');
    expect(httpsServer.child.pid).toBe(pid);
    expect(httpsServer.child.exitCode).toBeNull();
    expect(httpsServer.output()).toMatch(/SVID updated: now presenting serial/);
  }, 90_000);
});
