/**
 * `sigil-agent run --svid-cache-max-size` end to end (lazy signing, SPIRE's `x509_svid_cache_max_size`): a real server
 * and agent; the agent signs no X509-SVID before a caller asks, serves a caller's first FetchX509SVID call with all
 * its SVIDs (even past the cap: a live caller's are kept), and drops down to the cap once that caller is gone. The
 * number of SVIDs held is read from the agent's /metrics (`sigil_agent_cached_x509_svids`).
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
import { type WorkloadClient, StreamWatcher, idsOf, securityHeader, workloadClient } from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const NODE = `${TD}/host/lazy`;
const CAP = 2;

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((each) => each.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('sigil-agent --svid-cache-max-size (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: WorkloadClient;
  let metricsUrl: string;
  const children: SigilProcess[] = [];
  const ours = [`${TD}/lazy/a`, `${TD}/lazy/b`, `${TD}/lazy/c`];

  const held = async (): Promise<number | undefined> => {
    const response = await fetch(`${metricsUrl}/metrics`);
    return sample(await response.text(), 'sigil_agent_cached_x509_svids');
  };
  const heldBecomes = async (expected: number): Promise<void> => {
    // No timing assertion: it waits for the state, bounded only so that a broken agent fails the test.
    for (let i = 0; i < 600 && (await held()) !== expected; i++) await new Promise((done) => setTimeout(done, 100));
    expect(await held()).toBe(expected);
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-lazy-e2e-'));
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    const bundle = join(scratch, 'bundle.pem');
    await server.writeBundle(bundle);
    const create = (spiffeId: string, selector: string) =>
      server.json(['entry', 'create', '--spiffe-id', spiffeId, '--parent-id', NODE, '--selector', selector]);
    for (const spiffeId of ours) await create(spiffeId, `unix:uid:${UID}`);
    // Entries of a uid nobody calls with: never signed.
    for (const name of ['x', 'y']) await create(`${TD}/lazy/other-${name}`, `unix:uid:${UID + 1}`);
    await mkdir(join(scratch, 'agent'), { mode: 0o700 });
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent-data'),
      trustBundle: bundle,
      joinToken: await server.joinToken(NODE),
      flags: ['--svid-cache-max-size', String(CAP), '--metrics-address', '127.0.0.1:0'],
    });
    children.push(agent);
    await agentReady(agent);
    metricsUrl = `http://${(await agent.waitFor(/"metricsAddress":"([\d.:]+)"/))[1]}`;
    client = workloadClient(join(scratch, 'agent', 'api.sock'));
  }, 120_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('signs nothing before a caller asks', async () => {
    expect(await held()).toBe(0);
  });

  it("serves a caller's first call with all its SVIDs, past the cap while it is live, then drops to the cap", async () => {
    const stream = new StreamWatcher(client.FetchX509SVID({}, securityHeader()));
    try {
      const first = await stream.next(() => true, { timeoutMs: 60_000 });
      expect(idsOf(first).sort()).toEqual([...ours].sort());
      expect(await held()).toBe(ours.length);
    } finally {
      stream.close();
    }
    await heldBecomes(CAP);
    // The other uid's entries were never signed, and a new call is served again in full (re-signing what was dropped).
    const again = new StreamWatcher(client.FetchX509SVID({}, securityHeader()));
    try {
      expect(idsOf(await again.next(() => true, { timeoutMs: 60_000 })).sort()).toEqual([...ours].sort());
    } finally {
      again.close();
    }
  });
});
