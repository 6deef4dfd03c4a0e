/**
 * `sigil-agent logger get|set|reset` (SPIRE's) against a real agent joined to a real server (both databases): the
 * agent's admin socket (`--admin-socket-path`, 0600 in a 0700 directory, off by default), the level change seen in
 * what the agent logs, and the configuration rule that keeps the admin socket out of the Workload API's directory.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_BIN,
  agentReady,
  closeTestDatabase,
  requireBuild,
  runBin,
  startAgentProcess,
  startServerProcess,
  type CliResult,
  type ServerProcess,
  type SigilProcess,
} from '../support/sigil-processes.js';

const TD = 'spiffe://example.org';
/** What the agent logs at debug level for each Workload API call (caller-attestation.ts). */
const DEBUG_LINE = /FetchX509Bundles: pid \d+ uid \d+ attested with/g;

describe('sigil-agent logger (real binaries, real agent admin socket)', { timeout: 180_000 }, () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let adminSocket: string;
  let socketPath: string;
  const children: SigilProcess[] = [];

  const logger = (args: readonly string[], socket = adminSocket): Promise<CliResult> =>
    runBin(AGENT_BIN, ['logger', ...args, '--admin-socket-path', socket]);
  /** One Workload API call (the agent logs it at debug level), then how many debug lines the agent has written. */
  const debugLinesAfterACall = async (): Promise<number> => {
    const health = await runBin(AGENT_BIN, ['healthcheck', '--socket-path', socketPath]);
    expect(health).toMatchObject({ code: 0, stdout: 'Agent is healthy.\n' });
    // The agent writes its line after answering: give it a moment.
    await new Promise((done) => setTimeout(done, 300));
    return agent.output().match(DEBUG_LINE)?.length ?? 0;
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-logger-'));
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    await mkdir(join(scratch, 'agent'), { mode: 0o755 });
    socketPath = join(scratch, 'agent', 'public', 'api.sock');
    adminSocket = join(scratch, 'agent', 'private', 'admin.sock');
    agent = startAgentProcess({
      servers: [server.port],
      socketPath,
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: await server.joinToken(`${TD}/host`),
      flags: ['--log-level', 'info', '--admin-socket-path', adminSocket],
    });
    children.push(agent);
    await agentReady(agent);
    await agent.waitFor(/"adminSocketPath":"[^"]+","msg":"sigil-agent running"/);
  }, 180_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('serves the admin socket 0600 in a 0700 directory', async () => {
    expect((await stat(adminSocket)).isSocket()).toBe(true);
    expect((await stat(adminSocket)).mode & 0o777).toBe(0o600);
    expect((await stat(join(scratch, 'agent', 'private'))).mode & 0o777).toBe(0o700);
  });

  it("gets, sets and resets the running agent's level, as SPIRE prints it", async () => {
    expect(await logger(['get'])).toEqual({
      code: 0,
      stdout: 'Logger Level : info\nLaunch Level : info\n',
      stderr: '',
    });
    const quiet = await debugLinesAfterACall();

    const set = await logger(['set', '--level', 'debug', '--output', 'json']);
    expect(set).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(set.stdout)).toEqual({ current_level: 'debug', launch_level: 'info' });
    expect(await debugLinesAfterACall()).toBe(quiet + 1);

    expect(await logger(['reset'])).toMatchObject({ code: 0, stdout: 'Logger Level : info\nLaunch Level : info\n' });
    expect(await debugLinesAfterACall()).toBe(quiet + 1);
  });

  it('refuses an unknown level before sending it, and reports an agent without an admin socket', async () => {
    const bad = await logger(['set', '--level', 'loud', '--output', 'json']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stderr)).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringContaining('loud'),
    });

    const none = join(scratch, 'nowhere', 'admin.sock');
    expect(await logger(['get'], none)).toEqual({
      code: 1,
      stdout: '',
      stderr: `Error: cannot reach the agent at ${none}: is it running?\n`,
    });
  });

  it('keeps the admin socket out of the Workload API socket directory (SPIRE rule), and is off by default', async () => {
    const validate = await runBin(AGENT_BIN, [
      'validate',
      '--server-address',
      '127.0.0.1:1',
      '--insecure-bootstrap',
      '--trust-domain',
      'example.org',
      '--join-token',
      'x',
      '--socket-path',
      '/run/sigil/public/api.sock',
      '--admin-socket-path',
      '/run/sigil/public/admin/admin.sock',
    ]);
    expect(validate.code).toBe(1);
    expect(validate.stderr).toContain(
      '--admin-socket-path: must not be in the directory of the Workload API socket ' +
        '(/run/sigil/public) or below it',
    );
    // The agent under test has one only because it was asked: the default path was never made by it.
    expect(agent.output()).not.toContain('/tmp/sigil-agent/private');
    expect(existsSync(join(scratch, 'agent', 'public', 'admin.sock'))).toBe(false);
  });
});
