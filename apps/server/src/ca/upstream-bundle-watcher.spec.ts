import { TrustBundle, TrustBundleSet, TrustDomain } from '@sigil/spiffe';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { RecordingAuthorityMetrics } from '../../../../test/support/authority.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { TEST_NOW, TestCa } from '../../../../test/support/test-ca.js';
import type { UpstreamAuthoritiesChange } from './upstream-authorities.js';
import { type UpstreamAuthoritiesStore, UpstreamBundleWatcher } from './upstream-bundle-watcher.js';

const TD = TrustDomain.parse('example.org');
const b64 = (der: Uint8Array): string => Buffer.from(der).toString('base64');
const der = (ca: TestCa): Uint8Array => new Uint8Array(ca.certificate.rawData);

/** A journal stand-in: records every set it is asked to follow; fails while `failing` is set. */
class RecordingStore implements UpstreamAuthoritiesStore {
  readonly calls: string[][] = [];
  failing: Error | undefined;

  async followUpstreamAuthorities(roots: readonly Uint8Array[]): Promise<UpstreamAuthoritiesChange> {
    this.calls.push(roots.map(b64));
    if (this.failing !== undefined) throw this.failing;
    return { rowIds: ['key'], added: roots.map(b64), removed: [], orphaned: [] };
  }
}

function setup() {
  const store = new RecordingStore();
  const metrics = new RecordingAuthorityMetrics();
  const watcher = new UpstreamBundleWatcher({ trustDomain: TD }, store, new FakeClock(TEST_NOW), metrics);
  return { store, metrics, watcher };
}

const delivery = (...bundles: TrustBundle[]): TrustBundleSet => new TrustBundleSet(bundles);
const bundleOf = (trustDomain: string, ...cas: TestCa[]): TrustBundle =>
  TrustBundle.create(TrustDomain.parse(trustDomain), { x509Authorities: cas.map(der) });

describe('UpstreamBundleWatcher: what it makes of each Workload API delivery', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("stores our trust domain's roots (not a federated one's) once per change", async () => {
    const [k1, k2, foreign] = await Promise.all([
      TestCa.create(TD, { now: TEST_NOW }),
      TestCa.create(TD, { now: TEST_NOW }),
      TestCa.create('other.org', { now: TEST_NOW }),
    ]);
    const { store, metrics, watcher } = setup();
    await watcher.receive(delivery(bundleOf('example.org', k1), bundleOf('other.org', foreign)));
    expect(store.calls).toEqual([[b64(der(k1))]]);

    // The same roots in another order: nothing to store.
    await watcher.receive(delivery(bundleOf('example.org', k1)));
    await watcher.receive(delivery(bundleOf('example.org', k2, k1)));
    await watcher.receive(delivery(bundleOf('example.org', k1, k2)));
    expect(store.calls).toEqual([[b64(der(k1))], [b64(der(k2)), b64(der(k1))]]);
    expect(metrics.upstreamBundle).toEqual(['changed', 'changed']);
  });

  it('keeps the last good roots when a delivery has no usable bundle of our trust domain', async () => {
    const [k1, foreign] = await Promise.all([TestCa.create(TD, { now: TEST_NOW }), TestCa.create('other.org')]);
    const expired = await TestCa.create(TD, {
      now: TEST_NOW,
      notBefore: new Date(TEST_NOW.getTime() - 7200_000),
      notAfter: new Date(TEST_NOW.getTime() - 1000),
    });
    const { store, metrics, watcher } = setup();
    await watcher.receive(delivery(bundleOf('example.org', k1)));
    await watcher.receive(delivery(bundleOf('other.org', foreign)));
    await watcher.receive(delivery(bundleOf('example.org')));
    await watcher.receive(delivery(bundleOf('example.org', expired)));
    expect(store.calls).toEqual([[b64(der(k1))]]);
    expect(metrics.upstreamBundle).toEqual(['changed', 'failed:bundle', 'failed:bundle', 'failed:bundle']);
  });

  it('retries a set it could not store after a backoff, and a newer delivery replaces it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const [k1, k2, k3] = await Promise.all([1, 2, 3].map(() => TestCa.create(TD, { now: TEST_NOW })));
    const { store, metrics, watcher } = setup();
    store.failing = new Error('database unavailable');
    await watcher.receive(delivery(bundleOf('example.org', k1)));
    expect(metrics.upstreamBundle).toEqual(['failed:store']);

    // The first retry (after 1 s) fails too; the second (2 s later) stores it.
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.calls).toHaveLength(2);
    store.failing = undefined;
    await vi.advanceTimersByTimeAsync(2000);
    expect(store.calls).toEqual([[b64(der(k1))], [b64(der(k1))], [b64(der(k1))]]);
    expect(metrics.upstreamBundle).toEqual(['failed:store', 'failed:store', 'changed']);

    // A failed set is dropped for a newer delivery: only the newer one is retried.
    store.failing = new Error('database unavailable');
    await watcher.receive(delivery(bundleOf('example.org', k2)));
    store.failing = undefined;
    await watcher.receive(delivery(bundleOf('example.org', k3)));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(store.calls.slice(3)).toEqual([[b64(der(k2))], [b64(der(k3))]]);
  });
});
