import 'reflect-metadata';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeClock } from '../../../../../test/support/fake-clock.js';
import { TEST_NOW, TestCa, type TestSvid } from '../../../../../test/support/test-ca.js';
import {
  X509POP_MAX_WAITING_CHECKS,
  X509POP_MAX_WAITING_CHECKS_PER_ADDRESS,
  X509popAttestor,
} from './x509pop.attestor.js';

const base64Chain = (svid: TestSvid): string[] => svid.chainDer().map((der) => Buffer.from(der).toString('base64'));

/** Lets one turn of the event loop pass. */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe('X509popAttestor challenges under load', () => {
  let dir: string;
  let root: TestCa;
  let nodes: TestSvid[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sigil-x509pop-attestor-'));
    root = await TestCa.create('nodes.test', { now: TEST_NOW });
    await writeFile(join(dir, 'ca.pem'), root.certificate.toString('pem'));
    nodes = [];
    for (let index = 0; index <= X509POP_MAX_WAITING_CHECKS; index++) {
      nodes.push(await root.createX509Svid('unused', { subject: `CN=node-${index}`, uris: [] }));
    }
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function attestor(): Promise<X509popAttestor> {
    const created = new X509popAttestor(new FakeClock(TEST_NOW));
    await created.configure({ ca_bundle: join(dir, 'ca.pem') });
    return created;
  }

  it('checks chains it has not seen one per turn of the event loop, and answers a chain seen before at once', async () => {
    const x509pop = await attestor();
    const known = nodes[0]!;
    await x509pop.issueChallenge(base64Chain(known), '127.0.0.2');
    // Eight new chains from four addresses, read in one turn of the loop (an attacker's new connections).
    const checked: number[] = [];
    const fresh = nodes
      .slice(1, 9)
      .map((svid, index) =>
        x509pop.issueChallenge(base64Chain(svid), `127.0.0.${10 + (index % 4)}`).then(() => checked.push(index)),
      );
    let knownAnswered = false;
    const again = x509pop.issueChallenge(base64Chain(known), '127.0.0.2').then(() => (knownAnswered = true));
    await Promise.resolve();
    await Promise.resolve();
    expect(knownAnswered).toBe(true);
    expect(checked).toEqual([]);
    const perTurn: number[] = [];
    // Turns of the loop pass without a check too: the checks take at most a share of its time (X509POP_CHECK_BUSY_SHARE).
    const deadline = Date.now() + 10_000;
    while (checked.length < fresh.length && Date.now() < deadline) {
      const before = checked.length;
      await nextTurn();
      perTurn.push(checked.length - before);
    }
    await Promise.all([...fresh, again]);
    expect(checked).toHaveLength(8);
    expect(Math.max(...perTurn)).toBe(1);
  });

  it(`refuses with 429 an address with ${X509POP_MAX_WAITING_CHECKS_PER_ADDRESS} chains waiting for their check; other addresses go on`, async () => {
    const x509pop = await attestor();
    const mine = nodes.slice(1, X509POP_MAX_WAITING_CHECKS_PER_ADDRESS + 1);
    const waiting = mine.map((svid) => x509pop.issueChallenge(base64Chain(svid), '127.0.0.10'));
    await expect(
      x509pop.issueChallenge(base64Chain(nodes[X509POP_MAX_WAITING_CHECKS_PER_ADDRESS + 1]!), '127.0.0.10'),
    ).rejects.toMatchObject({
      kind: 'resource_exhausted',
      retryAfterSeconds: 1,
      message: `x509pop: source address 127.0.0.10 has ${X509POP_MAX_WAITING_CHECKS_PER_ADDRESS} certificate chains waiting for their check already; retry in 1 s`,
    });
    const elsewhere = x509pop.issueChallenge(
      base64Chain(nodes[X509POP_MAX_WAITING_CHECKS_PER_ADDRESS + 2]!),
      '127.0.0.11',
    );
    await expect(Promise.all([...waiting, elsewhere])).resolves.toHaveLength(mine.length + 1);
  });

  it(`refuses with 503 a new chain when ${X509POP_MAX_WAITING_CHECKS} are waiting for their check; a chain seen before still gets its challenge`, async () => {
    const x509pop = await attestor();
    const known = nodes[0]!;
    await x509pop.issueChallenge(base64Chain(known), '127.0.0.2');
    const waiting = nodes
      .slice(1, X509POP_MAX_WAITING_CHECKS + 1)
      .map((svid, index) => x509pop.issueChallenge(base64Chain(svid), `127.0.0.${10 + (index % 200)}`));
    const over = x509pop.issueChallenge(base64Chain(nodes[X509POP_MAX_WAITING_CHECKS]!), '127.0.0.99');
    await expect(over).rejects.toMatchObject({
      kind: 'unavailable',
      message: `x509pop: ${X509POP_MAX_WAITING_CHECKS} certificate chains are waiting for their check already; retry in 1 s`,
    });
    await expect(x509pop.issueChallenge(base64Chain(known), '127.0.0.2')).resolves.toMatchObject({
      challengeId: expect.any(String) as unknown,
    });
    const results = await Promise.allSettled(waiting);
    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(X509POP_MAX_WAITING_CHECKS);
  });
});
