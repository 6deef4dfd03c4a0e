import { SpiffeId } from '@sigil/spiffe';
import { beforeAll, describe, expect, it } from 'vitest';
import { FakeAgentApi } from '../../../../test/support/fake-agent-api.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { type JwtSvidResponse } from '@sigil/agent-api';
import { JWT_SVID_LIMITS, JwtSigningLane, JwtSvidLimitError, type JwtSvidLimits } from './jwt-signing-lane.js';
import { JwtSvidCache } from './jwt-svid-cache.js';

const WEB = SpiffeId.parse('spiffe://example.org/web');
const VICTIM = { uid: 1000 };
const ATTACKER = { uid: 65534 };

let api: FakeAgentApi;

beforeAll(async () => {
  api = await FakeAgentApi.create(await TestCa.create('example.org'));
});

/** A clock moved by hand, starting now (the fake server signs with the real time). */
function manualClock(): { now(): Date; advance(ms: number): void } {
  let at = Date.now();
  return { now: () => new Date(at), advance: (ms) => (at += ms) };
}

/** A cache over the fake server that counts what it was asked to sign, with the given limits. */
function build(limits: Partial<JwtSvidLimits> = {}, clock = manualClock()) {
  const signed: string[][] = [];
  const source = async (_entryId: string, audience: readonly string[]): Promise<JwtSvidResponse> => {
    signed.push([...audience]);
    return api.jwtFor(WEB, audience);
  };
  const cache = new JwtSvidCache(source, { clock, limits });
  return { cache, signed, clock };
}

describe('JwtSvidCache: bounded by bytes', () => {
  it('keeps the cache under its byte bound, least recently used first', async () => {
    // Each token here is about 0.9 KB with its key: room for a handful.
    const { cache, signed } = build({ cacheMaxBytes: 6_000, cacheMaxBytesPerUid: 6_000, missBurst: 1000 });
    await cache.fetch('e1', WEB, ['keep'], VICTIM);
    for (let i = 0; i < 30; i++) {
      await cache.fetch('e1', WEB, [`aud-${i}`], VICTIM);
      // Used again and again: it stays while the others come and go.
      await cache.fetch('e1', WEB, ['keep'], VICTIM);
      expect(cache.bytes).toBeLessThanOrEqual(6_000);
    }
    expect(signed.filter(([audience]) => audience === 'keep')).toHaveLength(1);
    expect(cache.size).toBeLessThan(31);
    // The oldest were evicted: asking again signs again.
    await cache.fetch('e1', WEB, ['aud-0'], VICTIM);
    expect(signed.filter(([audience]) => audience === 'aud-0')).toHaveLength(2);
  });

  it('lets one uid evict only its own tokens within its share, not those of other uids', async () => {
    const { cache, signed } = build({ cacheMaxBytes: 40_000, cacheMaxBytesPerUid: 10_000, missBurst: 1000 });
    const victimAudiences = ['db', 'cache', 'queue'];
    for (const audience of victimAudiences) await cache.fetch('e1', WEB, [audience], VICTIM);
    const victimBytes = cache.bytesOf(VICTIM.uid);
    // Ever-new audiences, each as large as allowed: far more than the whole cache.
    for (let i = 0; i < 60; i++) {
      await cache.fetch('e2', WEB, [`${i}-${'x'.repeat(2040)}`], ATTACKER);
      expect(cache.bytesOf(ATTACKER.uid)).toBeLessThanOrEqual(10_000);
    }
    expect(cache.bytes).toBeLessThanOrEqual(40_000);
    expect(cache.bytesOf(VICTIM.uid)).toBe(victimBytes);
    const before = signed.length;
    for (const audience of victimAudiences) await cache.fetch('e1', WEB, [audience], VICTIM);
    expect(signed.length).toBe(before);
  });

  it('hands out a token larger than a uid share without keeping it', async () => {
    const { cache } = build({ cacheMaxBytes: 2_000, cacheMaxBytesPerUid: 2_000 });
    const token = await cache.fetch('e1', WEB, ['y'.repeat(2000)], VICTIM);
    expect(token.split('.')).toHaveLength(3);
    expect(cache.size).toBe(0);
    expect(cache.bytes).toBe(0);
  });
});

