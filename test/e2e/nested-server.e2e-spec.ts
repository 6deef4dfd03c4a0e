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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const NESTED_SERVER_ID = `${TD}/nested-server`;
const WORKLOAD_ID = `${TD}/nested-workload`;

const pemDers = (pem: string): Buffer[] =>
  certificatesFromPem(pem).map((certificate) => Buffer.from(certificate.rawData));
const sorted = (ders: readonly Buffer[]): string[] => ders.map((der) => der.toString('base64')).sort();

describe('nested Sigil: upstream authority sigil through a downstream entry (real servers and agents)', () => {
  let scratch: string;
  let top: ServerProcess;
  let nested: ServerProcess;
  let client: WorkloadClient | undefined;
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
    const topSocket = await startAgent(top, 'top-agent');
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
