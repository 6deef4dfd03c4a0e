/**
 * `npm start` end to end: scripts/quickstart.js in a scratch working directory (its `.sigil/` lands there), with the
 * sockets and port moved through the environment variables the binaries read, so it never touches a developer's
 * defaults. It runs twice: the second run must reuse the first one's data (no new join token).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareEmbeddedDataDir } from '../support/database.js';
import { AGENT_BIN, ROOT, SigilProcess, requireBuild, runBin } from '../support/sigil-processes.js';

const QUICKSTART = join(ROOT, 'scripts/quickstart.js');

describe('npm start (scripts/quickstart.js)', () => {
  let scratch: string;
  let env: NodeJS.ProcessEnv;
  const running: SigilProcess[] = [];

  function quickstart(): SigilProcess {
    const child = new SigilProcess(
      spawn(process.execPath, [QUICKSTART], { cwd: scratch, env, stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    running.push(child);
    return child;
  }

  const fetchX509 = () =>
    runBin(AGENT_BIN, ['api', 'fetch', 'x509'], { SPIFFE_ENDPOINT_SOCKET: `unix://${join(scratch, 'agent.sock')}` });

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-quickstart-'));
    // The migrated embedded database of this run, so the first start skips initdb.
    await prepareEmbeddedDataDir(join(scratch, '.sigil', 'server'));
    env = {
      ...process.env,
      SIGIL_PORT: '0',
      SIGIL_ADMIN_SOCKET: join(scratch, 'admin.sock'),
      SIGIL_AGENT_SOCKET_PATH: join(scratch, 'agent.sock'),
    };
  }, 120_000);

  afterAll(async () => {
    for (const child of running) await child.stop('SIGKILL');
    await rm(scratch, { recursive: true, force: true });
  });

  it('starts a server and a joined agent, registers the current user, and stops both on SIGINT', async () => {
    const first = quickstart();
    await first.waitFor(/Try, in another terminal:/, { timeoutMs: 120_000 });
    expect(first.output()).toContain('Joining a new agent with a join token');
    expect(first.output()).toContain(`--socket-path ${join(scratch, 'agent.sock')}`);
    const fetched = await fetchX509();
    expect(fetched.stderr).toBe('');
    expect(fetched.stdout).toMatch(new RegExp(`SPIFFE ID\\s+: spiffe://example\\.org/user/${userInfo().username}\\n`));
    expect(await first.stop('SIGINT')).toBe(0);
    // The agent removed its socket: both children were stopped, not orphaned.
    expect(existsSync(join(scratch, 'agent.sock'))).toBe(false);
    // The first start creates the embedded database: on a loaded machine it takes longer than the default 30 s.
  }, 180_000);

  it('reuses the first run on a second start: the agent resumes without a new join token', async () => {
    const second = quickstart();
    await second.waitFor(/Try, in another terminal:/, { timeoutMs: 120_000 });
    expect(second.output()).toContain('Resuming the agent with its stored SVID (no join token needed)');
    expect(second.output()).not.toContain('join token (alias');
    expect((await fetchX509()).code).toBe(0);
    expect(await second.stop('SIGTERM')).toBe(0);
  }, 180_000);
});
