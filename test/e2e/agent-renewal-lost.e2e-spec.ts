/**
 * A join-token agent that loses its renewed SVID (kill -9 after the server answered the renewal, before the agent
 * saved it) resumes from its data dir with the previous SVID and keeps working, without a new token: the server keeps
 * the previous SVID valid until the agent first uses the new one (SPIRE's `new_serial_number`). A REAL server and a
 * REAL agent; the SVID lifetime is 60 s, so the agent renews after about 30 s and the restarts have that long before
 * the stored SVID expires (a join token cannot attest again).
 */
import { watch } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pemBlocks } from '@sigil/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentStorage, decideResume } from '../../apps/agent/src/storage/agent-storage.js';
import { serialNumberOf } from '../../apps/server/src/auth/client-svid.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import {
  type WorkloadClient,
  firstMessage,
  securityHeader,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const TTL_SECONDS = 60;
/** Tries of the kill before the save (see the loop): each costs a renewal, about half a minute. */
const MAX_ATTEMPTS = 4;
const UID = process.getuid!();

describe('sigil-agent losing a renewed SVID (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let bundleFile: string;
  const children: SigilProcess[] = [];
  const clients: WorkloadClient[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-renewal-lost-'));
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: ['--x509-svid-ttl', String(TTL_SECONDS), '--node-attestor', 'join_token'],
    });
    children.push(server.process);
    bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
  }, 180_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  it('a join-token agent killed twice before saving its renewal resumes with the previous SVID and keeps working', async () => {
    /** One try of the two lost renewals; undefined when a kill landed after the save it was meant to interrupt. */
    const scenario = async (attempt: number) => {
      const token = await server.joinToken();
      const workloadId = `spiffe://example.org/workload/renewal-lost-${attempt}`;
      const dir = join(scratch, `node-${attempt}`);
      await mkdir(dir);
      const dataDir = join(dir, 'data');
      const start = (): SigilProcess => {
        // The same (spent) token every time, as a service unit would pass it: a resumed agent does not use it.
        const agent = startAgentProcess({
          servers: [server.port],
          socketPath: join(dir, 'api.sock'),
          dataDir,
          trustBundle: bundleFile,
          joinToken: token,
        });
        children.push(agent);
        return agent;
      };
      /**
       * Kills the agent as soon as a save of a new agent SVID writes its first temporary file: after the server
       * answered the renewal, before the agent saved the new SVID (or made another call with it). Ends too if the
       * agent exits first (the server refused it).
       */
      const killOnSave = (agent: SigilProcess): Promise<unknown> => {
        const watcher = watch(dataDir, (_event, name) => {
          // Its own pid in the name: not the removal of a killed predecessor's temporary files at start.
          const saving = name?.match(/^\.agent-(?:svid|key)\.pem\.(\d+)\.[0-9a-f]{12}\.tmp$/);
          if (saving && Number(saving[1]) === agent.child.pid) agent.child.kill('SIGKILL');
        });
        return agent.exited.finally(() => watcher.close());
      };
      const storedSerial = async (): Promise<string> =>
        serialNumberOf(pemBlocks(await readFile(join(dataDir, 'agent-svid.pem'), 'utf8'))[0]!.der);
      const serverSerial = async (): Promise<string> =>
        (await server.json<{ serial_number: string }>(['agent', 'show', '--spiffe-id', agentId])).serial_number;

      let agent = start();
      await agentReady(agent);
      const agentId = (await agent.waitFor(/"agentId":"([^"]+)","method":"join_token","expiresAt"/))[1]!;
      // The workload's SVID lives an hour: no workload signing (a call with the agent SVID) near the agent's renewals.
      await server.json([
        'entry',
        'create',
        '--spiffe-id',
        workloadId,
        '--parent-id',
        agentId,
        '--selector',
        `unix:uid:${UID}`,
        '--x509-svid-ttl',
        '3600',
      ]);
      const attested = await storedSerial();
      expect(await serverSerial()).toBe(attested);
      // Round 1: the renewal at half life is lost. Round 2: the restarted agent, past its SVID's half life, renews at
      // once from the previous SVID again (the server replaces the new SVID it recorded) and loses that one too.
      let killed = killOnSave(agent);
      for (let round = 1; round <= 2; round++) {
        await killed;
        // The kill is sent when the save's first temporary file appears; a save that renamed its files before the
        // signal landed (the agent writes four small files in a few milliseconds) leaves nothing lost to test: again.
        if (agent.child.signalCode === 'SIGKILL' && (await storedSerial()) !== attested) return undefined;
        expect(agent.output()).not.toMatch(/refused|not the current one|"msg":"agent SVID renewed"/);
        expect(agent.child.signalCode).toBe('SIGKILL');
        if (round === 2) {
          expect(agent.output()).toMatch(/resumed with the stored agent SVID/);
          expect(agent.output()).not.toMatch(/"msg":"node attested"/);
        }
        // The data dir still holds the SVID of the attestation, which the server still has as the current one.
        expect(await storedSerial()).toBe(attested);
        expect(await serverSerial()).toBe(attested);
        agent = start();
        // The restarted agent's first save is its renewal (past its SVID's half life): killed again in round 1.
        if (round === 1) killed = killOnSave(agent);
      }
      return { agent, dir, dataDir, agentId, attested, workloadId, storedSerial, serverSerial };
    };
    let outcome: Awaited<ReturnType<typeof scenario>>;
    for (let attempt = 1; (outcome = await scenario(attempt)) === undefined; attempt++) {
      if (attempt === MAX_ATTEMPTS) throw new Error(`the kill landed after the save in all ${MAX_ATTEMPTS} tries`);
    }
    const { agent, dir, dataDir, agentId, attested, workloadId, storedSerial, serverSerial } = outcome;
    // The agent resumes with that SVID, renews from it (saved this time), and keeps working without a new token.
    await agentReady(agent);
    expect(agent.output()).toMatch(/resumed with the stored agent SVID/);
    await agent.waitFor(/"msg":"agent SVID renewed"/, { timeoutMs: TTL_SECONDS * 1000 });
    const workload = workloadClient(join(dir, 'api.sock'));
    clients.push(workload);
    const response = await firstMessage(workload.FetchX509SVID({}, securityHeader()));
    expect(response.svids.map((svid) => svid.spiffe_id)).toEqual([workloadId]);
    const verified = await verifySvidMessage(response.svids[0]!);
    expect(verified.verifiedChain[0]!.notAfter.getTime()).toBeGreaterThan(Date.now());
    const renewed = await storedSerial();
    expect(renewed).not.toBe(attested);
    const stored = await new AgentStorage(dataDir).load(undefined);
    const decision = await decideResume(stored, { now: new Date(), trustDomain: undefined });
    expect(decision.resume && decision.spiffeId.toString()).toBe(agentId);
    // Its next call with the renewed SVID (the sync's next poll) makes it the current one on the server.
    await untilEqual(serverSerial, renewed, 2 * TTL_SECONDS * 1000);
    expect(agent.output()).not.toMatch(/not the current one|refused|"msg":"node attested"/);
    expect(agent.running).toBe(true);
    await agent.stop();
  }, 600_000);
});

/** Calls `read` until it answers `expected` (its last answer in the failure). */
async function untilEqual(read: () => Promise<string>, expected: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (value === expected || Date.now() > deadline) {
      expect(value).toBe(expected);
      return;
    }
    await new Promise((done) => setTimeout(done, 500));
  }
}
