#!/usr/bin/env node
// `npm start`: the Sigil quickstart. Starts sigil-server on its embedded database and a sigil-agent joined to it on
// this host (the default data dirs .sigil/server and .sigil/agent under the working directory, the default sockets),
// registers an entry for the current user's uid, prints the socket and the commands to try, and stays in the
// foreground until SIGINT/SIGTERM, which stop both processes. A second run reuses the data of the first: the agent
// resumes with its stored SVID, so no new join token is needed.
//
// The defaults can be moved with the variables the binaries read anyway: SIGIL_PORT, SIGIL_ADMIN_SOCKET,
// SIGIL_TRUST_DOMAIN, SIGIL_AGENT_SOCKET_PATH.
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SERVER_BIN = join(ROOT, 'bin/sigil-server.js');
const AGENT_BIN = join(ROOT, 'bin/sigil-agent.js');
const WORK = process.cwd();
const STATE = join(WORK, '.sigil');
const AGENT_DATA = join(STATE, 'agent');
const LOGS = join(STATE, 'quickstart');
const TRUST_DOMAIN = process.env.SIGIL_TRUST_DOMAIN || 'example.org';
const DEFAULT_ADMIN_SOCKET = '/tmp/sigil-server/private/api.sock';
const DEFAULT_AGENT_SOCKET = '/tmp/sigil-agent/public/api.sock';
const ADMIN_SOCKET = process.env.SIGIL_ADMIN_SOCKET || DEFAULT_ADMIN_SOCKET;
const AGENT_SOCKET = process.env.SIGIL_AGENT_SOCKET_PATH || DEFAULT_AGENT_SOCKET;

// The quickstart runs on the embedded database, whatever the shell has in DATABASE_URL.
const childEnv = { ...process.env, SIGIL_ADMIN_SOCKET: ADMIN_SOCKET, SIGIL_AGENT_SOCKET_PATH: AGENT_SOCKET };
delete childEnv.DATABASE_URL;
delete childEnv.SPIFFE_ENDPOINT_SOCKET;

/** A SPIFFE ID path segment made of a name: letters, digits, '.', '-' and '_' only. */
const segment = (name) => name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^\.+$/, 'x') || 'x';

function fail(message) {
  process.stderr.write(`quickstart: ${message}\n`);
  process.exit(1);
}

