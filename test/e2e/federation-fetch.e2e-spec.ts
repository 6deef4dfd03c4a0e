/**
 * Federation end to end (issue 14): two trust domains, each a real `sigil-server` (its own database) and
 * `sigil-agent`, federated both ways through their bundle endpoints (`https_spiffe`), bootstrapped with
 * `bundle set` as in SPIRE: one direction with the flags, the other with SPIRE's `federation create --data` JSON.
 * A workload of each does mTLS with the other through `@sigil/workload-api` (`authorizeMemberOf` the other trust
 * domain), and the workload's `FetchX509SVID` stream carries the new `federated_bundles` when the foreign server
 * rotates (`localauthority x509 prepare`), picked up by the fetcher on its own per `spiffe_refresh_hint`.
 */
import { createPublicKey } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { get as httpsGet, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { TrustDomain } from '@sigil/spiffe';
import {
  X509Source,
  authorizeMemberOf,
  createClientTlsOptions,
  createMtlsServer,
  peerSpiffeId,
} from '@sigil/workload-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase, useTestDatabase } from '../support/database.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import {
  StreamWatcher,
  type X509SvidResponse,
  securityHeader,
  splitChain,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();

interface TrustDomainUnderTest {
  readonly name: string;
  readonly server: ServerProcess;
  readonly agent: SigilProcess;
  readonly socket: string;
  readonly bundleEndpoint: string;
}

interface Jwks {
  keys: { use: string; kid?: string; x5c?: string[] }[];
  spiffe_sequence?: number;
  spiffe_refresh_hint?: number;
}

/** SPIRE's bundle message (`trust_domain_bundle` of `federation create -data`) from a SPIFFE bundle. */
function spireBundle(trustDomain: string, jwks: Jwks): object {
  return {
    trust_domain: trustDomain,
    x509_authorities: jwks.keys.filter((key) => key.use === 'x509-svid').map((key) => ({ asn1: key.x5c![0] })),
    jwt_authorities: jwks.keys
      .filter((key) => key.use === 'jwt-svid')
      .map(({ use: _use, kid, ...jwk }) => ({
        key_id: kid,
        public_key: createPublicKey({ key: jwk as never, format: 'jwk' })
          .export({ type: 'spki', format: 'der' })
          .toString('base64'),
      })),
    refresh_hint: jwks.spiffe_refresh_hint,
    sequence_number: jwks.spiffe_sequence,
  };
}

describe('federation through bundle endpoints: two trust domains, real servers and agents', () => {
  let scratch: string;
  const databases: TestDatabase[] = [];
  const children: SigilProcess[] = [];
  let example: TrustDomainUnderTest;
  let other: TrustDomainUnderTest;

  async function startTrustDomain(name: string): Promise<TrustDomainUnderTest> {
    const dir = join(scratch, name);
    // Each trust domain its own database: a scratch PostgreSQL database, or its own embedded one in its data dir.
    let database: 'embedded' | { url: string } = 'embedded';
    if (process.env['DATABASE_URL']) {
      const db = await useTestDatabase({ poolSize: 1 });
      databases.push(db);
      database = { url: db.url };
    }
    // A 10-minute CA: its bundle's refresh hint is 50 s, so the other side fetches it every 12.5 s.
    const server = await startServerProcess({
      dir,
      trustDomain: name,
      database,
      flags: ['--bundle-endpoint-address', '127.0.0.1:0', '--ca-ttl', '10m', '--x509-svid-ttl', '5m'],
    });
    children.push(server.process);
    const [, port] = (await server.process.waitFor(/"bundleEndpoint":"127\.0\.0\.1:(\d+)"/)) as [string, string];
    const bundleFile = join(dir, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const token = await server.joinToken(`spiffe://${name}/host`);
    await mkdir(join(dir, 'agent'), { mode: 0o755 });
    const socket = join(dir, 'agent', 'api.sock');
    const agent = startAgentProcess({
      servers: [server.port],
      socketPath: socket,
      dataDir: join(dir, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: token,
    });
    children.push(agent);
    await agentReady(agent);
    return { name, server, agent, socket, bundleEndpoint: `https://127.0.0.1:${port}` };
  }

  const ownJwks = async (td: TrustDomainUnderTest): Promise<Jwks> => {
    const shown = await td.server.cli(['bundle', 'show', '--format', 'spiffe']);
    expect(shown.code, shown.stderr).toBe(0);
    return JSON.parse(shown.stdout) as Jwks;
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-federation-fetch-'));
    example = await startTrustDomain('example.org');
    other = await startTrustDomain('other.org');
  }, 240_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    for (const db of databases) await db.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('federates both ways: bootstrap, relationships (flags and --data), refresh', async () => {
    // example.org → other.org: SPIRE's runbook with flags (bundle set, then federation create).
    const otherJwks = await ownJwks(other);
    const set = await example.server.cli(
      ['bundle', 'set', '--id', 'other.org', '--format', 'spiffe'],
      JSON.stringify(otherJwks),
    );
    expect(set.code, set.stderr).toBe(0);
    const created = await example.server.cli([
      'federation',
      'create',
      '--trust-domain',
      'other.org',
      '--bundle-endpoint-url',
      other.bundleEndpoint,
      '--bundle-endpoint-profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      'spiffe://other.org/sigil/server',
    ]);
    expect(created.code, created.stderr).toBe(0);

    // other.org → example.org: SPIRE's -data JSON, with the trust domain bundle in SPIRE's form, from stdin.
    const data = {
      federation_relationships: [
        {
          trust_domain: 'example.org',
          bundle_endpoint_url: example.bundleEndpoint,
          https_spiffe: { endpoint_spiffe_id: 'spiffe://example.org/sigil/server' },
          trust_domain_bundle: spireBundle('example.org', await ownJwks(example)),
        },
      ],
    };
    const fromData = await other.server.cli(['federation', 'create', '--data', '-'], JSON.stringify(data));
    expect(fromData.code, fromData.stderr).toBe(0);
    expect(fromData.stdout).toContain('Endpoint SPIFFE ID        : spiffe://example.org/sigil/server');
    const stored = await other.server.json<{ bundle: Jwks }>(['bundle', 'list', '--id', 'example.org']);
    expect(stored.bundle.keys.length).toBe((await ownJwks(example)).keys.length);

    // federation refresh: fetched from the endpoint, authenticated by the stored bundle.
    for (const [td, foreign] of [
      [example, 'other.org'],
      [other, 'example.org'],
    ] as const) {
      const refreshed = await td.server.cli(['federation', 'refresh', '--id', foreign]);
      expect(refreshed.code, refreshed.stderr).toBe(0);
      expect(refreshed.stdout).toMatch(/^Bundle refreshed \((changed|unchanged)\)\.$/m);
    }
    const refused = await example.server.cli(['federation', 'refresh', '--id', 'third.org']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('no federation relationship for trust domain third.org');
  }, 180_000);

  it('a workload of each trust domain does mTLS with the other (authorizeMemberOf)', async () => {
    for (const [td, path, foreign] of [
      [example, '/server', 'spiffe://other.org'],
      [other, '/client', 'spiffe://example.org'],
    ] as const) {
      const entry = await td.server.cli([
        'entry',
        'create',
        '--spiffe-id',
        `spiffe://${td.name}${path}`,
        '--parent-id',
        `spiffe://${td.name}/host`,
        '--selector',
        `unix:uid:${UID}`,
        '--federates-with',
        foreign,
      ]);
      expect(entry.code, entry.stderr).toBe(0);
    }
    const serverSource = await X509Source.create({
      clientOptions: { address: `unix://${example.socket}` },
      timeoutMs: 30_000,
    });
    const clientSource = await X509Source.create({
      clientOptions: { address: `unix://${other.socket}` },
      timeoutMs: 30_000,
    });
    let httpsServer: Server | undefined;
    try {
      // Both sources hold their identity and the other trust domain's bundle (delivered through sync).
      await expect
        .poll(
          () => {
            try {
              serverSource.getBundleForTrustDomain(TrustDomain.parse('other.org'));
              clientSource.getBundleForTrustDomain(TrustDomain.parse('example.org'));
              return serverSource.getX509Svid() !== undefined && clientSource.getX509Svid() !== undefined;
            } catch {
              return false;
            }
          },
          { timeout: 30_000 },
        )
        .toBe(true);
      httpsServer = createMtlsServer(serverSource, authorizeMemberOf('other.org'), (req, res) => {
        res.end(`hello ${peerSpiffeId(req.socket as TLSSocket)?.toString()}`);
      });
      await new Promise<void>((resolve) => httpsServer!.listen(0, '127.0.0.1', resolve));
      const { port } = httpsServer.address() as AddressInfo;
      const get = (authorizeDomain: string) =>
        new Promise<{ status: number; body: string; peer: string | undefined }>((resolve, reject) => {
          httpsGet(
            `https://127.0.0.1:${port}/`,
            createClientTlsOptions(clientSource, authorizeMemberOf(authorizeDomain)),
            (res) => {
              // Read before the end: a kept-alive socket is detached from the response once it ends.
              const peer = peerSpiffeId(res.socket as TLSSocket)?.toString();
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => (body += chunk));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body, peer }));
            },
          ).on('error', reject);
        });
      expect(await get('example.org')).toEqual({
        status: 200,
        body: 'hello spiffe://other.org/client',
        peer: 'spiffe://example.org/server',
      });
      // The client's authorizer decides too: a server of another trust domain is refused.
      await expect(get('third.org')).rejects.toThrow(/not authorized/);
    } finally {
      httpsServer?.close();
      await serverSource.close();
      await clientSource.close();
    }
  }, 150_000);

  it('updates federated_bundles on the open stream when the foreign server rotates (fetched on its own)', async () => {
    const client = workloadClient(example.socket);
    const svids = new StreamWatcher<X509SvidResponse>(client.FetchX509SVID({}, securityHeader()));
    try {
      const roots = (message: X509SvidResponse): number => {
        const bundle = (message.federated_bundles ?? {})['spiffe://other.org'];
        return bundle === undefined ? 0 : splitChain(bundle).length;
      };
      const before = await svids.next((message) => roots(message) > 0);
      const count = roots(before);
      const prepared = await other.server.cli(['localauthority', 'x509', 'prepare']);
      expect(prepared.code, prepared.stderr).toBe(0);
      // other.org's bundle now holds the prepared root too; example.org's fetcher picks it up within its interval
      // (a quarter of the 50 s hint), with no refresh command.
      const after = await svids.next((message) => roots(message) === count + 1, { timeoutMs: 75_000 });
      const otherNow = await ownJwks(other);
      expect(roots(after)).toBe(otherNow.keys.filter((key) => key.use === 'x509-svid').length);
      const fetched = await example.server.json<{ bundle: Jwks }>(['bundle', 'list', '--id', 'other.org']);
      expect(fetched.bundle.spiffe_sequence).toBe(otherNow.spiffe_sequence);
    } finally {
      svids.close();
      client.close();
    }
  }, 120_000);
});
