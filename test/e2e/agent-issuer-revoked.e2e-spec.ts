/**
 * Issue 14 item 2 (nested e2e finding): an agent whose own SVID was issued under an X.509 authority the server stops
 * trusting (revoked with force before the agent re-signed; for a nested server, a top root removed) is refused by the
 * server. A join-token agent cannot renew (its SVID no longer authenticates it) nor attest again (its token is spent):
 * it must stop (exit 78, the operator must act) saying what happened and what to do, not as if it had been evicted.
 * The agent is paused (SIGSTOP) while the operator taints and force-revokes, so it cannot re-sign in between.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';

const TD = 'spiffe://example.org';

interface Authority {
  authority_id: string;
}

describe('an agent whose SVID issuer was revoked before it re-signed (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  const children: SigilProcess[] = [];

  const authority = async (verb: string, ...args: string[]): Promise<Authority> =>
    Object.values(await server.json<Record<string, Authority>>(['localauthority', 'x509', verb, ...args]))[0]!;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-issuer-revoked-'));
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    await mkdir(join(scratch, 'agent'));
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: await server.joinToken(`${TD}/host/revoked`),
    });
    children.push(agent);
    await agentReady(agent);
  }, 180_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('a spent join token: stops with exit 78 naming the revoked authority and the remedy', async () => {
    const old = (await server.json<{ active: Authority }>(['localauthority', 'x509', 'show'])).active.authority_id;
    const prepared = await authority('prepare');
    await authority('activate', '--authority-id', prepared.authority_id);
    agent.child.kill('SIGSTOP');
    try {
      await authority('taint', '--authority-id', old);
      const revoked = await server.cli(['localauthority', 'x509', 'revoke', '--authority-id', old, '--force']);
      expect(revoked.code, revoked.stderr).toBe(0);
    } finally {
      agent.child.kill('SIGCONT');
    }
    expect(await agent.exited).toBe(78);
    const output = agent.output();
    expect(output).toContain(
      `its SVID was issued by the tainted X.509 authority ${old}, which the server no longer trusts (revoked, or ` +
        'the upstream root it chains to removed, before this agent re-signed) and it cannot attest again: its join ' +
        "token was already used; generate a new one with 'sigil-server token generate' and restart the agent with " +
        '--join-token',
    );
  }, 180_000);
});