/** Runs a built binary to completion. */
function run(bin, args) {
  return new Promise((done) => {
    execFile(process.execPath, [bin, ...args], { env: childEnv, cwd: WORK, timeout: 60_000 }, (error, stdout, stderr) =>
      done({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** Starts a long-running child with its output appended to a log file. */
function start(bin, args, log) {
  const child = spawn(process.execPath, [bin, ...args], {
    env: childEnv,
    cwd: WORK,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const file = createWriteStream(log, { flags: 'a' });
  let recent = '';
  const keep = (chunk) => {
    file.write(chunk);
    recent = (recent + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((done) => child.once('exit', (code, signal) => done(code ?? (signal ? 128 : 1))));
  return { child, exited, log, output: () => recent, tail: () => recent.trim().split('\n').slice(-8).join('\n') };
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Waits until `check` resolves true, failing when `process` exits first or time runs out. */
async function waitUntil(what, child, check, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (child.child.exitCode !== null) fail(`${what} failed; the end of ${child.log}:\n${child.tail()}`);
    if (Date.now() > deadline) fail(`${what} timed out; the end of ${child.log}:\n${child.tail()}`);
    await sleep(250);
  }
}

/** The certificates (base64 DER) of a PEM text. */
function certificatesOf(pem) {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((m) =>
    m[1].replace(/\s+/g, ''),
  );
}

/**
 * Whether the agent can resume from .sigil/agent: its SVID has not expired and its stored bundle holds one of this
 * server's CAs. A stored identity from another server (its data dir was removed) is moved aside, or the agent would
 * keep trusting the old CA and never reach the new server.
 */
async function agentCanResume(serverBundlePem) {
  const svidFile = join(AGENT_DATA, 'agent-svid.pem');
  if (!existsSync(svidFile)) return false;
  try {
    const leaf = certificatesOf(await readFile(svidFile, 'utf8'))[0];
    const notAfter = new Date(new X509Certificate(Buffer.from(leaf, 'base64')).validTo);
    const stored = JSON.parse(await readFile(join(AGENT_DATA, 'bundle.json'), 'utf8'));
    const storedCas = new Set((stored.keys ?? []).flatMap((key) => key.x5c ?? []));
    const known = certificatesOf(serverBundlePem).some((ca) => storedCas.has(ca));
    if (notAfter.getTime() > Date.now() + 10_000 && known) return true;
  } catch {
    // Unreadable state: attest again.
  }
  const aside = join(STATE, `agent.stale-${Date.now()}`);
  await rename(AGENT_DATA, aside);
  process.stdout.write(`The agent's stored identity is expired or from another server: moved to ${aside}\n`);
  return false;
}

async function main() {
  for (const file of ['dist/apps/server/main.js', 'dist/agent/main.js']) {
    if (!existsSync(join(ROOT, file))) fail(`${file} is missing: run \`npm ci\` (or \`npm run build\`) first`);
  }
  await mkdir(LOGS, { recursive: true, mode: 0o700 });
  const children = [];
  let stopping = false;
  const stopAll = async (code) => {
    if (stopping) return;
    stopping = true;
    for (const child of children.reverse()) {
      if (child.child.exitCode === null) child.child.kill('SIGTERM');
      await child.exited;
    }
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  process.stdout.write('Starting sigil-server (embedded database in .sigil/server)…\n');
  // Only this host's agent joins: listen on loopback unless told otherwise.
  const bind = process.env.SIGIL_BIND_ADDRESS ? [] : ['--bind-address', '127.0.0.1'];
  const server = start(SERVER_BIN, ['run', '--trust-domain', TRUST_DOMAIN, ...bind], join(LOGS, 'server.log'));
  children.push(server);
  let port;
  await waitUntil('starting sigil-server', server, async () => {
    port ??= /"address":"[^"]*:(\d+)".*"msg":"sigil-server listening"/.exec(server.output())?.[1];
    return port !== undefined && (await run(SERVER_BIN, ['healthcheck'])).code === 0;
  });

  const bundle = await run(SERVER_BIN, ['bundle', 'show', '--format', 'pem']);
  if (bundle.code !== 0) fail(`bundle show failed: ${bundle.stderr.trim()}`);
  const bundleFile = join(STATE, 'bundle.pem');
  await writeFile(bundleFile, bundle.stdout);

  const host = segment(hostname());
  const nodeAlias = `spiffe://${TRUST_DOMAIN}/host/${host}`;
  const agentArgs = ['run', '--server-address', `127.0.0.1:${port}`, '--trust-bundle', bundleFile];
  if (await agentCanResume(bundle.stdout)) {
    process.stdout.write('Resuming the agent with its stored SVID (no join token needed)…\n');
  } else {
    // SPIRE's quickstart: the token's SPIFFE ID becomes an alias of the agent, the parent of workload entries.
    const token = await run(SERVER_BIN, ['token', 'generate', '--spiffe-id', nodeAlias, '--output', 'json']);
    if (token.code !== 0) fail(`token generate failed: ${token.stderr.trim()}`);
    agentArgs.push('--join-token', JSON.parse(token.stdout).token);
    process.stdout.write(`Joining a new agent with a join token (alias ${nodeAlias})…\n`);
  }
  const agent = start(AGENT_BIN, agentArgs, join(LOGS, 'agent.log'));
  children.push(agent);

  const user = userInfo();
  const workloadId = `spiffe://${TRUST_DOMAIN}/user/${segment(user.username)}`;
  const entry = await run(SERVER_BIN, [
    'entry',
    'create',
    '--spiffe-id',
    workloadId,
    '--parent-id',
    nodeAlias,
    '--selector',
    `unix:uid:${user.uid}`,
  ]);
  if (entry.code !== 0 && !/already exists/.test(entry.stderr)) fail(`entry create failed: ${entry.stderr.trim()}`);

  await waitUntil('starting sigil-agent', agent, async () => {
    const health = await run(AGENT_BIN, ['healthcheck', '--socket-path', AGENT_SOCKET, '--timeout', '2']);
    return health.code === 0;
  });
  const agentId = /"agentId":"([^"]+)"/.exec(agent.output())?.[1] ?? '(see the agent log)';
  // The commands find the default sockets by themselves; moved ones must be named.
  const socketFlag = AGENT_SOCKET === DEFAULT_AGENT_SOCKET ? '' : ` --socket-path ${AGENT_SOCKET}`;
  const adminFlag = ADMIN_SOCKET === DEFAULT_ADMIN_SOCKET ? '' : ` --admin-socket ${ADMIN_SOCKET}`;

  process.stdout.write(
    [
      '',
      'Sigil is running on this host (Ctrl-C stops both processes).',
      `  server         127.0.0.1:${port}, trust domain ${TRUST_DOMAIN}, data in .sigil/server, admin socket ${ADMIN_SOCKET}`,
      `  agent          ${agentId}, data in .sigil/agent`,
      `  Workload API   unix://${AGENT_SOCKET}`,
      `  your identity  ${workloadId} for unix:uid:${user.uid} (parent ${nodeAlias})`,
      `  logs           ${join('.sigil', 'quickstart', 'server.log')}, ${join('.sigil', 'quickstart', 'agent.log')}`,
      '',
      'Try, in another terminal:',
      `  npx sigil-agent api fetch x509${socketFlag}`,
      `  npx sigil-agent api fetch jwt --audience test${socketFlag}`,
      `  npx sigil-server entry show${adminFlag}`,
      '',
    ].join('\n'),
  );

  // Foreground until a signal; a child that dies on its own ends the quickstart with its log.
  const [which, code] = await Promise.race(children.map((child) => child.exited.then((code) => [child, code])));
  if (stopping) return;
  process.stderr.write(`quickstart: ${which.log} process exited with ${code}:\n${which.tail()}\n`);
  await stopAll(1);
}

main().catch((error) => fail(error instanceof Error ? error.message : String(error)));
