/**
 * Forced rotation end to end (issue 14, "Taint end to end"): a real server and a join-token agent, SVIDs with long
 * lifetimes (1 h: no ordinary rotation happens during the test) and JWT-SVIDs of 40 s. The operator follows SPIRE's
 * runbook: prepare, activate, taint, wait, revoke. Tainting the old X.509 CA makes the agent re-sign, within its
 * taint window, its own SVID and every workload X509-SVID the old CA issued, and the open Workload API stream carries
 * them; revoke is refused until the agent reported that nothing it holds comes from the old CA, then accepted, and
 * the workloads keep being served. Tainting the old JWT key drops the cached JWT-SVID it signed: the next fetch
 * gets one from the new key; revoke waits until the JWT-SVID handed out under the old key has expired.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { x509 } from '@sigil/spiffe/x509';
import { decodeProtectedHeader } from 'jose';
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
import {
  StreamWatcher,
  type WorkloadClient,
  type X509SvidResponse,
  idsOf,
  securityHeader,
  splitChain,
  unary,
  verifySvidMessage,
  workloadClient,
} from '../support/workload-grpc.js';

const UID = process.getuid!();
const TD = 'spiffe://example.org';
const WORKLOADS = [`${TD}/taint/a`, `${TD}/taint/b`];
const JWT_TTL_SECONDS = 40;

interface Authority {
  authority_id: string;
}

/** The authority ID (hex key identifier of the issuing CA) of a certificate, from its Authority Key Identifier. */
function issuerOf(der: Uint8Array): string {
  return new x509.X509Certificate(der).getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!.toLowerCase();
}

/** The authority that issued each SVID of a stream message. */
function issuersOf(message: X509SvidResponse): string[] {
  return message.svids.map((svid) => issuerOf(splitChain(svid.x509_svid)[0]!));
}

