/**
 * Recovery after long absences (issue 12 item 4), with the real built server and agents on short lifetimes: the
 * server's default X509-SVID TTL, which agent SVIDs take too, is 6 s, so an agent stopped for a few seconds comes back
 * with an expired SVID.
 *
 * - An x509pop agent re-attests by itself under the same SPIFFE ID (derived from its node certificate).
 * - A join token agent whose token is spent stops at once with exit code 78 and a message naming the remedy.
 * - An agent offline across a whole CA rotation (prepare, activate, taint, revoke: the old root is gone from the
 *   bundle and the server's certificate chains to the new one) recovers by the documented route, the configured
 *   trust bundle file once it holds the current bundle, read again before every attempt; and it never trusts an
 *   impostor (a server of the same trust domain with its own CA) on that route, not even an agent that once
 *   bootstrapped with --insecure-bootstrap.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { TrustBundle, TrustDomain, peerCertificateChain, verifyX509Svid } from '@sigil/spiffe';
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
import { TestCa } from '../support/test-ca.js';
import {
  type WorkloadClient,
  firstMessage,
  idsOf,
  securityHeader,
  splitChain,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const TTL_SECONDS = 6;
const EXAMPLE = TrustDomain.parse('example.org');

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

/** Waits until the agent SVID stored in `dataDir` has expired (the agent is stopped meanwhile). */
async function storedSvidExpired(dataDir: string): Promise<void> {
  const state = await new AgentStorage(dataDir).load(undefined);
  const notAfter = Date.parse(new X509Certificate(state!.svidChain[0]!).validTo);
  await until('the stored agent SVID to expire', 3 * TTL_SECONDS * 1000, async () =>
    Date.now() > notAfter + 1000 ? true : undefined,
  );
}

/** The certificate chain the server presents on its TLS port. */
function serverChain(port: number): Promise<Uint8Array[]> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      const chain = peerCertificateChain(socket.getPeerCertificate(true));
      socket.destroy();
      resolve([...chain]);
    });
  });
}

