/**
 * sigil-agent end to end: the real built `sigil-server` and two `sigil-agent` processes joined to it, called on their
 * Workload API sockets with a plain @grpc/grpc-js client. One server and its agents are shared by the whole file;
 * the tests that stop processes (ban, restart, server outage) come last.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { TrustBundle, TrustDomain, parseAndValidateJwtSvid } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opensslVerify } from '../support/openssl.js';
import { NOBODY, isRoot, spawnRelayCaller } from '../support/relay-caller.js';
import {
  AGENT_BIN,
  ROOT,
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  runBin,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import {
  StreamWatcher,
  type WorkloadClient,
  firstMessage,
  idsOf,
  securityHeader,
  splitChain,
  unary,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';

describe('sigil-agent Workload API (real server and agents)', () => {
  let scratch: string;
  let server: ServerProcess;
  let bundleFile: string;
  let agentA: SigilProcess;
  let agentB: SigilProcess;
  let clientA: WorkloadClient;
  let clientB: WorkloadClient;
  const socketA = (): string => join(scratch, 'a', 'api.sock');
  const socketB = (): string => join(scratch, 'b', 'api.sock');
  let tokenA: string;
  const children: SigilProcess[] = [];

  const createEntry = async (path: string, parent: string, selector = `unix:uid:${UID}`) =>
    (
      await server.json<{ id: string }>([
        'entry',
        'create',
        '--spiffe-id',
        `${TD}${path}`,
        '--parent-id',
        `${TD}${parent}`,
        '--selector',
        selector,
      ])
    ).id;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-agent-e2e-'));
    await chmod(scratch, 0o755); // the test child running as another user must reach the sockets
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    tokenA = await server.joinToken(`${TD}/host/a`);
    const tokenB = await server.joinToken(`${TD}/host/b`);
    await createEntry('/web', '/host/a');
    await createEntry('/b-only', '/host/b');
    for (const dir of ['a', 'b']) await mkdir(join(scratch, dir), { mode: 0o755 });
    agentA = startAgentProcess({
      servers: [server.port],
      socketPath: socketA(),
      dataDir: join(scratch, 'a', 'data'),
      trustBundle: bundleFile,
      joinToken: tokenA,
    });
    agentB = startAgentProcess({
      servers: [server.port],
      socketPath: socketB(),
      dataDir: join(scratch, 'b', 'data'),
      trustBundle: bundleFile,
      joinToken: tokenB,
    });
    children.push(agentA, agentB);
    await Promise.all([agentReady(agentA), agentReady(agentB)]);
    clientA = workloadClient(socketA());
    clientB = workloadClient(socketB());
  }, 180_000);

  afterAll(async () => {
    clientA?.close();
    clientB?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('serves the caller its X509-SVID, which verifies with libs/spiffe and with openssl', async () => {
    const response = await firstMessage(clientA.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([`${TD}/web`]);
    const svid = response.svids[0]!;
    const verified = await verifySvidMessage(svid);
    expect(verified.spiffeId.toString()).toBe(`${TD}/web`);
    const [leaf, ...intermediates] = splitChain(svid.x509_svid);
    const roots = TrustBundle.fromX509Der(
      TrustDomain.parse('example.org'),
      new Uint8Array(svid.bundle),
    ).x509Authorities;
    const openssl = await opensslVerify({ root: roots[0]!, intermediates, leaf: leaf!, purpose: 'sslclient' });
    expect(openssl.output).toContain('OK');
    expect(openssl.ok).toBe(true);
  });

  it("does not give agent A's workloads agent B's entries, nor the reverse", async () => {
    expect(idsOf(await firstMessage(clientA.FetchX509SVID({}, securityHeader())))).toEqual([`${TD}/web`]);
    expect(idsOf(await firstMessage(clientB.FetchX509SVID({}, securityHeader())))).toEqual([`${TD}/b-only`]);
  });

  it('serves the X.509 and JWT bundles of the trust domain', async () => {
    const serverBundle = TrustBundle.fromX509Pem(TrustDomain.parse('example.org'), await readFile(bundleFile, 'utf8'));
    const x509 = await firstMessage(clientA.FetchX509Bundles({}, securityHeader()));
    expect(Object.keys(x509.bundles)).toEqual([TD]);
    expect(TrustBundle.fromX509Der(TrustDomain.parse(TD), new Uint8Array(x509.bundles[TD]!)).x509Pem()).toBe(
      serverBundle.x509Pem(),
    );
    const jwt = await firstMessage(clientA.FetchJWTBundles({}, securityHeader()));
    const jwks = JSON.parse(Buffer.from(jwt.bundles[TD]!).toString('utf8')) as { keys: { kid?: string }[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys.every((key) => typeof key.kid === 'string' && key.kid !== '')).toBe(true);
  });

  it('signs a JWT-SVID that validates with the JWT bundle and through ValidateJWTSVID', async () => {
    const fetched = await unary(clientA.FetchJWTSVID.bind(clientA), { audience: ['test'] });
    expect(fetched.svids.map((svid) => svid.spiffe_id)).toEqual([`${TD}/web`]);
    const token = fetched.svids[0]!.svid;
    const jwt = await firstMessage(clientA.FetchJWTBundles({}, securityHeader()));
    const bundle = TrustBundle.parseJwks(TrustDomain.parse(TD), Buffer.from(jwt.bundles[TD]!).toString('utf8'));
    expect((await parseAndValidateJwtSvid(token, bundle, 'test')).spiffeId.toString()).toBe(`${TD}/web`);
    const validated = await unary(clientA.ValidateJWTSVID.bind(clientA), { audience: 'test', svid: token });
    expect(validated.spiffe_id).toBe(`${TD}/web`);
    await expect(
      unary(clientA.ValidateJWTSVID.bind(clientA), { audience: 'other', svid: token }),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    await expect(unary(clientA.FetchJWTSVID.bind(clientA), { audience: [] })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
  });

  it('answers INVALID_ARGUMENT to a call without the security header', async () => {
    await expect(firstMessage(clientA.FetchX509SVID({}, securityHeader(false)))).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    await expect(
      unary(clientA.FetchJWTSVID.bind(clientA), { audience: ['test'] }, securityHeader(false)),
    ).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
  });

  it.skipIf(!isRoot)(
    'answers PERMISSION_DENIED to a process of another user, then its own identity once an entry names its uid (root only: runs it as nobody)',
    async () => {
      const stranger = await spawnRelayCaller(socketA(), { asNobody: true });
      try {
        expect(await stranger.fetchX509SvidIds()).toEqual({ grpcStatus: 7, message: 'no identity issued' });
      } finally {
        await stranger.close();
      }
      const id = await createEntry('/nobody', '/host/a', `unix:uid:${NOBODY}`);
      try {
        // The entry reaches the agent asynchronously: ask again until it is there.
        await expect
          .poll(
            async () => {
              const caller = await spawnRelayCaller(socketA(), { asNobody: true });
              try {
                return await caller.fetchX509SvidIds();
              } finally {
                await caller.close();
              }
            },
            { timeout: 20_000, interval: 250 },
          )
          .toEqual({ ids: [`${TD}/nobody`] });
      } finally {
        expect((await server.cli(['entry', 'delete', '--id', id])).code).toBe(0);
      }
    },
  );

  it('identifies another process of our uid by the kernel: it gets our identity', async () => {
    const caller = await spawnRelayCaller(socketA());
    try {
      expect(await caller.fetchX509SvidIds()).toEqual({ ids: [`${TD}/web`] });
    } finally {
      await caller.close();
    }
  });

  it('pushes a new X509SVIDResponse on an open stream when an entry is created and when it is deleted', async () => {
    const watcher = new StreamWatcher(clientA.FetchX509SVID({}, securityHeader()));
    try {
      await watcher.next((message) => idsOf(message).join() === `${TD}/web`);
      const id = await createEntry('/web2', '/host/a');
      const added = await watcher.next((message) => idsOf(message).join() === `${TD}/web,${TD}/web2`);
      for (const svid of added.svids) await verifySvidMessage(svid);
      const from = watcher.messages.length;
      expect((await server.cli(['entry', 'delete', '--id', id])).code).toBe(0);
      await watcher.next((message) => idsOf(message).join() === `${TD}/web`, { from });
    } finally {
      watcher.close();
    }
  });

  it('CLI: api fetch x509 --write, fetch jwt, validate jwt and healthcheck go through the Workload API', async () => {
    const socket = ['--socket-path', socketA()];
    const out = join(scratch, 'cli-out');
    const x509 = await runBin(AGENT_BIN, ['api', 'fetch', 'x509', '--write', out, ...socket]);
    expect(x509.stderr).toBe('');
    expect(x509.code).toBe(0);
    expect(x509.stdout).toMatch(/SPIFFE ID\s+: spiffe:\/\/example\.org\/web/);
    expect((await stat(join(out, 'svid.0.key'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(out, 'svid.0.key'), 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const openssl = await opensslVerify({
      root: await readFile(join(out, 'bundle.0.pem'), 'utf8'),
      leaf: await readFile(join(out, 'svid.0.pem'), 'utf8'),
    });
    expect(openssl.ok).toBe(true);

    const jwt = await runBin(AGENT_BIN, ['api', 'fetch', 'jwt', '--audience', 'test', '--output', 'json'], {
      SPIFFE_ENDPOINT_SOCKET: `unix://${socketA()}`,
    });
    expect(jwt.code).toBe(0);
    const token = (JSON.parse(jwt.stdout) as { svids: { spiffe_id: string; svid: string }[] }).svids[0]!;
    expect(token.spiffe_id).toBe(`${TD}/web`);
    const valid = await runBin(AGENT_BIN, [
      'api',
      'validate',
      'jwt',
      '--audience',
      'test',
      '--svid',
      token.svid,
      ...socket,
    ]);
    expect(valid).toMatchObject({ code: 0, stderr: '' });
    expect(valid.stdout).toMatch(/^SVID is valid\.\nSPIFFE ID : spiffe:\/\/example\.org\/web\n/);
    const invalid = await runBin(AGENT_BIN, [
      'api',
      'validate',
      'jwt',
      '--audience',
      'nope',
      '--svid',
      token.svid,
      ...socket,
    ]);
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/^Error: SVID is not valid: .*audience.*\n$/);

    expect(await runBin(AGENT_BIN, ['healthcheck', ...socket])).toMatchObject({
      code: 0,
      stdout: 'Agent is healthy.\n',
    });
    const missing = await runBin(AGENT_BIN, ['healthcheck', '--socket-path', join(scratch, 'none.sock')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /^Error: agent is unhealthy: cannot connect to the Workload API at unix:\/\/.*none\.sock: .*\n$/,
    );
  });

  it('CLI: api watch prints the current X509-SVIDs and exits 0 on SIGINT', async () => {
    const watch = spawn(process.execPath, [AGENT_BIN, 'api', 'watch', '--socket-path', socketA(), '--output', 'json'], {
      cwd: ROOT,
    });
    let output = '';
    watch.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    for (let i = 0; i < 400 && !output.includes('\n'); i++) await new Promise((done) => setTimeout(done, 25));
    const first = JSON.parse(output.split('\n')[0]!) as { svids: { spiffe_id: string }[] };
    expect(first.svids.map((svid) => svid.spiffe_id)).toEqual([`${TD}/web`]);
    watch.kill('SIGINT');
    const [code] = (await once(watch, 'exit')) as [number];
    expect(code).toBe(0);
  });

  it('refuses a join token that was already used', async () => {
    const reuse = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'c', 'api.sock'),
      dataDir: join(scratch, 'c', 'data'),
      trustBundle: bundleFile,
      joinToken: tokenA,
    });
    children.push(reuse);
    expect(await reuse.exited).toBe(78);
    expect(reuse.output()).toMatch(/^Error: node attestation \(join_token\) refused by the server: .+$/m);
  });

  it('refuses to start on a socket directory others can write to, naming it, before spending its join token', async () => {
    const shared = join(scratch, 'shared');
    await mkdir(shared, { mode: 0o755 });
    await chmod(shared, 0o777);
    const token = await server.joinToken(`${TD}/host/d`);
    const start = (socketDir: string) =>
      startAgentProcess({
        servers: [server.port],
        socketPath: join(socketDir, 'public', 'api.sock'),
        dataDir: join(scratch, 'd', 'data'),
        trustBundle: bundleFile,
        joinToken: token,
      });
    const refused = start(shared);
    children.push(refused);
    expect(await refused.exited).toBe(1);
    expect(refused.output()).toMatch(
      new RegExp(
        `^Error: unsafe socket directory: ${shared} is writable by group or others \\(owner uid ${UID}, mode 0777\\)`,
        'm',
      ),
    );
    expect(refused.output()).not.toContain('"msg":"node attested"');
    // The token is still good: the same agent with a safe directory attests with it.
    const agent = start(join(scratch, 'd'));
    children.push(agent);
    await agentReady(agent);
    expect(await agent.stop('SIGTERM')).toBe(0);
  });

  it('never logs a private key or its join token', () => {
    for (const agent of [agentA, agentB]) {
      expect(agent.output()).toContain('"msg":"node attested"');
      expect(agent.output()).not.toContain('PRIVATE KEY');
    }
    expect(agentA.output()).not.toContain(tokenA);
  });

  it('resumes from its data dir after a restart, without a join token', async () => {
    expect(await agentA.stop('SIGTERM')).toBe(0);
    agentA = startAgentProcess({
      servers: [server.port],
      socketPath: socketA(),
      dataDir: join(scratch, 'a', 'data'),
      trustBundle: bundleFile,
    });
    children.push(agentA);
    await agentA.waitFor(/"msg":"resumed with the stored agent SVID, no attestation needed"/);
    await agentReady(agentA);
    expect(agentA.output()).not.toContain('node attested');
    const response = await firstMessage(clientA.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([`${TD}/web`]);
    await verifySvidMessage(response.svids[0]!);
  });

  it('stops an agent the server banned, with the reason', async () => {
    const agentId = (await agentB.waitFor(/"agentId":"([^"]+)","method":"join_token"/))[1]!;
    expect((await server.cli(['agent', 'ban', '--spiffe-id', agentId])).code).toBe(0);
    // Any registry change answers the open long polls; the banned agent's next one is refused.
    await createEntry('/wake', '/host/b');
    expect(await agentB.exited).toBe(78);
    expect(agentB.output()).toMatch(
      /^Error: the server refused this agent \(.+\) and it cannot attest again: its join token was already used; .+$/m,
    );
  });

  it('keeps serving cached SVIDs while the server is down, and catches up when it is back', async () => {
    const before = await firstMessage(clientA.FetchX509SVID({}, securityHeader()));
    const jwt = await unary(clientA.FetchJWTSVID.bind(clientA), { audience: ['cached'] });
    expect(await server.process.stop('SIGTERM')).toBe(0);
    const during = await firstMessage(clientA.FetchX509SVID({}, securityHeader()));
    expect(idsOf(during)).toEqual(idsOf(before));
    await verifySvidMessage(during.svids[0]!);
    const cachedJwt = await unary(clientA.FetchJWTSVID.bind(clientA), { audience: ['cached'] });
    expect(cachedJwt.svids[0]!.svid).toBe(jwt.svids[0]!.svid);

    server = await server.restart();
    children.push(server.process);
    const watcher = new StreamWatcher(clientA.FetchX509SVID({}, securityHeader()));
    try {
      await createEntry('/after-outage', '/host/a');
      await watcher.next((message) => idsOf(message).includes(`${TD}/after-outage`), { timeoutMs: 45_000 });
    } finally {
      watcher.close();
    }
  });
});
