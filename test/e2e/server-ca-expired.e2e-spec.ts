/**
 * A server restarted after its own X.509 CA expired (issue 12, item 4): it mints a fresh CA and JWT key at start and
 * publishes them in the bundle (a higher `spiffe_sequence`, the expired ones gone). How agents come to trust the new
 * CA depends on where the trust anchor is:
 * - under an upstream CA (`--upstream-ca-cert/--upstream-ca-key`) the bundle's root does not change: a running agent
 *   that attests with x509pop re-attests by itself (its SVID expired with the CA that signed it), authenticating the
 *   server's new certificate by the root it already trusts, and its workloads get SVIDs chaining to the new CA;
 * - with a self-signed CA the new root is a new trust anchor nothing authenticates: the agent refuses the server
 *   (never trusts whatever answers) until the operator puts the new bundle (`bundle show`) in its trust bundle file
 *   (re-read before each attestation: sigil-agent's "Recovery after long absences").
 * The CA lives 120 s; the server is stopped before it prepares the next one (at half its life), which is checked.
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { PEM_LABEL, toPem } from '@sigil/pki';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type SigilProcess,
  agentReady,
  type StartServerOptions,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import { type TestDatabase, isEmbeddedRun, useTestDatabase } from '../support/database.js';
import { TestCa } from '../support/test-ca.js';
import {
  firstMessage,
  idsOf,
  securityHeader,
  splitChain,
  verifySvidMessage,
  type WorkloadClient,
  workloadClient,
  type X509SvidResponse,
} from '../support/workload-grpc.js';

const TD = 'spiffe://example.org';
const UID = process.getuid!();
/** Long enough for the set-up to end before half of it (when the next CA is prepared), on a loaded machine. */
const CA_TTL_SECONDS = 120;
const SVID_TTL_SECONDS = 20;

interface BundleView {
  spiffe_sequence: number;
  keys: { use: string; x5c?: string[] }[];
}

/** The X.509 authorities of the bundle served on `/bundle`, as certificates. */
/**
 * The agent's X509-SVID answer, or undefined while it has no valid SVID to serve: between the old SVIDs' expiry and
 * the new ones' signing it answers UNAVAILABLE (it never serves an expired SVID).
 */
async function svidsUnlessUnavailable(client: WorkloadClient): Promise<X509SvidResponse | undefined> {
  try {
    return await firstMessage(client.FetchX509SVID({}, securityHeader()));
  } catch (error) {
    if ((error as { code?: unknown }).code === grpc.status.UNAVAILABLE) return undefined;
    throw error;
  }
}

function x509Authorities(bundle: BundleView): X509Certificate[] {
  return bundle.keys
    .filter((key) => key.use === 'x509-svid')
    .map((key) => new X509Certificate(Buffer.from(key.x5c![0]!, 'base64')));
}

/** The fingerprint of the CA that issued an SVID's leaf, if its chain or `bundle` holds it (else undefined). */
function caOf(response: X509SvidResponse, bundle: X509Certificate[]): string | undefined {
  const [leaf, ...rest] = splitChain(response.svids[0]!.x509_svid).map((der) => new X509Certificate(Buffer.from(der)));
  return [...rest, ...bundle].find((candidate) => leaf!.checkIssued(candidate))?.fingerprint256;
}

