/**
 * One agent per data dir: a second `sigil-agent run` on a data dir another one is using stops at once with a message
 * naming the dir and the other agent's pid (exit 1: a service manager tries again), before it touches the stored
 * identity, and the first keeps serving; once the first is gone, even killed with SIGKILL, the next one resumes from
 * the same data dir. A REAL server and REAL agents.
 */
import { mkdtemp, rm } from 'node:fs/promises';
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
import { firstMessage, securityHeader, workloadClient } from '../support/workload-grpc.js';

describe('sigil-agent: one agent per data dir (real server and agents)', () => {
  let scratch: string;
  let server: ServerProcess;
  const children: SigilProcess[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-data-dir-lock-'));
    server = await startServerProcess({ dir: join(scratch, 'server'), flags: ['--node-attestor', 'join_token'] });
    children.push(server.process);
  }, 180_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  it('refuses a second agent on the same data dir, naming the first; the next one after the first is gone resumes', async () => {
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const dataDir = join(scratch, 'data');
    const token = await server.joinToken();
    const start = (name: string): SigilProcess => {
      const agent = startAgentProcess({
        servers: [server.port],
        socketPath: join(scratch, `${name}.sock`),
        dataDir,
        trustBundle: bundleFile,
        joinToken: token,
      });
      children.push(agent);
      return agent;
    };
    const first = start('first');
    await agentReady(first);
    const agentId = (await first.waitFor(/"agentId":"([^"]+)","method":"join_token"/))[1]!;
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      'spiffe://example.org/workload/lock',
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${process.getuid!()}`,
    ]);

    const second = start('second');
    expect(await second.exited).toBe(1);
    expect(second.output()).toContain(
      `data dir ${dataDir} is in use by another sigil-agent (pid ${first.child.pid}): one agent per data dir`,
    );
    expect(second.output()).not.toMatch(/"msg":"(attesting this node|resumed with the stored agent SVID)/);
    // The first one is untouched: it still serves the workload.
    const client = workloadClient(join(scratch, 'first.sock'));
    try {
      await expect
        .poll(async () => (await firstMessage(client.FetchX509SVID({}, securityHeader()))).svids.length, {
          timeout: 30_000,
        })
        .toBe(1);
    } finally {
      client.close();
    }

    // Killed with SIGKILL, the first leaves no stale lock: the next agent resumes from the data dir, no new token.
    await first.stop('SIGKILL');
    const third = start('third');
    await agentReady(third);
    expect(third.output()).toContain('"msg":"resumed with the stored agent SVID, no attestation needed"');
    expect(await third.stop()).toBe(0);
  }, 180_000);
});
