/**
 * `sigil-agent run --insecure-bootstrap` end to end, with the real built server and agent: the agent joins without a
 * trust bundle and receives the server's; it refuses a server whose certificate names another SPIFFE ID than
 * `spiffe://<td>/sigil/server` before sending anything; and it warns that its first connection is not authenticated,
 * on every start, including one that resumes from its data dir, whatever the log level.
 */
import { once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { type Server, createServer } from 'node:https';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PEM_LABEL, toPem } from '@sigil/pki';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
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
import { TestCa } from '../support/test-ca.js';
import {
  type WorkloadClient,
  type X509SvidResponse,
  firstMessage,
  idsOf,
  securityHeader,
  splitChain,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
/** The start of the warning, on stderr, which no log level silences. */
const WARNING = /sigil-agent: WARNING: insecure bootstrap: /g;
const WHY =
  'the server is authenticated only by the SPIFFE ID its certificate claims (spiffe://example.org/sigil/server), ' +
  'not by a trust bundle';

const count = (text: string, pattern: RegExp): number => [...text.matchAll(pattern)].length;

describe('sigil-agent --insecure-bootstrap (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let serverBundle: TrustBundle;
  const children: SigilProcess[] = [];
  const clients: WorkloadClient[] = [];

  const agentIds = async (): Promise<string[]> =>
    (await server.json<{ agents: { spiffe_id: string }[] }>(['agent', 'list'])).agents.map((agent) => agent.spiffe_id);

  const startAgent = (
    name: string,
    flags: string[],
    joinToken?: string,
    servers = [server.port],
    trustDomain = 'example.org',
  ): SigilProcess => {
    const agent = startAgentProcess({
      servers,
      socketPath: join(scratch, name, 'api.sock'),
      dataDir: join(scratch, name, 'data'),
      ...(joinToken !== undefined && { joinToken }),
      flags: ['--insecure-bootstrap', '--trust-domain', trustDomain, ...flags],
    });
    children.push(agent);
    return agent;
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-insecure-bootstrap-'));
    for (const dir of ['joined', 'other-td', 'impostor']) await mkdir(join(scratch, dir));
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    const pem = await server.cli(['bundle', 'show', '--format', 'pem']);
    expect(pem.code).toBe(0);
    serverBundle = TrustBundle.fromX509Pem(TrustDomain.parse('example.org'), pem.stdout);
    await server.json([
      'entry',
      'create',
      '--spiffe-id',
      `${TD}/web`,
      '--parent-id',
      `${TD}/host/joined`,
      '--selector',
      `unix:uid:${UID}`,
    ]);
  }, 180_000);

  afterAll(async () => {
    for (const client of clients) client.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('joins a real server without a trust bundle, gets its bundle, and warns on this start and on a resuming one', async () => {
    const token = await server.joinToken(`${TD}/host/joined`);
    const first = startAgent('joined', [], token);
    await agentReady(first);
    expect(first.output()).toContain('"msg":"attesting this node"');
    expect(count(first.output(), WARNING)).toBe(1);
    expect(first.output()).toContain(WHY);

    const client = workloadClient(join(scratch, 'joined', 'api.sock'));
    clients.push(client);
    const response = await firstMessage(client.FetchX509SVID({}, securityHeader()));
    expect(idsOf(response)).toEqual([`${TD}/web`]);
    await verifySvidMessage(response.svids[0]!);
    // The bundle the agent got over the unauthenticated first connection is the server's own.
    expect(
      splitChain(new Uint8Array(response.svids[0]!.bundle)).map((der) => Buffer.from(der).toString('hex')),
    ).toEqual(serverBundle.x509AuthoritiesDer().map((der) => Buffer.from(der).toString('hex')));
    expect(await first.stop()).toBe(0);

    // Same data dir, no join token: the agent must resume from the stored SVID and bundle, and still warn, even when
    // its log level hides warnings.
    const second = startAgent('joined', ['--log-level', 'error']);
    const resumed = workloadClient(join(scratch, 'joined', 'api.sock'));
    clients.push(resumed);
    const again = await waitForSvid(resumed);
    expect(idsOf(again)).toEqual([`${TD}/web`]);
    expect(second.output()).not.toContain('attesting this node');
    expect(count(second.output(), WARNING)).toBe(1);
    expect(second.output()).toContain(WHY);
    expect(second.output()).toContain('a start that resumes from the data dir trusts the bundle stored then');
    expect(await second.stop()).toBe(0);
  });

  it('refuses a real server that is not spiffe://<td>/sigil/server of the configured trust domain, sending nothing', async () => {
    const before = await agentIds();
    const token = await server.joinToken(`${TD}/host/other-td`);
    const agent = startAgent('other-td', [], token, [server.port], 'other.org');
    await agent.waitFor(
      /server certificate has SPIFFE ID spiffe:\/\/example\.org\/sigil\/server, expected spiffe:\/\/other\.org\/sigil\/server/,
    );
    expect(count(agent.output(), WARNING)).toBe(1);
    expect(agent.output()).not.toContain('entries synced');
    await agent.stop('SIGKILL');
    // The join token was never sent: no agent attested with it.
    expect(await agentIds()).toEqual(before);
  });

  it('refuses to start without --trust-domain: a server of any trust domain would pass the ID check', async () => {
    const agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'no-td', 'api.sock'),
      dataDir: join(scratch, 'no-td', 'data'),
      joinToken: 'unused',
      flags: ['--insecure-bootstrap'],
    });
    children.push(agent);
    expect(await agent.exited).not.toBe(0);
    expect(agent.output()).toContain(
      '--trust-domain: required with insecure bootstrap (the server must be spiffe://<it>/sigil/server)',
    );
  });

  it('refuses a server presenting a certificate of another SPIFFE ID, before any request reaches it', async () => {
    const ca = await TestCa.create('example.org');
    const web = await ca.createX509Svid(`${TD}/web`);
    const requests: string[] = [];
    const impostor: Server = createServer(
      {
        key: toPem(PEM_LABEL.privateKey, await web.privateKeyPkcs8()),
        cert: web.chain.map((cert) => cert.toString('pem')).join('\n'),
        minVersion: 'TLSv1.3',
      },
      (req, res) => {
        requests.push(`${req.method} ${req.url}`);
        res.writeHead(500).end();
      },
    );
    impostor.listen(0, '127.0.0.1');
    await once(impostor, 'listening');
    try {
      const agent = startAgent('impostor', [], 'a-token-the-impostor-must-not-see', [
        (impostor.address() as AddressInfo).port,
      ]);
      await agent.waitFor(
        /server certificate has SPIFFE ID spiffe:\/\/example\.org\/web, expected spiffe:\/\/example\.org\/sigil\/server/,
      );
      expect(count(agent.output(), WARNING)).toBe(1);
      await agent.stop('SIGKILL');
      expect(agent.output()).not.toContain('a-token-the-impostor-must-not-see');
      expect(requests).toEqual([]);
    } finally {
      impostor.close();
    }
  });
});

/** The first FetchX509SVID answer with an SVID, retrying while the agent is still starting. */
async function waitForSvid(client: WorkloadClient): Promise<X509SvidResponse> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await firstMessage<X509SvidResponse>(client.FetchX509SVID({}, securityHeader()));
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((done) => setTimeout(done, 100));
    }
  }
}