describe('JwtSvidCache: per-uid limits on misses', () => {
  it('refuses misses past the burst with the rate named, charges nothing for hits, and refills with time', async () => {
    const { cache, signed, clock } = build({ missBurst: 3, missRatePerSecond: 2 });
    for (const audience of ['a', 'b', 'c']) await cache.fetch('e1', WEB, [audience], ATTACKER);
    const refused = await cache.fetch('e1', WEB, ['d'], ATTACKER).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(JwtSvidLimitError);
    expect((refused as JwtSvidLimitError).limit).toBe('rate');
    expect((refused as Error).message).toBe(
      "uid 65534: over its rate of JWT-SVIDs not in the agent's cache (3 at once, then 2 per second, one per " +
        'started KiB of audiences); retry later, or reuse audiences',
    );
    expect(signed).toHaveLength(3);
    // Cached tokens are still served, and other uids have their own bucket.
    await cache.fetch('e1', WEB, ['a'], ATTACKER);
    await cache.fetch('e1', WEB, ['v'], VICTIM);
    expect(signed).toHaveLength(4);
    clock.advance(500);
    await cache.fetch('e1', WEB, ['d'], ATTACKER);
    expect(signed).toHaveLength(5);
  });

  it('charges a miss one token per started KiB of its audiences, in fetch and in the refusal told ahead', async () => {
    const { cache, signed, clock } = build({ missBurst: 8, missRatePerSecond: 1 });
    const kib = (tag: string, bytes: number) => tag.padEnd(bytes, 'x');
    // 3 KiB and a byte over: 4 tokens of 8; then 3 KiB: 3 more; a 2 KiB request no longer fits, a short one does.
    await cache.fetch('e1', WEB, [kib('a', 2048), kib('b', 1025)], ATTACKER);
    await cache.fetch('e1', WEB, [kib('c', 3072)], ATTACKER);
    expect(cache.missRefusal([kib('d', 2048)], ATTACKER)?.limit).toBe('rate');
    await expect(cache.fetch('e1', WEB, [kib('d', 2048)], ATTACKER)).rejects.toMatchObject({ limit: 'rate' });
    expect(cache.missRefusal(['short'], ATTACKER)).toBeUndefined();
    await cache.fetch('e1', WEB, ['short'], ATTACKER);
    expect(signed).toHaveLength(3);
    // A request bigger than the whole burst still passes once the bucket is full again.
    clock.advance(8000);
    await cache.fetch('e1', WEB, [kib('e', 16 * 2048)], ATTACKER);
    expect(signed).toHaveLength(4);
  });

  it('tells ahead, charging nothing, which requests can only be misses past the limits', async () => {
    const { cache, signed, clock } = build({ missBurst: 2, missRatePerSecond: 1 });
    expect(cache.missRefusal(['a'], ATTACKER)).toBeUndefined();
    expect(cache.missRefusal(['a'], ATTACKER)).toBeUndefined();
    await cache.fetch('e1', WEB, ['a'], ATTACKER);
    await cache.fetch('e1', WEB, ['b', 'c'], ATTACKER);
    // The burst is spent: audiences no token has are refused with what fetch would say.
    const refusal = cache.missRefusal(['new'], ATTACKER);
    expect(refusal).toBeInstanceOf(JwtSvidLimitError);
    expect(refusal?.limit).toBe('rate');
    const fetched = await cache.fetch('e1', WEB, ['new'], ATTACKER).catch((error: unknown) => error);
    expect(refusal?.message).toBe((fetched as Error).message);
    // Audiences some token has, for any entry and in any order, may be hits: not refused ahead.
    expect(cache.missRefusal(['c', 'b', 'b'], ATTACKER)).toBeUndefined();
    expect(cache.missRefusal(['a'], ATTACKER)).toBeUndefined();
    // Other uids have their own limits.
    expect(cache.missRefusal(['new'], VICTIM)).toBeUndefined();
    expect(signed).toHaveLength(2);
    // Asking charged nothing: one token is back after a second.
    clock.advance(1000);
    expect(cache.missRefusal(['new'], ATTACKER)).toBeUndefined();
    await cache.fetch('e1', WEB, ['new'], ATTACKER);
    expect(cache.missRefusal(['newer'], ATTACKER)?.limit).toBe('rate');
  });

  it('does not refuse ahead audiences being signed, and forgets audiences whose tokens are gone', async () => {
    const releases: (() => void)[] = [];
    const source = async (_entryId: string, audience: readonly string[]): Promise<JwtSvidResponse> => {
      await new Promise<void>((resolve) => releases.push(resolve));
      return api.jwtFor(WEB, audience);
    };
    const cache = new JwtSvidCache(source, { limits: { missBurst: 1, missRatePerSecond: 0.001 } });
    const pending = cache.fetch('e1', WEB, ['slow'], ATTACKER);
    // The burst is spent by the request in flight, which a request for the same audiences would join.
    expect(cache.missRefusal(['slow'], ATTACKER)).toBeUndefined();
    expect(cache.missRefusal(['other'], ATTACKER)?.limit).toBe('rate');
    while (releases.length === 0) await new Promise((resolve) => setImmediate(resolve));
    releases.shift()!();
    await pending;
    expect(cache.missRefusal(['slow'], ATTACKER)).toBeUndefined();
    cache.forget('e1');
    expect(cache.missRefusal(['slow'], ATTACKER)?.limit).toBe('rate');
  });

  it('caps the misses of one uid waiting for the server, and its share of the requests sent at once', async () => {
    const releases: (() => void)[] = [];
    const sent: number[] = [];
    const lane = new JwtSigningLane({ ...JWT_SVID_LIMITS, maxPendingMissesPerUid: 4, maxConcurrentSigning: 4 });
    const source = async (_entryId: string, audience: readonly string[]): Promise<JwtSvidResponse> => {
      sent.push(Number(audience[0]!.split('-')[1]));
      await new Promise<void>((resolve) => releases.push(resolve));
      return api.jwtFor(WEB, audience);
    };
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const cache = new JwtSvidCache(source, { lane });
    const attacks = [0, 1, 2, 3].map((i) => cache.fetch('e1', WEB, [`a-${i}`], ATTACKER));
    await expect(cache.fetch('e1', WEB, ['a-4'], ATTACKER)).rejects.toThrow(
      'uid 65534: too many JWT-SVID requests waiting for the server (at most 4); retry when some have finished',
    );
    // The same audiences join the request in flight: no new miss, no refusal.
    const joined = cache.fetch('e1', WEB, ['a-0'], ATTACKER);
    await turn();
    // One uid gets half the slots: the other half stays free for the others.
    expect(sent).toEqual([0, 1]);
    expect(lane.active).toBe(2);
    const victims = [100, 101].map((i) => cache.fetch('e1', WEB, [`v-${i}`], VICTIM));
    await turn();
    expect(sent).toEqual([0, 1, 100, 101]);
    // When a slot frees, the uid with the fewest requests running goes first.
    const third = cache.fetch('e1', WEB, ['v-102'], VICTIM);
    const fourth = cache.fetch('e1', WEB, ['v-103'], { uid: 1001 });
    await turn();
    releases.shift()!();
    await attacks[0];
    await turn();
    expect(sent).toEqual([0, 1, 100, 101, 103]);
    while (sent.length < 8 || releases.length > 0) {
      releases.shift()?.();
      await turn();
    }
    await Promise.all([...attacks, joined, ...victims, third, fourth]);
    expect(sent.slice(5).sort()).toEqual([102, 2, 3].sort());
    expect(lane.pendingFor(ATTACKER.uid)).toBe(0);
    expect(lane.active).toBe(0);
  });
});

describe('JwtSvidCache: audience sets', () => {
  it('shares a token between orders and duplicates of one audience set, never between different sets', async () => {
    const { cache, signed } = build({ missBurst: 1000 });
    const first = await cache.fetch('e1', WEB, ['b', 'a', 'a'], VICTIM);
    expect(await cache.fetch('e1', WEB, ['a', 'b'], VICTIM)).toBe(first);
    // Sets that a plain join, or a UTF-8 encoding, would confuse.
    for (const audience of [['a:b'], ['a', 'b', 'c'], ['ab'], ['1:a', 'b'], ['\uD800'], ['\uD801']]) {
      expect(await cache.fetch('e1', WEB, audience, VICTIM)).not.toBe(first);
    }
    expect(signed).toHaveLength(7);
    // The same audiences for another entry are another token.
    await cache.fetch('e2', WEB, ['a', 'b'], VICTIM);
    expect(signed).toHaveLength(8);
  });
});
