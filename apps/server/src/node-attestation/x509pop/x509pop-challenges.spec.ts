import { describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa } from '../../../../../test/support/test-ca.js';
import { X509popChallenges } from './x509pop-challenges.js';
import { verifyX509popChain, type X509popEvidence } from './x509pop.js';

const at = (seconds: number): Date => new Date(TEST_NOW.getTime() + seconds * 1000);

async function evidenceFor(root: TestCa, count: number): Promise<X509popEvidence[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, index) =>
      verifyX509popChain(
        (await root.createX509Svid('unused', { subject: `CN=node-${index}`, uris: [] })).chainDer(),
        [root.certificate],
        TEST_NOW,
      ),
    ),
  );
}

describe('X509popChallenges', () => {
  it('hands each challenge out once, within its lifetime, and caps how many are pending', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const [a, b, c] = await evidenceFor(root, 3);
    const challenges = new X509popChallenges(60_000, { perCertificate: 4, perAddress: 64, total: 2 });
    const first = challenges.issue(a!, '10.0.0.1', TEST_NOW);
    expect(first.nonce).toHaveLength(32);
    expect(challenges.take(first.challengeId, TEST_NOW)?.nonce).toEqual(first.nonce);
    expect(challenges.take(first.challengeId, TEST_NOW)).toBeUndefined();

    const late = challenges.issue(a!, '10.0.0.1', TEST_NOW);
    expect(challenges.take(late.challengeId, at(60))).toBeUndefined();

    challenges.issue(a!, '10.0.0.1', TEST_NOW);
    challenges.issue(b!, '10.0.0.2', TEST_NOW);
    expect(() => challenges.issue(c!, '10.0.0.3', TEST_NOW)).toThrow(
      'x509pop: too many challenges outstanding, retry shortly',
    );
    // Expired challenges make room again.
    expect(challenges.issue(c!, '10.0.0.3', at(61)).nonce).toHaveLength(32);
    expect(challenges.size).toBe(1);
  });

  it('keeps at most perCertificate challenges per certificate and address, replacing the oldest', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const [a] = await evidenceFor(root, 1);
    const challenges = new X509popChallenges(60_000, { perCertificate: 2, perAddress: 64, total: 100 });
    const issued = Array.from({ length: 1000 }, () => challenges.issue(a!, '10.0.0.1', TEST_NOW));
    expect(challenges.size).toBe(2);
    expect(challenges.take(issued[997]!.challengeId, TEST_NOW)).toBeUndefined();
    expect(challenges.take(issued[998]!.challengeId, TEST_NOW)).toBeDefined();
    expect(challenges.take(issued[999]!.challengeId, TEST_NOW)).toBeDefined();
    expect(challenges.size).toBe(0);
  });

  it("never voids a certificate's challenge asked from another address: the stranger gets 429 instead", async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const [a] = await evidenceFor(root, 1);
    const challenges = new X509popChallenges(60_000, { perCertificate: 2, perAddress: 64, total: 100 });
    const node = challenges.issue(a!, '10.0.0.1', TEST_NOW);
    challenges.issue(a!, '10.0.0.9', TEST_NOW);
    expect(() => challenges.issue(a!, '10.0.0.9', TEST_NOW)).not.toThrow();
    expect(() => challenges.issue(a!, '10.0.0.8', TEST_NOW)).toThrow(
      `x509pop: certificate ${a!.fingerprint} has 2 challenges outstanding (the limit per certificate), asked from other addresses; retry within 60 s`,
    );
    expect(challenges.take(node.challengeId, TEST_NOW)).toBeDefined();
  });

  it('refuses a source address holding perAddress challenges, IPv6 counted by /64, until one is answered', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const nodes = await evidenceFor(root, 4);
    const challenges = new X509popChallenges(60_000, { perCertificate: 4, perAddress: 3, total: 100 });
    const first = challenges.issue(nodes[0]!, '2001:db8:1:2::1', TEST_NOW);
    challenges.issue(nodes[1]!, '2001:db8:1:2::2', TEST_NOW);
    challenges.issue(nodes[2]!, '2001:0db8:0001:0002:ffff::3', TEST_NOW);
    expect(() => challenges.issue(nodes[3]!, '2001:db8:1:2:abcd::4', TEST_NOW)).toThrow(
      'x509pop: source address 2001:db8:1:2::/64 has 3 challenges outstanding (the limit per address); answer them or wait up to 60 s for them to expire',
    );
    expect(challenges.issue(nodes[3]!, '2001:db8:1:3::4', TEST_NOW).nonce).toHaveLength(32);
    challenges.take(first.challengeId, TEST_NOW);
    expect(challenges.issue(nodes[3]!, '2001:db8:1:2::4', TEST_NOW).nonce).toHaveLength(32);
  });

  it('names the challenge a new one replaced (to delete it from the database) and forgets those answered elsewhere', async () => {
    const root = await TestCa.create('nodes.test', { now: TEST_NOW });
    const [a, b, c] = await evidenceFor(root, 3);
    const challenges = new X509popChallenges(60_000, { perCertificate: 1, perAddress: 2, total: 100 });
    const first = challenges.issue(a!, '10.0.0.1', TEST_NOW);
    expect(first.replaced).toBeUndefined();
    expect(first.expiresAt).toEqual(at(60));
    const second = challenges.issue(a!, '10.0.0.1', TEST_NOW);
    expect(second.replaced).toBe(first.challengeId);
    challenges.issue(b!, '10.0.0.1', TEST_NOW);
    expect(() => challenges.issue(c!, '10.0.0.1', TEST_NOW)).toThrow('(the limit per address)');
    // Answered on another replica: no longer counted here (an unknown id is ignored).
    challenges.forget([second.challengeId, 'unknown-id']);
    expect(challenges.ids()).not.toContain(second.challengeId);
    expect(challenges.issue(c!, '10.0.0.1', TEST_NOW).nonce).toHaveLength(32);
  });
});
