/**
 * sigil-agent end to end, on short lifetimes: a real server whose default X509-SVID TTL is 10 s (entries take the
 * default, so the agent rotates workload SVIDs after about 5 s, and renews its own SVID as often), and an agent that
 * attests with x509pop through the second of two server addresses. The 60 s minimum of an entry's own TTL would make
 * every rotation take half a minute; the server default has no such floor.
 */
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentStorage } from '../../apps/agent/src/storage/agent-storage.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import { newAgentKey, requestTls } from '../support/agent-api.js';
import { TestCa } from '../support/test-ca.js';
import {
  StreamWatcher,
  type WorkloadClient,
  idsOf,
  securityHeader,
  splitChain,
  verifySvidMessage,
  workloadClient,
  type X509SvidResponse,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const TTL_SECONDS = 10;

/**
 * The agent SVID as the agent stored it in its data dir. Key and certificate are separate files, each replaced
 * atomically: a pair read in the middle of a renewal does not match and is read again.
 */
async function storedAgentSvid(
  storage: AgentStorage,
): Promise<{ serial: string; publicKey: string; spiffeId: string; notAfter: number }> {
  for (let attempt = 0; ; attempt++) {
    const state = await storage.load(undefined);
    if (state === undefined) throw new Error(`${storage.dataDir}: no stored agent SVID`);
    const leaf = new X509Certificate(state.svidChain[0]!);
    const publicKey = createPublicKey(
      createPrivateKey({ key: Buffer.from(state.privateKeyPkcs8), format: 'der', type: 'pkcs8' }),
    ).export({ type: 'spki', format: 'der' });
    const certificateKey = leaf.publicKey.export({ type: 'spki', format: 'der' });
    if (publicKey.equals(certificateKey)) {
      return {
        serial: leaf.serialNumber,
        publicKey: publicKey.toString('base64'),
        spiffeId: leaf.subjectAltName?.replace(/^URI:/, '') ?? '',
        notAfter: Date.parse(leaf.validTo),
      };
    }
    if (attempt >= 20) throw new Error(`${storage.dataDir}: the stored key does not match the stored agent SVID`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

function leafSerial(response: X509SvidResponse): string {
  return new X509Certificate(splitChain(response.svids[0]!.x509_svid)[0]!).serialNumber;
}

describe('sigil-agent with short SVID lifetimes and x509pop (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: WorkloadClient;
  let fingerprint: string;
  const children: SigilProcess[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-rotation-'));
    // The node's x509pop credentials, from a CA the server is told to trust for x509pop.
    const nodeCa = await TestCa.create('nodes.example', { uris: [], subject: 'CN=Node CA' });
    const node = await nodeCa.createX509Svid('spiffe://nodes.example/unused', { uris: [], subject: 'CN=node-1' });
    fingerprint = new X509Certificate(new Uint8Array(node.certificate.rawData)).fingerprint
      .replaceAll(':', '')
      .toLowerCase();
    await writeFile(join(scratch, 'node-ca.pem'), nodeCa.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.pem'), node.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.key'), toPem(PEM_LABEL.privateKey, await node.privateKeyPkcs8()), {
      mode: 0o600,
    });

    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: [
        '--x509-svid-ttl',
        String(TTL_SECONDS),
        '--x509pop-ca-bundle',
        join(scratch, 'node-ca.pem'),
        // A small attestation budget per source address (1/s, burst 10), which the last test keeps in debt.
        '--attestation-rate',
        '1',
        '--attestation-burst',
        '10',
      ],
    });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    // SPIRE's node alias: every agent whose node selectors include the certificate's CN is known as /nodes/cn-node-1.
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      `${TD}/nodes/cn-node-1`,
      '--parent-id',
      `${TD}/sigil/server`,
      '--selector',
      'x509pop:subject:cn:node-1',
    ]);
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      `${TD}/rotating`,
      '--parent-id',
      `${TD}/nodes/cn-node-1`,
      '--selector',
      `unix:uid:${UID}`,
    ]);

    await mkdir(join(scratch, 'agent'));
    const flags = ['--x509pop-cert', join(scratch, 'node.pem'), '--x509pop-key', join(scratch, 'node.key')];
    // Port 1 refuses connections: the agent must fail over to the real server.
    agent = startAgentProcess({
      servers: [1, server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      flags,
    });
    children.push(agent);
    await agentReady(agent);
    client = workloadClient(join(scratch, 'agent', 'api.sock'));
  }, 180_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('attests with x509pop through the second server address, named by the certificate fingerprint', async () => {
    await agent.waitFor(new RegExp(`"agentId":"${TD}/sigil/agent/x509pop/${fingerprint}","method":"x509pop"`));
    expect(agent.output()).toMatch(/"server":"127\.0\.0\.1:\d+","msg":"failed over to another server"/);
  });

  it('rotates the workload SVID at about half its lifetime and pushes it on the open stream', async () => {
    const watcher = new StreamWatcher(client.FetchX509SVID({}, securityHeader()));
    try {
      const first = await watcher.next((message) => idsOf(message).join() === `${TD}/rotating`);
      const firstSvid = await verifySvidMessage(first.svids[0]!);
      const rotated = await watcher.next(
        (message) => message.svids.length === 1 && leafSerial(message) !== leafSerial(first),
        {
          timeoutMs: 3 * TTL_SECONDS * 1000,
        },
      );
      const rotatedSvid = await verifySvidMessage(rotated.svids[0]!);
      expect(rotatedSvid.spiffeId.toString()).toBe(`${TD}/rotating`);
      expect(rotatedSvid.verifiedChain[0]!.notAfter.getTime()).toBeGreaterThan(
        firstSvid.verifiedChain[0]!.notAfter.getTime(),
      );
      // A new key pair for every rotation.
      expect(Buffer.compare(rotated.svids[0]!.x509_svid_key, first.svids[0]!.x509_svid_key)).not.toBe(0);
    } finally {
      watcher.close();
    }
  });

  it('renews its own SVID at half life: the stored SVID has a new serial number and a new key', async () => {
    const storage = new AgentStorage(join(scratch, 'agent', 'data'));
    const from = agent.output().length;
    const serverFrom = server.process.output().length;
    const first = await storedAgentSvid(storage);
    expect(first.spiffeId).toBe(`${TD}/sigil/agent/x509pop/${fingerprint}`);
    const deadline = Date.now() + 3 * TTL_SECONDS * 1000;
    let renewed = first;
    while (renewed.serial === first.serial && Date.now() < deadline) {
      await new Promise((done) => setTimeout(done, 100));
      renewed = await storedAgentSvid(storage);
    }
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.publicKey).not.toBe(first.publicKey);
    expect(renewed.spiffeId).toBe(first.spiffeId);
    expect(renewed.notAfter).toBeGreaterThan(first.notAfter);
    // It can attest again (x509pop), so it renews by attesting again, as SPIRE's agent does: the server refuses such
    // an agent a plain renewal ("must reattest instead of renew"), which it never asked for.
    await agent.waitFor(/"method":"x509pop".*"msg":"node attested"/, { from });
    expect(agent.output().slice(from)).not.toMatch(
      /"msg":"agent SVID renewed"|must reattest|"msg":"the server refused this agent/,
    );
    expect(server.process.output().slice(serverFrom)).not.toMatch(/must reattest|agent renewed again before using/);
    expect((await server.cli(['agent', 'show', '--spiffe-id', first.spiffeId])).stdout).toMatch(
      /^Pending serial number\s+: none$/m,
    );
  }, 60_000);

  it(
    'attests again with x509pop after the server evicted it, and keeps serving the workload',
    { timeout: 60_000 },
    async () => {
      const agentId = `${TD}/sigil/agent/x509pop/${fingerprint}`;
      const from = agent.output().length;
      expect((await server.cli(['agent', 'evict', '--spiffe-id', agentId])).code).toBe(0);
      // Refused on its next call, or at its next renewal, which for an x509pop agent is an attestation: either way it
      // attests again.
      await agent.waitFor(/"method":"x509pop".*"msg":"node attested"/, { from, timeoutMs: 3 * TTL_SECONDS * 1000 });
      expect((await server.json<{ spiffe_id: string }>(['agent', 'show', '--spiffe-id', agentId])).spiffe_id).toBe(
        agentId,
      );
      const watcher = new StreamWatcher(client.FetchX509SVID({}, securityHeader()));
      try {
        const response = await watcher.next((message) => idsOf(message).join() === `${TD}/rotating`);
        await verifySvidMessage(response.svids[0]!);
      } finally {
        watcher.close();
      }
      expect(agent.running).toBe(true);
    },
  );

  it(
    'attests again at half life with its SVID as client certificate: refused attestations from its address (a NAT neighbour) do not starve it',
    { timeout: 60_000 },
    async () => {
      const storage = new AgentStorage(join(scratch, 'agent', 'data'));
      const from = agent.output().length;
      const first = await storedAgentSvid(storage);
      const csr = await (await newAgentKey()).csr();
      // Someone else on 127.0.0.1 guesses join tokens without pause: each guess the budget admits costs 10 of it, so
      // the address stays in debt (1/s) and every attestation it pays for gets 429.
      const statuses: number[] = [];
      let renewed = first;
      const deadline = Date.now() + 3 * TTL_SECONDS * 1000;
      while (renewed.serial === first.serial && Date.now() < deadline) {
        const guess = await requestTls(server.port, {
          method: 'POST',
          path: '/agent/v1/attest/join-token',
          body: { token: 'guessed', csr },
        });
        statuses.push(guess.status);
        await new Promise((done) => setTimeout(done, 200));
        renewed = await storedAgentSvid(storage);
      }
      expect(renewed.serial).not.toBe(first.serial);
      expect(new Set(statuses)).toEqual(new Set([403, 429]));
      await agent.waitFor(/"method":"x509pop".*"msg":"node attested"/, { from });
      // Its attestation presented its current SVID, so its own budget paid: never refused for the address's debt.
      expect(agent.output().slice(from)).not.toMatch(/over its attestation rate limit/);
    },
  );
});