describe('server restarted after its own CA expired (real server and agent)', () => {
  let scratch: string;
  const children: SigilProcess[] = [];
  const databases: TestDatabase[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-ca-expired-'));
    // The node's x509pop credentials, from a CA the server trusts for x509pop: the agent may re-attest by itself.
    const nodeCa = await TestCa.create('nodes.example', { uris: [], subject: 'CN=Node CA' });
    const node = await nodeCa.createX509Svid('spiffe://nodes.example/unused', { uris: [], subject: 'CN=node-1' });
    await writeFile(join(scratch, 'node-ca.pem'), nodeCa.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.pem'), node.certificate.toString('pem'));
    await writeFile(join(scratch, 'node.key'), toPem(PEM_LABEL.privateKey, await node.privateKeyPkcs8()), {
      mode: 0o600,
    });
  }, 60_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    for (const database of databases) await database.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  /** Starts a server and an x509pop agent in `dir`, then stops the server until its CA has expired and restarts it. */
  async function runPastExpiry(dir: string, extraFlags: string[]) {
    await mkdir(join(dir, 'agent'), { recursive: true });
    // Each scenario's server has its own database (its own CA journal, sealed with its own key-encryption key).
    let database: StartServerOptions['database'];
    if (!isEmbeddedRun()) {
      const own = await useTestDatabase({ poolSize: 1 });
      databases.push(own);
      database = { url: own.url };
    }
    let server = await startServerProcess({
      dir: join(dir, 'server'),
      database,
      flags: [
        '--ca-ttl',
        String(CA_TTL_SECONDS),
        '--x509-svid-ttl',
        String(SVID_TTL_SECONDS),
        '--jwt-svid-ttl',
        String(SVID_TTL_SECONDS),
        '--x509pop-ca-bundle',
        join(scratch, 'node-ca.pem'),
        ...extraFlags,
      ],
    });
    children.push(server.process);
    const api = () => request.agent(`https://127.0.0.1:${server.port}`).disableTLSCerts();
    const before = (await api().get('/bundle')).body as BundleView;
    const trustBundle = join(dir, 'bundle.pem');
    await server.writeBundle(trustBundle);
    for (const [spiffeId, parentId, selector] of [
      [`${TD}/node`, `${TD}/sigil/server`, 'x509pop:subject:cn:node-1'],
      [`${TD}/web`, `${TD}/node`, `unix:uid:${UID}`],
    ]) {
      await server.json([
        'entry',
        'create',
        '--spiffe-id',
        spiffeId!,
        '--parent-id',
        parentId!,
        '--selector',
        selector!,
      ]);
    }
    const socketPath = join(dir, 'agent', 'api.sock');
    const agentFlags = ['--x509pop-cert', join(scratch, 'node.pem'), '--x509pop-key', join(scratch, 'node.key')];
    const agent = startAgentProcess({
      servers: [server.port],
      socketPath,
      dataDir: join(dir, 'agent', 'data'),
      trustBundle,
      flags: agentFlags,
    });
    children.push(agent);
    await agentReady(agent);
    const client = workloadClient(socketPath);
    const first = await firstMessage(client.FetchX509SVID({}, securityHeader()));

    // The CA that signs now, from the server's own view (`localauthority x509 show`).
    const shown = await server.json<{ active: { authority_id: string; expires_at: string } }>([
      'localauthority',
      'x509',
      'show',
    ]);
    await server.process.stop('SIGTERM');
    // The scenario: down from before the next CA was prepared (at half the CA's life) until after the CA expired. A
    // prepared CA would have reached the agent through its authenticated sync, the ordinary rotation, not this case.
    expect(server.process.output(), 'the server prepared its next CA before it was stopped').not.toMatch(
      /"transition":"prepared"/,
    );
    const expiresAt = Date.parse(shown.active.expires_at);
    await sleep(Math.max(0, expiresAt - Date.now() + 1_000));
    const agentOutputAtRestart = agent.output().length;
    server = await server.restart();
    children.push(server.process);
    const after = (await api().get('/bundle')).body as BundleView;
    const restarted = await server.json<{ active: { authority_id: string; expires_at: string } }>([
      'localauthority',
      'x509',
      'show',
    ]);
    return {
      server,
      agent,
      client,
      first,
      before,
      after,
      expired: shown.active,
      fresh: restarted.active,
      agentOutputAtRestart,
      agentFlags,
      socketPath,
      trustBundle,
    };
  }

  it('under an upstream CA: a fresh intermediate, the same root, and the running agent recovers by itself', async () => {
    const dir = join(scratch, 'upstream');
    await mkdir(dir);
    const root = await TestCa.create('example.org', { subject: 'CN=Upstream Root' });
    const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', root.keys.privateKey));
    await writeFile(join(scratch, 'upstream.pem'), root.certificate.toString('pem'));
    await writeFile(join(scratch, 'upstream.key'), toPem(PEM_LABEL.privateKey, pkcs8), { mode: 0o600 });
    const run = await runPastExpiry(dir, [
      '--upstream-ca-cert',
      join(scratch, 'upstream.pem'),
      '--upstream-ca-key',
      join(scratch, 'upstream.key'),
    ]);
    try {
      expect(run.fresh.authority_id).not.toBe(run.expired.authority_id);
      expect(Date.parse(run.fresh.expires_at)).toBeGreaterThan(Date.now());
      // The bundle holds the upstream root, before and after.
      const rootFingerprint = new X509Certificate(root.certificate.toString('pem')).fingerprint256;
      expect(x509Authorities(run.before).map((ca) => ca.fingerprint256)).toEqual([rootFingerprint]);
      expect(x509Authorities(run.after).map((ca) => ca.fingerprint256)).toEqual([rootFingerprint]);
      // The running agent: its SVID died with the CA; it attests again by itself and serves SVIDs of the new CA.
      await run.agent.waitFor(/"method":"x509pop".*"msg":"node attested"/, {
        from: run.agentOutputAtRestart,
        timeoutMs: 120_000,
      });
      const firstCa = caOf(run.first, x509Authorities(run.before));
      expect(firstCa).toBeDefined();
      let current: X509SvidResponse | undefined;
      for (;;) {
        current = await svidsUnlessUnavailable(run.client);
        const ca = current && caOf(current, x509Authorities(run.after));
        if (current !== undefined && ca !== undefined && ca !== firstCa) break;
        await sleep(250);
      }
      expect(idsOf(current)).toEqual([`${TD}/web`]);
      await verifySvidMessage(current.svids[0]!);
    } finally {
      run.client.close();
    }
  }, 300_000);

  it('self-signed: a fresh root in the bundle; the agent refuses it until its trust bundle file holds it', async () => {
    const dir = join(scratch, 'self-signed');
    await mkdir(dir);
    const run = await runPastExpiry(dir, []);
    try {
      expect(run.fresh.authority_id).not.toBe(run.expired.authority_id);
      expect(run.after.spiffe_sequence).toBeGreaterThan(run.before.spiffe_sequence);
      const before = x509Authorities(run.before).map((ca) => ca.fingerprint256);
      const after = x509Authorities(run.after);
      // Only the fresh root: the expired one left the bundle.
      expect(after).toHaveLength(1);
      expect(before).not.toContain(after[0]!.fingerprint256);
      expect(Date.parse(after[0]!.validTo)).toBeGreaterThan(Date.now());

      // The agent trusts only the expired root: the server's new certificate is refused, never trusted blindly.
      await run.agent.waitFor(/no server presented a certificate this agent trusts/, {
        from: run.agentOutputAtRestart,
        timeoutMs: 90_000,
      });
      expect(run.agent.output().slice(run.agentOutputAtRestart)).not.toMatch(/"msg":"node attested"/);

      // The operator's route: the new bundle (`bundle show`) in the agent's trust bundle file, which the agent reads
      // again before each attestation attempt: it attests and serves SVIDs chaining to the new root, unrestarted.
      const beforeFix = run.agent.output().length;
      await run.server.writeBundle(run.trustBundle);
      await run.agent.waitFor(/"method":"x509pop".*"msg":"node attested"/, { from: beforeFix, timeoutMs: 90_000 });
      let current: X509SvidResponse | undefined;
      for (;;) {
        current = await svidsUnlessUnavailable(run.client);
        if (current !== undefined && caOf(current, after) === after[0]!.fingerprint256) break;
        await sleep(250);
      }
      expect(idsOf(current)).toEqual([`${TD}/web`]);
      await verifySvidMessage(current.svids[0]!);
    } finally {
      run.client.close();
    }
  }, 300_000);
});
