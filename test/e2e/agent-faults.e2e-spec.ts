/**
 * Faults of the agent's host, injected from outside into a REAL server and REAL agents (issue 12, item 3): kill -9
 * while the agent saves a rotated SVID, a full disk under its data dir (a size-limited tmpfs, mounted as root), a
 * corrupt state file, its clock jumping an hour forward and back (Debian's libfaketime, preloaded into the agent with
 * a timestamp file the test rewrites), and a server outage longer than an SVID's lifetime. Every scenario ends with
 * the same check that nothing was lost: the agent's identity, its entries, the bundle, and an X509-SVID served to the
 * workload that is valid now and chains to the server's bundle. SVIDs live 10 s (the server's default X509-SVID
 * TTL here), so rotations come every ~5 s.
 */
import { X509Certificate } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PEM_LABEL, pemBlocks, toPem } from '@sigil/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentStorage, decideResume } from '../../apps/agent/src/storage/agent-storage.js';
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
  StreamWatcher,
  type WorkloadClient,
  firstMessage,
  securityHeader,
  splitChain,
  unary,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const TTL_SECONDS = 10;
const LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1';
const IS_ROOT = UID === 0;

/** Whether this host lets the test mount a tmpfs (root, and a kernel/container that allows it). */
function canMountTmpfs(): boolean {
  if (!IS_ROOT) return false;
  const dir = mkdtempSync(join(tmpdir(), 'sigil-tmpfs-probe-'));
  try {
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]).status !== 0) return false;
    spawnSync('umount', [dir]);
    return true;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const TMPFS = canMountTmpfs();

interface Node {
  readonly name: string;
  readonly agentId: string;
  readonly workloadId: string;
  readonly flags: string[];
  readonly dir: string;
  dataDir: string;
  readonly socket: string;
}

