import { describe, expect, it } from 'vitest';
import { TEST_NOW, TestCa } from '../../../../test/support/test-ca.js';
import type { CaKey } from './ca-key.js';
import {
  checkUpstreamRoots,
  diffUpstreamAuthorities,
  publishedX509Authorities,
  storedUpstreamRoots,
} from './upstream-authorities.js';

const der = (ca: TestCa): Buffer => Buffer.from(ca.certificate.rawData);
const b64 = (ca: TestCa): string => der(ca).toString('base64');

type Row = Pick<
  CaKey,
  'id' | 'kind' | 'state' | 'authorityId' | 'certificateDer' | 'upstreamChain' | 'upstreamAuthorities'
>;

/** A key signed by the upstream Sigil server under `root`, holding `authorities`. */
function followedRow(id: string, state: CaKey['state'], root: TestCa, authorities: TestCa[]): Row {
  return {
    id,
    kind: 'x509',
    state,
    authorityId: `authority-${id}`,
    certificateDer: Buffer.from('ours'),
    upstreamChain: [b64(root)],
    upstreamAuthorities: authorities.map(b64),
  };
}

describe('upstream authorities (upstream authority sigil): what the bundle publishes and what a new set changes', () => {
  it('publishes a self-signed CA itself, an upstream CA chain its root, a followed key the followed roots', async () => {
    const selfSigned = await TestCa.create('example.org', { now: TEST_NOW });
    const upstreamCa = await TestCa.create('example.org', { now: TEST_NOW });
    const top1 = await TestCa.create('example.org', { now: TEST_NOW });
    const top2 = await TestCa.create('example.org', { now: TEST_NOW });
    const rows: Row[] = [
      {
        ...followedRow('a', 'old', selfSigned, []),
        upstreamChain: null,
        upstreamAuthorities: null,
        certificateDer: der(selfSigned),
      },
      { ...followedRow('b', 'old', upstreamCa, []), upstreamAuthorities: null },
      // The chain root (top1) is not published for its own sake: only as one of the followed roots.
      followedRow('c', 'active', top1, [top2]),
      {
        id: 'j',
        kind: 'jwt',
        state: 'active',
        authorityId: 'kid',
        certificateDer: null,
        upstreamChain: null,
        upstreamAuthorities: null,
      },
    ];
    expect(publishedX509Authorities(rows, TEST_NOW).map((each) => each.toString('base64'))).toEqual([
      b64(selfSigned),
      b64(upstreamCa),
      b64(top2),
    ]);
  });

  it('leaves out a followed root that has expired', async () => {
    const expired = await TestCa.create('example.org', {
      now: TEST_NOW,
      notBefore: new Date(TEST_NOW.getTime() - 7200_000),
      notAfter: new Date(TEST_NOW.getTime() - 1000),
    });
    const live = await TestCa.create('example.org', { now: TEST_NOW });
    const rows = [followedRow('c', 'active', live, [expired, live])];
    expect(publishedX509Authorities(rows, TEST_NOW).map((each) => each.toString('base64'))).toEqual([b64(live)]);
  });

  it('changes every followed key whose set differs, and names the roots added and removed', async () => {
    const [k1, k2, k3] = await Promise.all([1, 2, 3].map(() => TestCa.create('example.org', { now: TEST_NOW })));
    const rows: Row[] = [
      followedRow('old', 'old', k1!, [k1!]),
      followedRow('active', 'active', k1!, [k1!, k2!]),
      { ...followedRow('upstream-ca', 'old', k1!, []), upstreamAuthorities: null },
    ];
    const diff = diffUpstreamAuthorities(rows, [b64(k2!), b64(k3!), b64(k1!)]);
    expect(diff.rowIds).toEqual(['old', 'active']);
    expect(diff.added).toEqual([b64(k3!)]);
    expect(diff.removed).toEqual([]);
    expect(diff.orphaned).toEqual([]);
  });

  it('sees no change in another order or with duplicates', async () => {
    const [k1, k2] = await Promise.all([1, 2].map(() => TestCa.create('example.org', { now: TEST_NOW })));
    const rows = [followedRow('a', 'active', k1!, [k1!, k2!]), followedRow('b', 'prepared', k2!, [k2!, k1!])];
    expect(diffUpstreamAuthorities(rows, [b64(k2!), b64(k1!), b64(k2!)])).toEqual({
      rowIds: [],
      added: [],
      removed: [],
      orphaned: [],
    });
  });

  it('removes a root the top dropped, and names the active or prepared keys that chain to it', async () => {
    const [k1, k2] = await Promise.all([1, 2].map(() => TestCa.create('example.org', { now: TEST_NOW })));
    const rows = [
      followedRow('old', 'old', k1!, [k1!, k2!]),
      followedRow('active', 'active', k1!, [k1!, k2!]),
      followedRow('prepared', 'prepared', k2!, [k1!, k2!]),
    ];
    const diff = diffUpstreamAuthorities(rows, [b64(k2!)]);
    expect(diff.rowIds).toEqual(['old', 'active', 'prepared']);
    expect(diff.removed).toEqual([b64(k1!)]);
    // An old key signs nothing any more; the active one does.
    expect(diff.orphaned).toEqual(['authority-active']);
  });
});

describe('upstream roots: which sets are accepted and which are trusted', () => {
  it('accepts unexpired self-signed CA roots; refuses an empty set and one whose roots have all expired', async () => {
    const [k1, k2] = await Promise.all([1, 2].map(() => TestCa.create('example.org', { now: TEST_NOW })));
    const expired = await TestCa.create('example.org', {
      now: TEST_NOW,
      notBefore: new Date(TEST_NOW.getTime() - 7200_000),
      notAfter: new Date(TEST_NOW.getTime() - 1000),
    });
    expect(checkUpstreamRoots([der(k1!), der(expired)], TEST_NOW)).toEqual([der(k1!), der(expired)]);
    expect(() => checkUpstreamRoots([der(expired)], TEST_NOW)).toThrow(
      'x509_authorities: holds no unexpired certificate',
    );
    expect(() => checkUpstreamRoots([], TEST_NOW)).toThrow('x509_authorities: must hold at least one certificate');
    expect(() => checkUpstreamRoots([der(k2!), Buffer.from('junk')], TEST_NOW)).toThrow(
      'x509_authorities[1]: not a DER certificate',
    );
  });

  it('trusts the roots stored on unrevoked X.509 keys, once each; none before the first upstream-signed key', async () => {
    const [k1, k2, k3] = await Promise.all([1, 2, 3].map(() => TestCa.create('example.org', { now: TEST_NOW })));
    const row = (kind: CaKey['kind'], revoked: boolean, authorities: TestCa[] | null) => ({
      kind,
      revoked,
      upstreamAuthorities: authorities === null ? null : authorities.map(b64),
    });
    expect(storedUpstreamRoots([row('x509', false, null), row('jwt', false, null)])).toEqual([]);
    expect(
      storedUpstreamRoots([
        row('x509', false, [k1!, k2!]),
        row('x509', false, [k2!]),
        row('x509', true, [k3!]),
        row('x509', false, null),
      ]),
    ).toEqual([der(k1!), der(k2!)]);
  });
});
