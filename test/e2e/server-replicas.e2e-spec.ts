/**
 * Issue 12, item 1: two real `sigil-server` processes (replicas A and B) on one PostgreSQL database, sharing one KEK.
 * - CA key changes made through A (prepare, activate, taint) reach B at once: B runs with a key check interval of an
 *   hour, so only A's notification can make B reload before the test ends, and B's agent syncs the new bundle.
 * - A leader killed with SIGKILL inside its rotation transaction (the test-only hook of rotation-test-hook.ts) leaves
 *   nothing half-written: B takes the rotation lock, makes the same step, and `spiffe_sequence` only rises.
 * - x509pop: a challenge asked from A is answered on B, once (a second answer on either replica is refused), not
 *   after it expired, and a challenge answered on B stops counting against A's per-certificate cap.
 * On the embedded database there is one server process by design, so these are skipped there.
 */
import { createPrivateKey, sign } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ROTATION_PAUSE_FILE_ENV } from '../../apps/server/src/ca/rotation-test-hook.js';
import { newAgentKey, requestTls } from '../support/agent-api.js';
import { isEmbeddedRun } from '../support/database.js';
import {
  type ServerProcess,
  type SigilProcess,
  agentReady,
  closeTestDatabase,
  requireBuild,
  startAgentProcess,
  startServerProcess,
} from '../support/sigil-processes.js';
import { TestCa, type TestSvid } from '../support/test-ca.js';

const TD = 'spiffe://example.org';
const EMBEDDED = isEmbeddedRun();
const SKIP = EMBEDDED ? ' (skipped on embedded: the embedded database runs one server process, no replicas)' : '';

interface Authority {
  authority_id: string;
}
interface Slots {
  active: Authority;
  prepared?: Authority;
  old: (Authority & { tainted: boolean })[];
}

const sequenceOf = async (server: ServerProcess): Promise<number> =>
  (await server.json<{ spiffe_sequence: number }>(['bundle', 'show', '--format', 'spiffe'])).spiffe_sequence;

/** Reads the stored bundle sequence and journal straight from the database (what a crash left behind). */
async function storedState(url: string): Promise<{ sequence: number; keys: string[] }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const bundle = await client.query<{ sequence: string }>(
      `SELECT sequence FROM bundles WHERE trust_domain = 'example.org'`,
    );
    const keys = await client.query<{ kind: string; state: string }>(
      'SELECT kind, state FROM ca_keys ORDER BY kind, state',
    );
    return {
      sequence: Number(bundle.rows[0]?.sequence ?? 0),
      keys: keys.rows.map((row) => `${row.kind}:${row.state}`),
    };
  } finally {
    await client.end();
  }
}

const CHALLENGE_ROUTE = '/agent/v1/attest/x509pop/challenge';
const ANSWER_ROUTE = '/agent/v1/attest/x509pop';