describe('sigil-agent under host faults (real server and agents, faults from outside)', () => {
  let scratch: string;
  let server: ServerProcess;
  let nodeCa: TestCa;
  let bundleFile: string;
  const children: SigilProcess[] = [];
  const clients: WorkloadClient[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-faults-'));
    nodeCa = await TestCa.create('nodes.example', { uris: [], subject: 'CN=Node CA' });
    await writeFile(join(scratch, 'node-ca.pem'), nodeCa.certificate.toString('pem'));
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: [
        '--x509-svid-ttl',
        String(TTL_SECONDS),
        '--node-attestor',
        'join_token',
        '--node-attestor',
        'x509pop',
        '--x509pop-ca-bundle',
        join(scratch, 'node-ca.pem'),
      ],
    });
    children.push(server.process);
    bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
  }, 180_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch !== undefined) {
      for (const mount of ['tmpfs']) spawnSync('umount', [join(scratch, mount)]);
      await rm(scratch, { recursive: true, force: true });
    }
  });

  /** A node with its own x509pop certificate, and an entry for this test's uid parented to its agent ID. */
  async function makeNode(name: string): Promise<Node> {
    const dir = join(scratch, name);
    await mkdir(dir);
    const cert = await nodeCa.createX509Svid('spiffe://nodes.example/unused', { uris: [], subject: `CN=${name}` });
    const fingerprint = new X509Certificate(new Uint8Array(cert.certificate.rawData)).fingerprint
      .replaceAll(':', '')
      .toLowerCase();
    await writeFile(join(dir, 'node.pem'), cert.certificate.toString('pem'));
    await writeFile(join(dir, 'node.key'), toPem(PEM_LABEL.privateKey, await cert.privateKeyPkcs8()), { mode: 0o600 });
    const agentId = `${TD}/sigil/agent/x509pop/${fingerprint}`;
    const workloadId = `${TD}/workload/${name}`;
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      workloadId,
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${UID}`,
    ]);
    return {
      name,
      agentId,
      workloadId,
      flags: ['--x509pop-cert', join(dir, 'node.pem'), '--x509pop-key', join(dir, 'node.key')],
      dir,
      dataDir: join(dir, 'data'),
      socket: join(dir, 'api.sock'),
    };
  }

  function startAgent(node: Node, extra: { flags?: string[]; env?: NodeJS.ProcessEnv } = {}): SigilProcess {
    const agent = startAgentProcess({
      servers: [server.port],
      socketPath: node.socket,
      dataDir: node.dataDir,
      trustBundle: bundleFile,
      flags: [...node.flags, ...(extra.flags ?? [])],
      ...(extra.env && { env: extra.env }),
    });
    children.push(agent);
    return agent;
  }

  function client(node: Node): WorkloadClient {
    const made = workloadClient(node.socket);
    clients.push(made);
    return made;
  }

  /** The server's bundle: its X.509 authorities (DER, base64) and its sequence number. */
  async function serverBundle(): Promise<{ authorities: string[]; sequence: number }> {
    const pem = await server.cli(['bundle', 'show', '--format', 'pem']);
    const jwks = JSON.parse((await server.cli(['bundle', 'show', '--format', 'spiffe'])).stdout) as {
      spiffe_sequence: number;
    };
    return {
      authorities: pemBlocks(pem.stdout)
        .map((block) => Buffer.from(block.der).toString('base64'))
        .sort(),
      sequence: jwks.spiffe_sequence,
    };
  }

  /**
   * Nothing lost: the server still knows the agent under the same ID and the node's entry; the agent stored a
   * resumable identity with the server's bundle (same sequence); the workload gets an X509-SVID of its entry that is
   * valid now and chains to the server's bundle (sent with it, and equal to the server's).
   */
  async function expectNothingLost(node: Node, workload: WorkloadClient): Promise<void> {
    const bundle = await serverBundle();
    const response = await firstMessage(workload.FetchX509SVID({}, securityHeader()));
    expect(response.svids.map((svid) => svid.spiffe_id)).toEqual([node.workloadId]);
    const svid = response.svids[0]!;
    const verified = await verifySvidMessage(svid);
    expect(verified.verifiedChain[0]!.notAfter.getTime()).toBeGreaterThan(Date.now());
    expect(
      splitChain(svid.bundle)
        .map((der) => Buffer.from(der).toString('base64'))
        .sort(),
    ).toEqual(bundle.authorities);
    const entries = await server.json<{ entries: { spiffe_id: string; parent_id: string }[] }>([
      'entry',
      'show',
      '--spiffe-id',
      node.workloadId,
    ]);
    expect(entries.entries.map((entry) => entry.parent_id)).toEqual([node.agentId]);
    expect((await server.cli(['agent', 'show', '--spiffe-id', node.agentId])).code).toBe(0);
    // Key and SVID are renamed one after the other by a save: a read between the two is read again.
    await expectEventually(async () => {
      const stored = await new AgentStorage(node.dataDir).load(undefined);
      const decision = await decideResume(stored, { now: new Date(), trustDomain: undefined });
      expect(decision.resume && decision.spiffeId.toString()).toBe(node.agentId);
      expect(stored!.bundle.sequenceNumber).toBe(bundle.sequence);
    }, 5_000);
  }

  /** Calls FetchX509SVID until it answers with `code` (a gRPC status), returning the error. */
  async function untilCode(workload: WorkloadClient, code: grpc.status, timeoutMs: number): Promise<grpc.ServiceError> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const askedAt = new Date();
        const response = await firstMessage(workload.FetchX509SVID({}, securityHeader()));
        // Whatever is served before then must have been valid when it was asked for: checked at the answer's
        // arrival instead, an SVID served in its last milliseconds failed this check (fresh-clone CI, d6f2aeb).
        for (const svid of response.svids) await verifySvidMessage(svid, askedAt);
      } catch (error) {
        if ((error as grpc.ServiceError).code === code) return error as grpc.ServiceError;
        throw error;
      }
      if (Date.now() > deadline) throw new Error(`FetchX509SVID did not answer ${grpc.status[code]} in time`);
      await new Promise((done) => setTimeout(done, 200));
    }
  }

  it('resumes from its data dir after kill -9 in the middle of saving a rotated SVID', async () => {
    const node = await makeNode('killed');
    let agent = startAgent(node);
    await agentReady(agent);
    const workload = client(node);
    for (let round = 0; round < 3; round++) {
      // The save of a renewal creates its temporary files first: kill the agent as soon as one appears.
      const killed = new Promise<string>((done) => {
        const watcher = watch(node.dataDir, (_event, name) => {
          if (name === null || !name.endsWith('.tmp')) return;
          agent.child.kill('SIGKILL');
          watcher.close();
          done(name);
        });
      });
      const name = await killed;
      expect(name).toMatch(/^\.(agent-svid|agent-key|bundle|agent)\.(pem|json)\.\d+\.[0-9a-f]{12}\.tmp$/);
      await agent.exited;
      const from = 0;
      agent = startAgent(node);
      await agentReady(agent, from);
      // The temporary files of the interrupted save (one may hold a private key) are gone.
      // (A save of the new process may be under way: its own temporary files carry its pid.)
      expect(
        (await readdir(node.dataDir)).filter((file) => file.endsWith('.tmp') && !file.includes(`.${agent.child.pid}.`)),
      ).toEqual([]);
      // Either the stored SVID was still the current one (resumed) or the server had recorded the new one the agent
      // did not get to save (x509pop attests again, under the same agent ID).
      expect(agent.output()).toMatch(/resumed with the stored agent SVID|"msg":"node attested"/);
      await expectNothingLost(node, workload);
    }
    await agent.stop();
  }, 180_000);

  it.skipIf(!TMPFS)(
    `keeps its old state on a full disk, serves from memory, and saves again when space returns${
      TMPFS ? '' : ' (skipped: mounting a tmpfs needs root and a host that allows mount)'
    }`,
    async () => {
      const node = await makeNode('full-disk');
      const mount = join(scratch, 'tmpfs');
      await mkdir(mount, { mode: 0o700 });
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', mount]);
      node.dataDir = join(mount, 'data');
      const agent = startAgent(node, { flags: ['--metrics-address', '127.0.0.1:0'] });
      await agentReady(agent);
      const metrics = `http://${(await agent.waitFor(/"metricsAddress":"([\d.:]+)"/))[1]}/metrics`;
      const workload = client(node);
      await expectNothingLost(node, workload);
      const files = ['agent-svid.pem', 'agent-key.pem', 'bundle.json', 'agent.json'];
      // Fill the file system: one file as large as it takes, then single bytes until nothing fits.
      const filler = join(mount, 'filler');
      spawnSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { stdio: 'ignore' });
      const before = await Promise.all(files.map((file) => readFile(join(node.dataDir, file))));
      const from = agent.output().length;
      await agent.waitFor(/no space left on device \(ENOSPC\).*"msg":"cannot save the agent state/, {
        from,
        timeoutMs: 3 * TTL_SECONDS * 1000,
      });
      // The old state is whole (a save replaces all or nothing), and no temporary file was left.
      expect(await Promise.all(files.map((file) => readFile(join(node.dataDir, file))))).toEqual(before);
      // (A save of the new process may be under way: its own temporary files carry its pid.)
      expect(
        (await readdir(node.dataDir)).filter((file) => file.endsWith('.tmp') && !file.includes(`.${agent.child.pid}.`)),
      ).toEqual([]);
      expect(await (await fetch(metrics)).text()).toMatch(/^sigil_agent_state_unsaved 1$/m);
      // The agent goes on with the renewed SVID in memory: the workload is served, with rotations.
      const served = await firstMessage(workload.FetchX509SVID({}, securityHeader()));
      await verifySvidMessage(served.svids[0]!);
      expect(agent.running).toBe(true);
      await rm(filler);
      await agent.waitFor(/"msg":"agent state saved to the data dir again"/, { from, timeoutMs: 30_000 });
      expect(await (await fetch(metrics)).text()).toMatch(/^sigil_agent_state_unsaved 0$/m);
      await expectNothingLost(node, workload);
      // What was saved is what the agent uses: after kill -9 it resumes without attesting.
      await agent.stop('SIGKILL');
      const restarted = startAgent(node);
      await agentReady(restarted);
      // It resumes without attesting, unless its 10 s SVID ran out before the restart (a loaded machine): never for
      // another reason (unreadable or refused state).
      expect(restarted.output()).toMatch(/resumed with the stored agent SVID|"reason":"stored agent SVID expired at/);
      expect(restarted.output()).not.toMatch(/unreadable|not the current one|refused/);
      await expectNothingLost(node, workload);
      await restarted.stop();
      execFileSync('umount', [mount]);
    },
    180_000,
  );

  it('names a corrupt state file, then attests again with x509pop; a join-token agent stops saying what to do', async () => {
    const node = await makeNode('corrupt');
    let agent = startAgent(node);
    await agentReady(agent);
    await agent.stop();
    await writeFile(join(node.dataDir, 'agent-svid.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n');
    agent = startAgent(node);
    await agentReady(agent);
    expect(agent.output()).toMatch(
      new RegExp(`${node.dataDir}/agent-svid\\.pem: .*"msg":"stored agent state is unreadable, ignoring it"`),
    );
    expect(agent.output()).toMatch(/"method":"x509pop".*"msg":"node attested"/);
    await expectNothingLost(node, client(node));
    await agent.stop();

    // A join token is single use: the agent cannot attest again and says why, naming the file.
    const tokenDir = join(scratch, 'corrupt-token');
    await mkdir(tokenDir);
    const token = await server.joinToken();
    const tokenAgent = (): SigilProcess => {
      const started = startAgentProcess({
        servers: [server.port],
        socketPath: join(tokenDir, 'api.sock'),
        dataDir: join(tokenDir, 'data'),
        trustBundle: bundleFile,
        joinToken: token,
      });
      children.push(started);
      return started;
    };
    const first = tokenAgent();
    await agentReady(first);
    await first.stop();
    await writeFile(join(tokenDir, 'data', 'agent.json'), '{ "spiffe_id": ');
    const second = tokenAgent();
    expect(await second.exited).not.toBe(0);
    expect(second.output()).toMatch(/refused by the server.*the stored agent state is unreadable/);
    expect(second.output()).toContain(join(tokenDir, 'data', 'agent.json'));
  }, 180_000);

  it.skipIf(!existsSync(LIBFAKETIME))(
    `serves no SVID past its expiry when its clock jumps an hour forward or back, and recovers${
      existsSync(LIBFAKETIME) ? '' : ' (skipped: libfaketime is not installed; apt-get install faketime)'
    }`,
    async () => {
      const node = await makeNode('clock');
      const offset = join(node.dir, 'faketime');
      await writeFile(offset, '+0\n');
      const agent = startAgent(node, {
        env: {
          LD_PRELOAD: LIBFAKETIME,
          FAKETIME_TIMESTAMP_FILE: offset,
          FAKETIME_NO_CACHE: '1',
          // Timers run on the monotonic clock, which stays true, as on a host whose wall clock is set.
          FAKETIME_DONT_FAKE_MONOTONIC: '1',
        },
      });
      await agentReady(agent);
      const workload = client(node);
      await expectNothingLost(node, workload);

      // An hour forward: every SVID held is expired by the agent's clock, and the server's new ones too.
      await writeFile(offset, '+1h\n');
      const forward = await untilCode(workload, grpc.status.UNAVAILABLE, 15_000);
      expect(forward.details).toMatch(/no valid X509-SVID: the one of .* expired at/);
      await expect(unary(workload.FetchJWTSVID.bind(workload), { audience: ['faults'] })).rejects.toMatchObject({
        code: grpc.status.UNAVAILABLE,
      });
      // Back to the true time: rotation recovers.
      await writeFile(offset, '+0\n');
      // Entries refused meanwhile are tried again after 30 s, and renewals back off up to 30 s.
      await expectEventually(
        () => expectNothingLost(node, workload),
        90_000,
        () => agent.output(),
      );

      // An hour back: the SVIDs held look valid for another hour by the wall clock, but are not served past their
      // true expiry (the monotonic clock), and the stream open meanwhile ends with UNAVAILABLE.
      const watcher = new StreamWatcher(workload.FetchX509SVID({}, securityHeader()));
      await watcher.next(() => true);
      const backFrom = agent.output().length;
      await writeFile(offset, '-1h\n');
      const back = await untilCode(workload, grpc.status.UNAVAILABLE, 2 * TTL_SECONDS * 1000);
      expect(back.details).toMatch(/expired at/);
      await expectEventually(() => {
        expect(watcher.error?.code).toBe(grpc.status.UNAVAILABLE);
      }, 10_000);
      // Held back, the server's TLS certificate is not valid yet by this clock either: the agent keeps retrying
      // (the server unreachable to it) and never stops, whatever it holds.
      await agent.waitFor(/not valid before .*"msg":"(entry sync failed|could not sign X509-SVIDs), will retry"/, {
        from: backFrom,
        timeoutMs: 60_000,
      });
      await writeFile(offset, '+0\n');
      // Entries refused meanwhile are tried again after 30 s, and renewals back off up to 30 s.
      await expectEventually(
        () => expectNothingLost(node, workload),
        90_000,
        () => agent.output(),
      );
      expect(agent.running).toBe(true);
      await agent.stop();
    },
    180_000,
  );

  it('answers UNAVAILABLE once its SVIDs expired during a server outage, says why in its log and metrics, and recovers', async () => {
    const node = await makeNode('outage');
    const agent = startAgent(node, { flags: ['--metrics-address', '127.0.0.1:0'] });
    await agentReady(agent);
    const metrics = `http://${(await agent.waitFor(/"metricsAddress":"([\d.:]+)"/))[1]}/metrics`;
    const workload = client(node);
    await expectNothingLost(node, workload);
    const watcher = new StreamWatcher(workload.FetchX509SVID({}, securityHeader()));
    await watcher.next(() => true);
    const from = agent.output().length;
    await server.process.stop('SIGKILL');
    const unavailable = await untilCode(workload, grpc.status.UNAVAILABLE, 3 * TTL_SECONDS * 1000);
    expect(unavailable.details).toMatch(
      /no valid X509-SVID: the one of .*\/workload\/outage expired at .* could not renew it/,
    );
    // The stream open since before the outage ended with the same answer rather than keeping the expired SVID.
    await expectEventually(() => expect(watcher.error?.code, agent.output()).toBe(grpc.status.UNAVAILABLE), 10_000);
    await expect(unary(workload.FetchJWTSVID.bind(workload), { audience: ['faults'] })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
    await agent.waitFor(/"msg":"X509-SVIDs expired before the agent could renew them: no longer served"/, { from });
    await expectEventually(async () => {
      const text = await (await fetch(metrics)).text();
      expect(text).toMatch(/^sigil_agent_expired_svids\{svid="workload"\} 1$/m);
      expect(text).toMatch(/^sigil_agent_expired_svids\{svid="agent"\} 1$/m);
    }, 15_000);

    server = await server.restart();
    children.push(server.process);
    await expectEventually(() => expectNothingLost(node, workload), 60_000);
    const text = await (await fetch(metrics)).text();
    expect(text).toMatch(/^sigil_agent_expired_svids\{svid="workload"\} 0$/m);
    expect(agent.running).toBe(true);
    await agent.stop();
  }, 180_000);
});

/** Retries `check` until it passes or `timeoutMs` has elapsed (then throws its last failure). */
async function expectEventually(check: () => unknown, timeoutMs: number, context?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        if (context !== undefined) (error as Error).message += `\n${context()}`;
        throw error;
      }
      await new Promise((done) => setTimeout(done, 250));
    }
  }
}
