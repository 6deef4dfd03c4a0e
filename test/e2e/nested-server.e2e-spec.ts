/**
 * Nested Sigil, end to end (SPIRE's nested topology with the `spire` upstream authority): a top server and its agent;
 * a downstream entry for this test process's uid; a second server started with `--upstream-authority sigil`, which
 * gets its X509-SVID from the top agent's Workload API and its CA signed by the top server; that server's own agent
 * attests to it, and a workload (this process) gets an SVID from the nested agent that `openssl verify` accepts
 * against the top root only. The nested server runs on the embedded database; the top one on this run's.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificatesFromPem } from '@sigil/pki';
import { x509 } from '@sigil/spiffe/x509';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentStorage } from '../../apps/agent/src/storage/agent-storage.js';
import { opensslVerify } from '../support/openssl.js';
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
  unary,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const NESTED_SERVER_ID = `${TD}/nested-server`;
const WORKLOAD_ID = `${TD}/nested-workload`;

const pemDers = (pem: string): Buffer[] =>
  certificatesFromPem(pem).map((certificate) => Buffer.from(certificate.rawData));
const sorted = (ders: readonly Buffer[]): string[] => ders.map((der) => der.toString('base64')).sort();
/** The authority IDs (hex subject key identifiers) of concatenated DER certificates, as `localauthority` names them. */
const authorityIds = (ders: Uint8Array): string[] =>
  splitChain(ders)
    .map((der) => new x509.X509Certificate(der).getExtension(x509.SubjectKeyIdentifierExtension)!.keyId.toLowerCase())
    .sort();

/** The authority ID of the CA that issued a certificate, from its authority key identifier. */
const issuerOf = (der: Uint8Array): string =>
  new x509.X509Certificate(der).getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!.toLowerCase();

interface Authority {
  authority_id: string;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 200));
  }
}