describe('sigil-agent after long absences (real server and agents)', () => {
  let scratch: string;
  let server: ServerProcess;
  let bundleFile: string;
  let x509popFlags: string[];
  let agentId: string;
  const children: SigilProcess[] = [];
  const clients: WorkloadClient[] = [];

  const bundleNow = async (): Promise<TrustBundle> => {
    const pem = await server.cli(['bundle', 'show', '--format', 'pem']);
    expect(pem.code).toBe(0);
    return TrustBundle.fromX509Pem(EXAMPLE, pem.stdout);
  };
  const agentIds = async (of = server): Promise<string[]> =>
    (await of.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list'])).agents.map((agent) => agent.spiffe_id);
  const start = (name: string, options: { flags?: string[]; joinToken?: string; servers?: number[] } = {}) => {
    const agent = startAgentProcess({
      servers: options.servers ?? [server.port],
      socketPath: join(scratch, name, 'api.sock'),
      dataDir: join(scratch, name, 'data'),
      ...(options.joinToken === undefined ? {} : { joinToken: options.joinToken }),
      flags: options.flags ?? [],
    });
    children.push(agent);
    return agent;
  };
  /** "Nothing lost": the workload's entry is delivered and its SVID chains to the server's bundle of now. */
  const expectServed = async (name: string, workload: string): Promise<void> => {
    const client = workloadClient(join(scratch, name, 'api.sock'));
    clients.push(client);
    // Checked as valid when asked for: the SVIDs live 6 s, and on a loaded machine the answer and the bundle's CLI
    // call can take that long (an SVID served valid failed a check at arrival, 22:18 on 2026-12-05, load 25).
    const askedAt = new Date();
    const response = await firstMessage(client.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([workload]);
    await verifySvidMessage(response.svids[0]!, askedAt);
    await verifyX509Svid(splitChain(new Uint8Array(response.svids[0]!.x509_svid)), await bundleNow(), {
      now: askedAt,
    });
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-absence-'));
    for (const dir of ['pop', 'token', 'rotation', 'insecure', 'impostor']) await mkdir(join(scratch, dir));
    const nodeCa = await TestCa.create('nodes.example', { uris: [], subject: 'CN=Node CA' });
    const node = await nodeCa.createX509Svid('spiffe://nodes.example/unused', { uris: [], subject: 'CN=node-1' });
    const fingerprint = new X509Certificate(new Uint8Array(node.certificate.rawData)).fingerprint
      .replaceAll(':', '')
      .toLowerCase();
    agentId = `${TD}/sigil/agent/x509pop/${fingerprint}`;
    await writeFile(join(scratch, 'node-ca.pem'), nodeCa.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.pem'), node.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.key'), toPem(PEM_LABEL.privateKey, await node.privateKeyPkcs8()), {
      mode: 0o600,
    });
    x509popFlags = ['--x509pop-cert', join(scratch, 'node.pem'), '--x509pop-key', join(scratch, 'node.key')];
    const serverFlags = ['--x509-svid-ttl', String(TTL_SECONDS), '--x509pop-ca-bundle', join(scratch, 'node-ca.pem')];
    server = await startServerProcess({ dir: join(scratch, 'server'), flags: serverFlags });
    children.push(server.process);
    bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const entry = (id: string, parent: string, selector: string) =>
      server.json(['entry', 'create', '--spiffe-id', id, '--parent-id', parent, '--selector', selector]);
    // Every x509pop agent of node-1 is known as /nodes/cn-node-1 (SPIRE's node alias).
    await entry(`${TD}/nodes/cn-node-1`, `${TD}/sigil/server`, 'x509pop:subject:cn:node-1');
    await entry(`${TD}/pop-workload`, `${TD}/nodes/cn-node-1`, `unix:uid:${UID}`);
    await entry(`${TD}/token-workload`, `${TD}/host/token`, `unix:uid:${UID}`);
  }, 180_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('an x509pop agent down longer than its SVID lifetime re-attests by itself, same SPIFFE ID, workloads served', async () => {
    const first = start('pop', { flags: ['--trust-bundle', bundleFile, ...x509popFlags] });
    await agentReady(first);
    await expectServed('pop', `${TD}/pop-workload`);
    expect(await first.stop()).toBe(0);
    await storedSvidExpired(join(scratch, 'pop', 'data'));

    const again = start('pop', { flags: ['--trust-bundle', bundleFile, ...x509popFlags] });
    await again.waitFor(/"reason":"stored agent SVID expired at [^"]+".*"msg":"attesting this node"/);
    await again.waitFor(new RegExp(`"agentId":"${agentId}","method":"x509pop".*"msg":"node attested"`));
    await agentReady(again);
    await expectServed('pop', `${TD}/pop-workload`);
    expect((await agentIds()).filter((id) => id === agentId)).toHaveLength(1);
    expect(await again.stop()).toBe(0);
  });

  it('a join token agent down longer than its SVID lifetime stops at once with exit code 78 and the remedy', async () => {
    const token = await server.joinToken(`${TD}/host/token`);
    const first = start('token', { flags: ['--trust-bundle', bundleFile], joinToken: token });
    await agentReady(first);
    await expectServed('token', `${TD}/token-workload`);
    expect(await first.stop()).toBe(0);
    await storedSvidExpired(join(scratch, 'token', 'data'));

    const again = start('token', { flags: ['--trust-bundle', bundleFile], joinToken: token });
    expect(await again.exited).toBe(78);
    expect(again.output()).toMatch(
      /^Error: cannot start: stored agent SVID expired at \S+, and the configured join token was already used by this agent: generate a new one with 'sigil-server token generate' and pass it with --join-token$/m,
    );
    // One message, no retries and no attempt with the spent token.
    expect(again.output()).not.toMatch(/will retry|"msg":"attesting this node"/);
    expect(again.output().match(/^Error: /gm)).toHaveLength(1);
  });

  it('an agent offline across a whole CA rotation recovers through its trust bundle file, never an impostor', async () => {
    // Two agents of node-1 attest under the old CA, one with the trust bundle file, one insecurely; both stop.
    const popFlags = ['--trust-bundle', bundleFile, ...x509popFlags];
    const before = start('rotation', { flags: popFlags });
    await agentReady(before);
    expect(await before.stop()).toBe(0);
    const insecureFlags = ['--insecure-bootstrap', '--trust-domain', 'example.org', ...x509popFlags];
    const insecure = start('insecure', { flags: insecureFlags });
    await agentReady(insecure);
    expect(await insecure.stop()).toBe(0);
    const oldBundle = await bundleNow();

    // The whole rotation while both are down: the old root leaves the bundle, the server's certificate follows.
    const show = () =>
      server.json<{ active: { authority_id: string }; old?: { authority_id: string } }>([
        'localauthority',
        'x509',
        'show',
      ]);
    const old = (await show()).active.authority_id;
    const next = Object.values(
      await server.json<Record<string, { authority_id: string }>>(['localauthority', 'x509', 'prepare']),
    )[0]!.authority_id;
    await server.json(['localauthority', 'x509', 'activate', '--authority-id', next]);
    await server.json(['localauthority', 'x509', 'taint', '--authority-id', old]);
    expect((await server.cli(['localauthority', 'x509', 'revoke', '--authority-id', old, '--force'])).code).toBe(0);
    const newBundle = await bundleNow();
    expect(newBundle.x509AuthoritiesDer().some((der) => oldBundle.hasX509Authority(der))).toBe(false);
    await until('the server certificate to chain to the new CA', 30_000, async () => {
      try {
        await verifyX509Svid(await serverChain(server.port), newBundle);
        return true;
      } catch {
        return undefined;
      }
    });
    await storedSvidExpired(join(scratch, 'rotation', 'data'));
    await storedSvidExpired(join(scratch, 'insecure', 'data'));

    // An impostor: a server of the same trust domain with its own CA (its own embedded database), accepting the
    // same x509pop node. Neither agent attests with it: the stored bundle and the trust bundle file both lack its CA,
    // and insecure bootstrap is over once an agent holds a bundle.
    const impostor = await startServerProcess({
      dir: join(scratch, 'impostor'),
      database: 'embedded',
      flags: ['--x509pop-ca-bundle', join(scratch, 'node-ca.pem')],
    });
    children.push(impostor.process);
    await writeFile(bundleFile, (await server.cli(['bundle', 'show', '--format', 'pem'])).stdout);
    const fooled = start('rotation', { servers: [impostor.port], flags: popFlags });
    const fooledInsecure = start('insecure', { servers: [impostor.port], flags: insecureFlags });
    for (const agent of [fooled, fooledInsecure]) {
      await agent.waitFor(/"msg":"no server presented a certificate this agent trusts, cannot attest; will retry"/);
    }
    expect(fooledInsecure.output()).toContain('--insecure-bootstrap no longer applies to it');
    expect(fooledInsecure.output()).toContain('restart it with --trust-bundle holding the current bundle');
    expect(await agentIds(impostor)).toEqual([]);
    for (const agent of [fooled, fooledInsecure]) {
      expect(agent.output()).not.toContain('"msg":"node attested"');
      // Still attesting: SIGTERM ends it before its signal handlers exist (exit by signal, no code).
      await agent.stop();
      expect(agent.running).toBe(false);
    }

    // The real server, with the trust bundle file as the agent was installed with (the old CA only): the agent says
    // what to do and, once the file holds the current bundle, recovers without a restart.
    await writeFile(
      bundleFile,
      oldBundle
        .x509AuthoritiesDer()
        .map((der) => toPem('CERTIFICATE', der))
        .join(''),
    );
    const recovering = start('rotation', { flags: popFlags });
    const refused = await recovering.waitFor(
      /"remedy":"([^"]+)".*"msg":"no server presented a certificate this agent trusts, cannot attest; will retry"/,
    );
    expect(refused[1]).toBe(
      `if the server's CA rotated while this agent was offline, write the current bundle ('sigil-server bundle show') to ${bundleFile}: the agent reads it again before every attestation attempt`,
    );
    await server.writeBundle(bundleFile);
    await recovering.waitFor(new RegExp(`"agentId":"${agentId}","method":"x509pop".*"msg":"node attested"`));
    await agentReady(recovering);
    await expectServed('rotation', `${TD}/pop-workload`);
    expect((await agentIds()).filter((id) => id === agentId)).toHaveLength(1);
    // It now trusts the server's bundle of now, which it stored.
    const stored = await new AgentStorage(join(scratch, 'rotation', 'data')).load(undefined);
    expect(stored!.bundle.x509AuthoritiesDer().some((der) => oldBundle.hasX509Authority(der))).toBe(false);
  }, 180_000);
});