function rootIds(message: X509SvidResponse): string[] {
  return splitChain(message.svids[0]!.bundle).map((der) =>
    new x509.X509Certificate(der).getExtension(x509.SubjectKeyIdentifierExtension)!.keyId.toLowerCase(),
  );
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

describe('localauthority taint and revoke with a real server and agent', () => {
  let scratch: string;
  let server: ServerProcess;
  let agent: SigilProcess;
  let client: WorkloadClient;
  let storage: AgentStorage;
  const children: SigilProcess[] = [];

  const authority = async (kind: 'x509' | 'jwt', verb: string, id?: string): Promise<Authority> => {
    const args = ['localauthority', kind, verb, ...(id === undefined ? [] : ['--authority-id', id])];
    const body = await server.json<Record<string, Authority>>(args);
    return Object.values(body)[0]!;
  };
  const revoke = (kind: 'x509' | 'jwt', id: string) =>
    server.cli(['localauthority', kind, 'revoke', '--authority-id', id]);
  const fetchJwt = async (): Promise<string> =>
    (await unary(client.FetchJWTSVID.bind(client), { audience: ['db'] })).svids[0]!.svid;
  const agentSvidIssuer = async (): Promise<string> => {
    const state = await storage.load(undefined);
    return issuerOf(state!.svidChain[0]!);
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-taint-'));
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: ['--jwt-svid-ttl', `${JWT_TTL_SECONDS}s`],
    });
    children.push(server.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await server.writeBundle(bundleFile);
    const token = await server.joinToken(`${TD}/host/taint`);
    for (const id of WORKLOADS) {
      await server.json([
        'entry',
        'create',
        '--spiffe-id',
        id,
        '--parent-id',
        `${TD}/host/taint`,
        '--selector',
        `unix:uid:${UID}`,
      ]);
    }
    await mkdir(join(scratch, 'agent'));
    storage = new AgentStorage(join(scratch, 'agent', 'data'));
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
  }, 180_000);

  afterAll(async () => {
    client?.close();
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    await rm(scratch, { recursive: true, force: true });
  });

  it('X.509: taint re-signs the agent SVID and every workload SVID on the open stream; revoke waits for it', async () => {
    const watcher = new StreamWatcher(client.FetchX509SVID({}, securityHeader()));
    try {
      const first = await watcher.next((message) => idsOf(message).join() === WORKLOADS.join());
      const old = (await server.json<{ active: Authority }>(['localauthority', 'x509', 'show'])).active.authority_id;
      expect(issuersOf(first)).toEqual([old, old]);
      expect(await agentSvidIssuer()).toBe(old);
      const firstSerials = first.svids.map((svid) => new X509Certificate(splitChain(svid.x509_svid)[0]!).serialNumber);

      const next = (await authority('x509', 'prepare')).authority_id;
      expect((await authority('x509', 'activate', next)).authority_id).toBe(next);
      // SPIRE's order: the old key must be tainted before it can be revoked.
      const early = await revoke('x509', old);
      expect(early.code).not.toBe(0);
      expect(early.stderr).toContain(`authorityId: '${old}' must be tainted before it is revoked`);

      const from = watcher.messages.length;
      const taintedAt = Date.now();
      expect((await authority('x509', 'taint', old)).authority_id).toBe(old);
      // At once, the agent still holds SVIDs of the old key (it re-signs within its 15 s window): refused.
      const refused = await revoke('x509', old);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`authorityId: '${old}' still issued X509-SVIDs in use: 1 agent`);
      expect(refused.stderr).toContain('revoke with force');

      const replaced = await watcher.next(
        (message) => idsOf(message).join() === WORKLOADS.join() && issuersOf(message).every((id) => id === next),
        { from, timeoutMs: 40_000 },
      );
      for (const svid of replaced.svids) await verifySvidMessage(svid);
      const serials = replaced.svids.map((svid) => new X509Certificate(splitChain(svid.x509_svid)[0]!).serialNumber);
      expect(serials.some((serial) => firstSerials.includes(serial))).toBe(false);
      // Well before half their hour of life: the taint made the agent rotate them.
      expect(Date.now() - taintedAt).toBeLessThan(40_000);
      await until('the agent SVID re-signed by the new CA', 40_000, async () =>
        (await agentSvidIssuer()) === next ? true : undefined,
      );
      expect(agent.output()).toContain('the agent SVID was issued by a tainted authority, renewing it early');
      // The two workloads' SVIDs and the one of the join token's alias entry (authorised to the agent, unused).
      expect(agent.output()).toMatch(
        /"x509Svids":3,"jwtSvids":0,"msg":"authority tainted: re-signing the SVIDs it issued"/,
      );

      // The agent reports its new issuers as soon as it holds them: revoke is accepted within seconds.
      const revokedAt = await until('revoke to be accepted', 15_000, async () =>
        (await revoke('x509', old)).code === 0 ? Date.now() : undefined,
      );
      expect(revokedAt).toBeGreaterThan(taintedAt);
      const shown = await server.json<{ old: (Authority & { revoked: boolean })[] }>([
        'localauthority',
        'x509',
        'show',
      ]);
      expect(shown.old.find((key) => key.authority_id === old)?.revoked).toBe(true);

      // Nothing stops serving: the stream sends the bundle without the old root, and the SVIDs verify against it.
      const after = await watcher.next((message) => !rootIds(message).includes(old), {
        from: watcher.messages.indexOf(replaced),
        timeoutMs: 40_000,
      });
      expect(idsOf(after)).toEqual(WORKLOADS);
      for (const svid of after.svids) await verifySvidMessage(svid);
      expect(watcher.error).toBeUndefined();
      expect(agent.running).toBe(true);
      // The agent still reaches the server, whose own certificate the new CA re-issued when the keys changed: a
      // JWT-SVID for a new audience is a call to the server.
      const token = (await unary(client.FetchJWTSVID.bind(client), { audience: ['after-revoke'] })).svids[0]!.svid;
      expect(token.split('.')).toHaveLength(3);
    } finally {
      watcher.close();
    }
  }, 150_000);

  it('JWT: taint drops the JWT-SVID of the old key from the cache; revoke waits until it expired', async () => {
    const before = await fetchJwt();
    const old = decodeProtectedHeader(before).kid!;
    const next = (await authority('jwt', 'prepare')).authority_id;
    await authority('jwt', 'activate', next);
    // Still cached (reused until half its life), though the new key signs from now on.
    expect(await fetchJwt()).toBe(before);

    await authority('jwt', 'taint', old);
    const replaced = await until('a JWT-SVID of the new key', 20_000, async () => {
      const token = await fetchJwt();
      return decodeProtectedHeader(token).kid === next ? token : undefined;
    });
    expect(replaced).not.toBe(before);
    // The token handed out under the old key is valid until its exp: revoke waits for it.
    const refused = await revoke('jwt', old);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`authorityId: '${old}' still issued JWT-SVIDs in use`);
    const exp = (JSON.parse(Buffer.from(before.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp;
    const revokedAt = await until('JWT revoke to be accepted', (JWT_TTL_SECONDS + 15) * 1000, async () =>
      (await revoke('jwt', old)).code === 0 ? Date.now() : undefined,
    );
    expect(revokedAt).toBeGreaterThanOrEqual(exp * 1000 - 1000);
    expect(decodeProtectedHeader(await fetchJwt()).kid).toBe(next);
    expect(agent.running).toBe(true);
  }, 120_000);
});