describe('nested Sigil: upstream authority sigil through a downstream entry (real servers and agents)', () => {
  let scratch: string;
  let top: ServerProcess;
  let nested: ServerProcess;
  let client: WorkloadClient | undefined;
  let topSocket: string;
  const children: SigilProcess[] = [];

  const startAgent = async (server: ServerProcess, name: string): Promise<string> => {
    const dir = join(scratch, name);
    await mkdir(dir, { mode: 0o755 });
    const bundleFile = join(dir, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const agent = startAgentProcess({
      servers: [server.port],
      socketPath: join(dir, 'api.sock'),
      dataDir: join(dir, 'data'),
      trustBundle: bundleFile,
      joinToken: await server.joinToken(`${TD}/${name}`),
    });
    children.push(agent);
    await agentReady(agent);
    return join(dir, 'api.sock');
  };
  const createEntry = async (server: ServerProcess, args: readonly string[]): Promise<void> => {
    const created = await server.cli(['entry', 'create', ...args]);
    expect(created.code, created.stderr).toBe(0);
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-nested-'));
    top = await startServerProcess({ dir: join(scratch, 'top') });
    children.push(top.process);
    topSocket = await startAgent(top, 'top-agent');
    await createEntry(top, [
      '--spiffe-id',
      NESTED_SERVER_ID,
      '--parent-id',
      `${TD}/top-agent`,
      '--selector',
      `unix:uid:${UID}`,
      '--downstream',
    ]);
    nested = await startServerProcess({
      dir: join(scratch, 'nested'),
      database: 'embedded',
      flags: [
        '--upstream-authority',
        'sigil',
        '--upstream-agent-socket',
        topSocket,
        '--upstream-server-address',
        `127.0.0.1:${top.port}`,
      ],
    });
    children.push(nested.process);
  }, 240_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('publishes the top bundle as its own, and its CA is an intermediate of the top CA', async () => {
    const topBundle = join(scratch, 'top.pem');
    const nestedBundle = join(scratch, 'nested.pem');
    await top.writeBundle(topBundle);
    await nested.writeBundle(nestedBundle);
    expect(sorted(pemDers(await readFile(nestedBundle, 'utf8')))).toEqual(
      sorted(pemDers(await readFile(topBundle, 'utf8'))),
    );
    const authorities = await nested.json<{ active: { upstream_signed?: boolean } }>([
      'localauthority',
      'x509',
      'show',
    ]);
    expect(authorities.active.upstream_signed).toBe(true);
  });

  it('serves a workload of its own agent an SVID that openssl verifies against the top root only', async () => {
    const socket = await startAgent(nested, 'nested-agent');
    await createEntry(nested, [
      '--spiffe-id',
      WORKLOAD_ID,
      '--parent-id',
      `${TD}/nested-agent`,
      '--selector',
      `unix:uid:${UID}`,
    ]);
    client = workloadClient(socket);
    const svids = new StreamWatcher<X509SvidResponse>(client.FetchX509SVID({}, securityHeader()));
    try {
      const message = await svids.next((each) => each.svids.some((svid) => svid.spiffe_id === WORKLOAD_ID));
      const svid = message.svids.find((each) => each.spiffe_id === WORKLOAD_ID)!;
      const [leaf, ...intermediates] = splitChain(svid.x509_svid);
      // leaf → nested CA (the top root is not sent along: it is the bundle).
      expect(intermediates).toHaveLength(1);
      const nestedCa = new X509Certificate(intermediates[0]!);
      expect(nestedCa.ca).toBe(true);
      expect(nestedCa.subjectAltName).toBe(`URI:${TD}`);

      const topRoot = join(scratch, 'top-root.pem');
      await top.writeBundle(topRoot);
      const verified = await opensslVerify({
        root: await readFile(topRoot, 'utf8'),
        leaf: leaf!,
        intermediates,
      });
      expect(verified.ok, verified.output).toBe(true);
      // Not against the nested CA as a root: the chain has to reach the top root.
      const notRoot = await opensslVerify({ root: intermediates[0]!, leaf: leaf! });
      expect(notRoot.ok).toBe(false);
    } finally {
      svids.close();
    }
  });

  it("shares JWT authorities with the top (SPIRE's PublishJWTAuthority): a nested JWT-SVID validates with the top agent's bundle and a top one with the nested agent's; a new nested key reaches the top before it signs, a top revoke leaves the nested bundle", async () => {
    const AUDIENCE = 'nested-e2e';
    type JwtBundles = { bundles: Record<string, Buffer> };
    const topClient = workloadClient(topSocket);
    const watchJwtBundles = (each: WorkloadClient) =>
      new StreamWatcher<JwtBundles>(each.FetchJWTBundles({}, securityHeader()));
    const jwtKeys = (message: JwtBundles): { kid?: string; use?: string }[] =>
      message.bundles[TD] === undefined ? [] : JSON.parse(message.bundles[TD].toString('utf8')).keys;
    const kidsOf = (message: JwtBundles): string[] => jwtKeys(message).map((key) => key.kid ?? '');
    // As a relying party with jose and the bundle a Workload API streams (jose refuses `use: jwt-svid` keys as given).
    const verifyWith = (message: JwtBundles, token: string) =>
      jwtVerify(
        token,
        createLocalJWKSet({
          keys: jwtKeys(message)
            .filter((key) => key.use === 'jwt-svid')
            .map(({ use: _use, ...key }) => key),
        }),
        { audience: AUDIENCE },
      );
    const fetchJwt = async (each: WorkloadClient, spiffeId: string): Promise<string> =>
      (await unary(each.FetchJWTSVID.bind(each), { audience: [AUDIENCE], spiffe_id: spiffeId })).svids[0]!.svid;
    const validate = async (each: WorkloadClient, svid: string): Promise<string> =>
      (await unary(each.ValidateJWTSVID.bind(each), { audience: AUDIENCE, svid })).spiffe_id;
    const jwtAuthority = async (server: ServerProcess, verb: string, ...args: string[]): Promise<Authority> =>
      Object.values(await server.json<Record<string, Authority>>(['localauthority', 'jwt', verb, ...args]))[0]!;
    const topBundles = watchJwtBundles(topClient);
    const nestedBundles = watchJwtBundles(client!);
    try {
      // A nested JWT-SVID, checked with the TOP agent's JWT bundle.
      const nestedToken = await fetchJwt(client!, WORKLOAD_ID);
      const nestedKid = decodeProtectedHeader(nestedToken).kid!;
      const atTop = await topBundles.next((message) => kidsOf(message).includes(nestedKid), { timeoutMs: 60_000 });
      expect((await verifyWith(atTop, nestedToken)).payload.sub).toBe(WORKLOAD_ID);
      expect(await validate(topClient, nestedToken)).toBe(WORKLOAD_ID);

      // A top JWT-SVID (the downstream entry's, served by the top agent), checked with the NESTED agent's bundle.
      const topToken = await fetchJwt(topClient, NESTED_SERVER_ID);
      const topKid = decodeProtectedHeader(topToken).kid!;
      const atNested = await nestedBundles.next((message) => kidsOf(message).includes(topKid), { timeoutMs: 60_000 });
      expect((await verifyWith(atNested, topToken)).payload.sub).toBe(NESTED_SERVER_ID);
      expect(await validate(client!, topToken)).toBe(NESTED_SERVER_ID);

      // Every new nested JWT key is in the top bundle as soon as it exists (published before the journal holds it).
      const preparedKid = (await jwtAuthority(nested, 'prepare')).authority_id;
      await topBundles.next((message) => kidsOf(message).includes(preparedKid), { timeoutMs: 30_000 });

      // The top moves off its key and revokes it: it leaves the nested bundle with the next follow.
      const newTopKid = (await jwtAuthority(top, 'prepare')).authority_id;
      await jwtAuthority(top, 'activate', '--authority-id', newTopKid);
      await jwtAuthority(top, 'taint', '--authority-id', topKid);
      await jwtAuthority(top, 'revoke', '--authority-id', topKid, '--force');
      const after = await nestedBundles.next(
        (message) => !kidsOf(message).includes(topKid) && kidsOf(message).includes(newTopKid),
        { from: nestedBundles.messages.length - 1, timeoutMs: 60_000 },
      );
      expect(kidsOf(after)).toEqual(expect.arrayContaining([nestedKid, preparedKid, newTopKid]));
      await expect(verifyWith(after, topToken)).rejects.toThrow();
      expect(nested.process.output()).toMatch(
        /"msg":"upstream bundle: the top trust domain's JWT authorities changed; published"/,
      );
    } finally {
      topBundles.close();
      nestedBundles.close();
      topClient.close();
    }
  }, 240_000);

  it('asks the top server again for every new CA key (localauthority x509 prepare)', async () => {
    const before = await nested.json<{ active: { authority_id: string } }>(['localauthority', 'x509', 'show']);
    const prepared = await nested.cli(['localauthority', 'x509', 'prepare']);
    expect(prepared.code, prepared.stderr).toBe(0);
    const after = await nested.json<{ prepared: { authority_id: string; upstream_signed?: boolean } }>([
      'localauthority',
      'x509',
      'show',
    ]);
    expect(after.prepared.authority_id).not.toBe(before.active.authority_id);
    expect(after.prepared.upstream_signed).toBe(true);
  });

  it("follows the top's bundle live (a new top root reaches the nested workloads without a nested rotation, a revoked one leaves) and moves its CA at once when the top taints the key that signed it", async () => {
    const authority = async (server: ServerProcess, verb: string, id?: string): Promise<Authority> => {
      const args = ['localauthority', 'x509', verb, ...(id === undefined ? [] : ['--authority-id', id])];
      return Object.values(await server.json<Record<string, Authority>>(args))[0]!;
    };
    const active = async (server: ServerProcess): Promise<string> =>
      (await server.json<{ active: Authority }>(['localauthority', 'x509', 'show'])).active.authority_id;
    const bundles = new StreamWatcher<{ bundles: Record<string, Buffer> }>(
      client!.FetchX509Bundles({}, securityHeader()),
    );
    const roots = (message: { bundles: Record<string, Buffer> }): string[] => authorityIds(message.bundles[TD]!);
    try {
      const oldTop = await active(top);
      const nestedKey = await active(nested);
      const first = await bundles.next((message) => message.bundles[TD] !== undefined);
      expect(roots(first)).toEqual([oldTop]);

      // The top prepares a key: its root is in the nested workloads' bundle stream within seconds (the nested
      // server's next key is hours away), and the nested server signs with the key it had.
      const newTop = (await authority(top, 'prepare')).authority_id;
      await bundles.next((message) => roots(message).includes(newTop), { timeoutMs: 60_000 });
      expect(await active(nested)).toBe(nestedKey);
      expect(nested.process.output()).toMatch(
        /"msg":"upstream bundle: the top trust domain's roots changed; published"/,
      );
      await authority(top, 'activate', newTop);

      // SPIRE's nested reaction to a top taint, without the nested operator: the top taints its old key; the nested
      // server learns it from the top (over mTLS with its X509-SVID), moves to a CA the new top key signs and taints
      // its old CA, so its agent re-signs (agent SVID and workload SVID under the new nested key); then the top
      // revokes its old key once nothing of its own uses it.
      const svids = new StreamWatcher<X509SvidResponse>(client!.FetchX509SVID({}, securityHeader()));
      const workloadSvid = (message: X509SvidResponse) => message.svids.find((svid) => svid.spiffe_id === WORKLOAD_ID);
      const workloadIssuer = (message: X509SvidResponse): string | undefined => {
        const svid = workloadSvid(message);
        return svid === undefined ? undefined : issuerOf(splitChain(svid.x509_svid)[0]!);
      };
      const nestedStorage = new AgentStorage(join(scratch, 'nested-agent', 'data'));
      try {
        expect(workloadIssuer(await svids.next((message) => workloadSvid(message) !== undefined))).toBe(nestedKey);
        await authority(top, 'taint', oldTop);
        const moved = await until('the nested server to move to a CA the new top key signed', 60_000, async () => {
          const show = await nested.json<{ active: Authority; old: (Authority & { tainted?: boolean })[] }>([
            'localauthority',
            'x509',
            'show',
          ]);
          return show.active.authority_id !== nestedKey &&
            show.old.some((key) => key.authority_id === nestedKey && key.tainted === true)
            ? show.active.authority_id
            : undefined;
        });
        // On the open stream: an SVID of the new nested key, whose CA the new top key signed.
        const replaced = await svids.next((message) => workloadIssuer(message) === moved, { timeoutMs: 60_000 });
        const [, nestedCa] = splitChain(workloadSvid(replaced)!.x509_svid);
        expect(issuerOf(nestedCa!)).toBe(newTop);
        await until('the nested agent SVID re-signed by the new nested key', 60_000, async () => {
          const state = await nestedStorage.load(undefined);
          return state !== undefined && issuerOf(state.svidChain[0]!) === moved ? true : undefined;
        });
        expect(nested.process.output()).toMatch(
          /"msg":"upstream authority sigil: the upstream server tainted the key that signed our CA; moved/,
        );

        await until('the top to accept the revoke of its old key', 90_000, async () =>
          (await top.cli(['localauthority', 'x509', 'revoke', '--authority-id', oldTop])).code === 0 ? true : undefined,
        );
        const after = await bundles.next((message) => !roots(message).includes(oldTop), {
          from: bundles.messages.length - 1,
          timeoutMs: 60_000,
        });
        expect(roots(after)).toEqual([newTop]);
        const nestedBundle = join(scratch, 'nested-after-revoke.pem');
        await nested.writeBundle(nestedBundle);
        expect(sorted(pemDers(await readFile(nestedBundle, 'utf8')))).toEqual(
          sorted(splitChain(after.bundles[TD]!).map((der) => Buffer.from(der))),
        );
        // The nested domain keeps serving: its workload's SVID, under the new nested key, verifies against the
        // bundle that now holds the new top root only.
        const current = await svids.next(
          (message) =>
            workloadIssuer(message) === moved && authorityIds(workloadSvid(message)!.bundle).join() === newTop,
          { timeoutMs: 60_000 },
        );
        await verifySvidMessage(workloadSvid(current)!);
      } finally {
        svids.close();
      }
    } finally {
      bundles.close();
    }
  }, 300_000);

  it("gets no CA once the top entry is no longer downstream: prepare fails with the top server's reason", async () => {
    const [entry] = (await top.json<{ entries: { id: string }[] }>(['entry', 'show', '--spiffe-id', NESTED_SERVER_ID]))
      .entries;
    const updated = await top.cli(['entry', 'update', '--id', entry!.id, '--no-downstream']);
    expect(updated.code, updated.stderr).toBe(0);
    const refused = await nested.cli(['localauthority', 'x509', 'prepare']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(
      `upstream authority sigil: upstream_server_address 127.0.0.1:${top.port}: refused the downstream CA (403): ` +
        `client certificate: ${NESTED_SERVER_ID} has no registration entry with downstream: true`,
    );
    // The nested server keeps signing with its current key.
    const show = await nested.json<{ active: { upstream_signed?: boolean } | null }>([
      'localauthority',
      'x509',
      'show',
    ]);
    expect(show.active?.upstream_signed).toBe(true);
  });
});