describe.skipIf(EMBEDDED)(`two replicas on one database${SKIP}`, () => {
  let scratch: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let agent: SigilProcess;
  let node: TestSvid;
  const children: SigilProcess[] = [];

  const chain = (): string[] => node.chainDer().map((der) => Buffer.from(der).toString('base64'));
  const challenge = async (server: ServerProcess, localAddress = '127.0.0.1') => {
    const answer = await requestTls(server.port, {
      method: 'POST',
      path: CHALLENGE_ROUTE,
      body: { certificates: chain() },
      localAddress,
    });
    if (answer.status !== 200 && answer.status !== 201) return { status: answer.status, body: answer.body };
    return { status: answer.status, id: answer.body['challenge_id'] as string, nonce: answer.body['nonce'] as string };
  };
  const answer = async (server: ServerProcess, id: string, nonce: string) => {
    const key = createPrivateKey({ key: Buffer.from(await node.privateKeyPkcs8()), format: 'der', type: 'pkcs8' });
    const signature = sign('sha256', Buffer.from(nonce, 'base64'), key).toString('base64');
    const csr = await (await newAgentKey()).csr();
    return requestTls(server.port, {
      method: 'POST',
      path: ANSWER_ROUTE,
      body: { challenge_id: id, signature, csr },
    });
  };

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-replicas-'));
    const nodeCa = await TestCa.create('nodes.example', { uris: [], subject: 'CN=Node CA' });
    node = await nodeCa.createX509Svid('spiffe://nodes.example/unused', { uris: [], subject: 'CN=node-1' });
    await writeFile(join(scratch, 'node-ca.pem'), nodeCa.certificate.toString('pem'));
    // An hour between key checks on both: a change can reach the other replica only through its notification.
    const slow = ['--authority-check-interval', '1h', '--x509pop-ca-bundle', join(scratch, 'node-ca.pem')];
    a = await startServerProcess({ dir: join(scratch, 'a'), flags: slow });
    children.push(a.process);
    b = await startServerProcess({
      dir: join(scratch, 'b'),
      flags: [...slow, '--kek-file', join(a.dataDir, 'kek.key')],
    });
    children.push(b.process);
    const bundleFile = join(scratch, 'bundle.pem');
    await b.writeBundle(bundleFile);
    await mkdir(join(scratch, 'agent'));
    agent = startAgentProcess({
      servers: [b.port],
      socketPath: join(scratch, 'agent', 'api.sock'),
      dataDir: join(scratch, 'agent', 'data'),
      trustBundle: bundleFile,
      joinToken: await a.joinToken(`${TD}/host/replica-b`),
    });
    children.push(agent);
    await agentReady(agent);
  }, 180_000);

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const agentHasSequence = (sequence: number): boolean =>
    agent.output().includes(`"sequence":${sequence},"msg":"trust bundle updated"`) ||
    new RegExp(`"msg":"trust bundle updated".*"sequence":${sequence}\\b`).test(agent.output());

  it('x509pop: a challenge from A is answered on B, once, and not after it expired', async () => {
    const asked = await challenge(a);
    expect(asked).toMatchObject({ id: expect.any(String) as unknown });
    const accepted = await answer(b, asked.id!, asked.nonce!);
    expect(accepted.status, JSON.stringify(accepted.body)).toBeLessThan(300);
    for (const server of [a, b]) {
      const again = await answer(server, asked.id!, asked.nonce!);
      expect(again.status).toBe(403);
      expect(again.body['message']).toBe('x509pop: challenge_id is unknown, expired or already answered');
    }

    // Expiry is kept: a challenge whose time is up (moved into the past in the database) is refused everywhere.
    const late = await challenge(a);
    const client = new pg.Client({ connectionString: a.databaseUrl });
    await client.connect();
    try {
      const moved = await client.query(
        `UPDATE x509pop_challenges SET expires_at = now() - interval '1 second' WHERE id = $1`,
        [late.id],
      );
      expect(moved.rowCount).toBe(1);
    } finally {
      await client.end();
    }
    expect((await answer(b, late.id!, late.nonce!)).status).toBe(403);
  }, 60_000);

  it("x509pop: challenges answered on B stop counting against A's per-certificate cap", async () => {
    // Four addresses each ask A for a challenge of the same certificate: A's cap per certificate (4) is reached.
    const asked = [];
    for (const address of ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']) asked.push(await challenge(a, address));
    const refused = await challenge(a, '127.0.0.6');
    expect(refused.status).toBe(429);
    // All four answered on B: A learns it at its cap from the database, and counts the new one.
    for (const each of asked) expect((await answer(b, each.id!, each.nonce!)).status).toBeLessThan(300);
    const after = await vi.waitFor(
      async () => {
        const next = await challenge(a, '127.0.0.6');
        expect(next.status).toBeLessThan(300);
        return next;
      },
      { timeout: 10_000, interval: 300 },
    );
    expect((await answer(b, after.id!, after.nonce!)).status).toBeLessThan(300);
  }, 60_000);

  it('prepare, activate and taint through A: B serves the same journal and bundle, and its agent syncs it', async () => {
    const start = await sequenceOf(b);
    expect(await sequenceOf(a)).toBe(start);
    const old = (await b.json<Slots>(['localauthority', 'x509', 'show'])).active.authority_id;

    const prepared = Object.values(await a.json<Record<string, Authority>>(['localauthority', 'x509', 'prepare']))[0]!;
    await vi.waitFor(
      async () =>
        expect((await b.json<Slots>(['localauthority', 'x509', 'show'])).prepared?.authority_id).toBe(
          prepared.authority_id,
        ),
      { timeout: 20_000, interval: 100 },
    );
    expect(await sequenceOf(b)).toBe(start + 1);
    await vi.waitFor(() => expect(agentHasSequence(start + 1)).toBe(true), { timeout: 20_000, interval: 100 });

    await a.json(['localauthority', 'x509', 'activate', '--authority-id', prepared.authority_id]);
    await vi.waitFor(
      async () =>
        expect((await b.json<Slots>(['localauthority', 'x509', 'show'])).active.authority_id).toBe(
          prepared.authority_id,
        ),
      { timeout: 20_000, interval: 100 },
    );

    await a.json(['localauthority', 'x509', 'taint', '--authority-id', old]);
    await vi.waitFor(
      async () =>
        expect(
          (await b.json<Slots>(['localauthority', 'x509', 'show'])).old.find((key) => key.authority_id === old)
            ?.tainted,
        ).toBe(true),
      { timeout: 20_000, interval: 100 },
    );
    const tainted = await sequenceOf(a);
    expect(tainted).toBeGreaterThan(start + 1);
    expect(await sequenceOf(b)).toBe(tainted);
    await vi.waitFor(() => expect(agentHasSequence(tainted)).toBe(true), { timeout: 20_000, interval: 100 });
    // B heard every change from A's notifications, never from a key check of its own (an hour apart).
    expect(b.process.output()).not.toContain('ca key prepared');
    expect(b.process.output()).not.toContain('ca key tainted');
  }, 120_000);
});

