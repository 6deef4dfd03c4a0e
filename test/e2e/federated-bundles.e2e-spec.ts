/**
 * Federated bundles set by hand, end to end: `sigil-server bundle set|list|count|delete` against a real server, and
 * a real agent delivering the foreign bundle to a workload whose entry federates with its trust domain, on the
 * Workload API (FetchX509SVID's federated_bundles, FetchX509Bundles, FetchJWTBundles), with open streams updated
 * when `bundle set` replaces the bundle and when it is dissociated. The workload is this test process (unix:uid).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCa } from '../support/test-ca.js';
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
  StreamWatcher,
  type WorkloadClient,
  type X509SvidResponse,
  securityHeader,
  splitChain,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const FOREIGN = 'spiffe://other.org';

const derOf = (ca: TestCa): Buffer => Buffer.from(ca.certificate.rawData);
/** A map field as proto-loader decodes it: absent when empty. */
const mapOf = (map: Record<string, Buffer> | undefined): Record<string, Buffer> => map ?? {};

describe('federated bundles: bundle set|list|count|delete and delivery to workloads (real server and agent)', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: WorkloadClient;
  const children: SigilProcess[] = [];
  let foreign: TestCa;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-federation-'));
    server = await startServerProcess({ dir: join(scratch, 'server') });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const token = await server.joinToken(`${TD}/host`);
    await mkdir(join(scratch, 'agent'), { mode: 0o755 });
    agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: token,
    });
    children.push(agent);
    await agentReady(agent);
    client = workloadClient(join(scratch, 'agent', 'api.sock'));
    foreign = await TestCa.create('other.org');
  }, 180_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('round-trips through the CLI: set from a file and stdin, list, count, refusals with the reason', async () => {
    const pemFile = join(scratch, 'other.pem');
    await writeFile(pemFile, foreign.bundle().x509Pem());
    const set = await server.cli(['bundle', 'set', '--id', FOREIGN, '--path', pemFile]);
    expect(set, set.stderr).toMatchObject({ code: 0, stdout: 'bundle set.\n' });

    const count = await server.cli(['bundle', 'count']);
    expect(count.stdout).toBe('1 bundle\n');
    expect(await server.json(['bundle', 'count'])).toEqual({ count: 1 });

    const listed = await server.cli(['bundle', 'list']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`* ${FOREIGN}\n`);
    const pem = listed.stdout.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    expect(
      pem.map((block) => TrustBundle.fromX509Pem(foreign.trustDomain, block).hasX509Authority(derOf(foreign))),
    ).toEqual([true]);

    const one = await server.cli(['bundle', 'list', '--id', 'other.org', '--format', 'spiffe']);
    const jwks = JSON.parse(one.stdout) as { keys: { use: string }[]; spiffe_sequence: number };
    expect(jwks.spiffe_sequence).toBe(1);
    expect(TrustBundle.parseJwks(foreign.trustDomain, jwks).hasX509Authority(derOf(foreign))).toBe(true);
    expect(await server.json<{ bundles: { trust_domain: string }[] }>(['bundle', 'list'])).toEqual({
      bundles: [expect.objectContaining({ trust_domain: 'other.org' })],
    });

    // The same bundle again, in the SPIFFE format, from stdin.
    const again = await server.cli(
      ['bundle', 'set', '--id', 'other.org', '--format', 'spiffe'],
      JSON.stringify(foreign.bundle().toJwks()),
    );
    expect(again, again.stderr).toMatchObject({ code: 0 });

    const own = await server.cli(['bundle', 'set', '--id', TD, '--path', pemFile]);
    expect(own.code).not.toBe(0);
    expect(own.stderr).toContain("example.org is this server's own trust domain");
    const leaf = await foreign.createX509Svid(`${FOREIGN}/leaf`);
    const notCa = await server.cli(
      ['bundle', 'set', '--id', 'third.org'],
      TrustBundle.create(TrustDomain.parse('third.org'), { x509Authorities: [leaf.certificate] }).x509Pem(),
    );
    expect(notCa.code).not.toBe(0);
    expect(notCa.stderr).toMatch(/x509 authority 0 .* is not a ca certificate/);
    const badJson = await server.cli(
      ['bundle', 'set', '--id', 'third.org', '--format', 'spiffe', '--output', 'json'],
      '{',
    );
    expect(badJson.code).not.toBe(0);
    expect(JSON.parse(badJson.stdout || badJson.stderr)).toMatchObject({ error: 'invalid_argument' });
    expect(await server.json(['bundle', 'count'])).toEqual({ count: 1 });
  });

  it('delivers the bundle only once an entry of the caller federates with it, and updates open streams', async () => {
    /** An entry for this test process (its uid) under the agent's alias. */
    const createEntry = async (name: string, ...flags: string[]): Promise<void> => {
      const created = await server.cli(
        [
          'entry',
          'create',
          '--spiffe-id',
          `${TD}/${name}`,
          '--parent-id',
          `${TD}/host`,
          '--selector',
          `unix:uid:${UID}`,
        ].concat(flags),
      );
      expect(created.code, created.stderr).toBe(0);
    };
    await createEntry('plain');
    const svids = new StreamWatcher<X509SvidResponse>(client.FetchX509SVID({}, securityHeader()));
    const x509Bundles = new StreamWatcher<{ bundles: Record<string, Buffer> }>(
      client.FetchX509Bundles({}, securityHeader()),
    );
    const jwtBundles = new StreamWatcher<{ bundles: Record<string, Buffer> }>(
      client.FetchJWTBundles({}, securityHeader()),
    );
    try {
      // A workload whose entries do not federate with other.org does not see its bundle, though the server holds it.
      const plain = await svids.next((message) => message.svids.length === 1);
      expect(Object.keys(mapOf(plain.federated_bundles))).toEqual([]);
      expect(Object.keys((await x509Bundles.next(() => true)).bundles)).toEqual([TD]);
      expect(Object.keys((await jwtBundles.next(() => true)).bundles)).toEqual([TD]);

      await createEntry('federating', '--federates-with', FOREIGN);
      const withBundle = await svids.next((message) => FOREIGN in mapOf(message.federated_bundles));
      expect(splitChain(withBundle.federated_bundles[FOREIGN]!).map((der) => Buffer.from(der))).toEqual([
        derOf(foreign),
      ]);
      const x509 = await x509Bundles.next((message) => FOREIGN in mapOf(message.bundles));
      expect(Buffer.from(x509.bundles[FOREIGN]!)).toEqual(derOf(foreign));
      const jwt = await jwtBundles.next((message) => FOREIGN in mapOf(message.bundles));
      expect(JSON.parse(Buffer.from(jwt.bundles[FOREIGN]!).toString('utf8'))).toEqual({ keys: [] });

      // bundle set replaces it: a new root and a JWT key reach the open streams.
      const rotated = await TestCa.create('other.org');
      const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const key = publicKey.export({ format: 'jwk' });
      const replacement = {
        keys: [...rotated.bundle().toJwks().keys, { use: 'jwt-svid', kid: 'other-1', ...key }],
        spiffe_refresh_hint: 60,
      };
      const replaced = await server.cli(
        ['bundle', 'set', '--id', FOREIGN, '--format', 'spiffe'],
        JSON.stringify(replacement),
      );
      expect(replaced.code, replaced.stderr).toBe(0);
      const updated = await svids.next(
        (message) => mapOf(message.federated_bundles)[FOREIGN]?.equals(derOf(rotated)) === true,
        { timeoutMs: 15_000 },
      );
      expect(updated.svids.map((svid) => svid.spiffe_id).sort()).toEqual([`${TD}/federating`, `${TD}/plain`]);
      await x509Bundles.next((message) => mapOf(message.bundles)[FOREIGN]?.equals(derOf(rotated)) === true);
      const jwtUpdated = await jwtBundles.next((message) =>
        Buffer.from(mapOf(message.bundles)[FOREIGN] ?? [])
          .toString('utf8')
          .includes('other-1'),
      );
      expect(JSON.parse(Buffer.from(jwtUpdated.bundles[FOREIGN]!).toString('utf8'))).toEqual({
        keys: [{ use: 'jwt-svid', kid: 'other-1', kty: 'EC', crv: 'P-256', x: key.x, y: key.y }],
      });

      // restrict (the default) refuses while an entry federates; dissociate removes it from the streams.
      const restricted = await server.cli(['bundle', 'delete', '--id', FOREIGN]);
      expect(restricted.code).not.toBe(0);
      expect(restricted.stderr).toMatch(/trust domain other\.org: 1 entry federates with it/);
      const from = svids.messages.length;
      const dissociated = await server.json<{ entry_ids: string[] }>([
        'bundle',
        'delete',
        '--id',
        FOREIGN,
        '--mode',
        'dissociate',
      ]);
      expect(dissociated.entry_ids).toHaveLength(1);
      const gone = await svids.next((message) => !(FOREIGN in mapOf(message.federated_bundles)), { from });
      expect(gone.svids).toHaveLength(2);
      expect(await server.json(['bundle', 'count'])).toEqual({ count: 0 });
    } finally {
      svids.close();
      x509Bundles.close();
      jwtBundles.close();
    }
  });
});