describe.skipIf(EMBEDDED)(`a rotation leader killed inside its transaction leaves no half-state${SKIP}`, () => {
  let scratch: string;
  const children: SigilProcess[] = [];

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-leader-'));
  });

  afterAll(async () => {
    for (const child of children.reverse()) await child.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('SIGKILL of the leader while it prepares the next keys: the other replica prepares them, the sequence only rises', async () => {
    // A CA of 60 s: the next keys are prepared 30 s after the first ones (half their lifetime).
    const flags = [
      '--ca-ttl',
      '60s',
      '--x509-svid-ttl',
      '30s',
      '--jwt-svid-ttl',
      '30s',
      '--authority-check-interval',
      '1s',
    ];
    const pauseFile = join(scratch, 'pause-rotation');
    const env = { [ROTATION_PAUSE_FILE_ENV]: pauseFile };
    const a = await startServerProcess({ dir: join(scratch, 'a'), flags, env });
    const b = await startServerProcess({
      dir: join(scratch, 'b'),
      flags: [...flags, '--kek-file', join(a.dataDir, 'kek.key')],
      env,
    });
    children.push(a.process, b.process);
    const url = a.databaseUrl!;
    const initial = await storedState(url);
    expect(initial.keys).toEqual(['jwt:active', 'x509:active']);
    // Armed now that both have their first keys: whichever leads the preparation stops inside its transaction.
    await writeFile(pauseFile, '');
    const paused = /"msg":"test hook: rotation paused inside its transaction until this process is killed"/;
    const leader = await vi.waitFor(
      () => {
        const found = [a, b].find((server) => paused.test(server.process.output()));
        if (found === undefined) throw new Error('no replica paused in its rotation yet');
        return found;
      },
      { timeout: 60_000, interval: 100 },
    );
    const other = leader === a ? b : a;
    const during = await storedState(url);
    // The leader's uncommitted preparation is invisible: the journal and the bundle are as before.
    expect(during).toEqual(initial);
    await leader.process.stop('SIGKILL');
    expect(await storedState(url)).toEqual(initial);

    // The other replica takes the lock at its next check and makes the same step, once; the sequence only rises.
    const seen: number[] = [initial.sequence];
    await vi.waitFor(
      async () => {
        const state = await storedState(url);
        seen.push(state.sequence);
        expect(state.keys).toContain('x509:prepared');
      },
      { timeout: 60_000, interval: 200 },
    );
    expect(seen).toEqual([...seen].sort((x, y) => x - y));
    const finished = await storedState(url);
    expect(finished.sequence).toBeGreaterThan(initial.sequence);
    expect(finished.keys.filter((key) => key === 'x509:prepared')).toHaveLength(1);
    expect(other.process.output()).toMatch(/"msg":"ca key prepared"/);
    await vi.waitFor(async () => expect(await sequenceOf(other)).toBe(finished.sequence), {
      timeout: 10_000,
      interval: 100,
    });
  }, 180_000);
});
