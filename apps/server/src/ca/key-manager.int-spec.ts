import 'reflect-metadata';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { createCsr, createIntermediateCa, generateKeyPair } from '@sigil/pki';
import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestAuthority, type TestAuthority } from '../../../../test/support/authority.js';
import {
  EMBEDDED_SERIAL_REASON,
  isEmbeddedRun,
  useTestDatabase,
  type TestDatabase,
} from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { AppError } from '../common/errors.js';
import type { AuthorityKey } from './authority-key.js';
import type { AuthorityKind } from './ca-key.js';
import { MAX_UPSTREAM_ROOTS } from './upstream-authorities.js';
import type { UpstreamSigilAuthority } from './upstream-sigil.js';

const T0 = Date.UTC(2026, 0, 1);
const WORKLOAD = SpiffeId.parse('spiffe://example.org/workload');

// The thresholds written from SPIRE's rule (half and five sixths of the lifetime), independently of rotation-plan.ts.
const half = (key: AuthorityKey) => key.notBefore.getTime() + (key.notAfter.getTime() - key.notBefore.getTime()) / 2;
const fiveSixths = (key: AuthorityKey) =>
  key.notAfter.getTime() - Math.floor((key.notAfter.getTime() - key.notBefore.getTime()) / 6);

describe('KeyManager (CA key journal and rotation)', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let authority: TestAuthority;

  beforeAll(async () => {
    db = await useTestDatabase();
  });
  afterAll(async () => {
    await db?.close();
  });
  beforeEach(async () => {
    await db.dataSource.query('DELETE FROM ca_keys');
    await db.dataSource.query('DELETE FROM bundles');
    await db.dataSource.query('DELETE FROM shared_jwt_authorities');
    clock = new FakeClock(T0);
    authority = await createTestAuthority(db.dataSource, { clock });
  });

  /** The authority the CA signs with now: the leaf's AKI (X.509) or the token's kid (JWT). */
  async function signingAuthorityId(kind: AuthorityKind, on: TestAuthority = authority): Promise<string> {
    if (kind === 'jwt') {
      const { token } = await on.ca.signJwtSvid({ spiffeId: WORKLOAD, audience: ['db'] });
      return decodeProtectedHeader(token).kid ?? '';
    }
    const csr = await createCsr({ keys: await generateKeyPair() });
    const { certificateChainDer } = on.ca.signX509Svid({ spiffeId: WORKLOAD, csr: csr.pem });
    const leaf = new x509.X509Certificate(certificateChainDer[0]!);
    return leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId!;
  }

  function publishedIds(kind: AuthorityKind, on: TestAuthority = authority): string[] {
    const bundle = on.bundles.ownBundle();
    if (kind === 'jwt') return [...bundle.jwtAuthorities.keys()].sort();
    return bundle.x509Authorities
      .map((certificate) => certificate.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId)
      .sort();
  }

  it('creates and activates an X.509 CA and a JWT key at first start, published in bundle sequence 1', async () => {
    const result = await authority.keys.tick({ waitForLock: true });
    expect(result.leader).toBe(true);
    expect(result.changes.map((change) => `${change.kind}:${change.transition}`)).toEqual([
      'x509:activated',
      'jwt:activated',
    ]);
    expect(authority.metrics.transitions).toEqual(['x509:activated', 'jwt:activated']);
    expect(authority.ca.isReady()).toBe(true);
    for (const kind of ['x509', 'jwt'] as const) {
      const slots = authority.keys.slots(kind);
      expect(slots.prepared).toBeUndefined();
      expect(slots.old).toEqual([]);
      expect(slots.active?.activatedAt).toEqual(new Date(T0));
      expect(slots.active!.notAfter.getTime()).toBe(T0 + 24 * 3600 * 1000);
      expect(publishedIds(kind)).toEqual([slots.active!.authorityId]);
      expect(await signingAuthorityId(kind)).toBe(slots.active!.authorityId);
    }
    expect(authority.keys.slots('jwt').active!.authorityId).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(authority.bundles.ownBundle().sequenceNumber).toBe(1);
    expect(authority.bundles.ownJwks().spiffe_refresh_hint).toBe(300);
    expect((await authority.keys.tick()).changes).toEqual([]);
    expect(authority.bundles.ownBundle().sequenceNumber).toBe(1);
  });

  it.each(['x509', 'jwt'] as const)(
    '%s: prepares at 1/2 (published before it signs), activates at 5/6, prunes the old key at its expiry',
    async (kind) => {
      await authority.keys.tick();
      const first = authority.keys.slots(kind).active!;
      const ownChanges = async () =>
        (await authority.keys.tick()).changes.filter((change) => change.kind === kind).map((c) => c.transition);

      clock.set(new Date(half(first) - 1));
      expect(await ownChanges()).toEqual([]);
      expect(authority.keys.slots(kind).prepared).toBeUndefined();

      clock.set(new Date(half(first)));
      expect(await ownChanges()).toEqual(['prepared']);
      const next = authority.keys.slots(kind).prepared!;
      expect(next.notBefore.getTime()).toBeLessThanOrEqual(half(first));
      // Published in the bundle at once, while the active key still signs everything.
      expect(publishedIds(kind)).toEqual([first.authorityId, next.authorityId].sort());
      expect(await signingAuthorityId(kind)).toBe(first.authorityId);

      clock.set(new Date(fiveSixths(first) - 1));
      expect(await ownChanges()).toEqual([]);
      expect(await signingAuthorityId(kind)).toBe(first.authorityId);

      clock.set(new Date(fiveSixths(first)));
      const sequenceBefore = authority.bundles.ownBundle().sequenceNumber;
      expect(await ownChanges()).toEqual(['retired', 'activated']);
      expect(authority.keys.slots(kind).active!.authorityId).toBe(next.authorityId);
      expect(authority.keys.slots(kind).old.map((key) => key.authorityId)).toEqual([first.authorityId]);
      expect(await signingAuthorityId(kind)).toBe(next.authorityId);
      // Activation changes no published key: the old one stays until it expires.
      expect(publishedIds(kind)).toEqual([first.authorityId, next.authorityId].sort());
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequenceBefore);

      // The old key stays published until it expires. (By then the next key is itself half-way through its life,
      // so its successor is prepared around the same time.)
      clock.set(new Date(first.notAfter.getTime() - 1));
      expect(await ownChanges()).not.toContain('pruned');
      expect(publishedIds(kind)).toContain(first.authorityId);
      const sequenceAtExpiry = authority.bundles.ownBundle().sequenceNumber!;
      clock.set(first.notAfter);
      expect(await ownChanges()).toContain('pruned');
      expect(authority.keys.slots(kind).old).toEqual([]);
      expect(publishedIds(kind)).not.toContain(first.authorityId);
      expect(publishedIds(kind)).toContain(next.authorityId);
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequenceAtExpiry + 1);
    },
  );

  it('increases spiffe_sequence by one on every bundle change and keeps it across a restart', async () => {
    await authority.keys.tick();
    const sequences = [authority.bundles.ownBundle().sequenceNumber];
    const x509Key = authority.keys.slots('x509').active!;
    const jwtKey = authority.keys.slots('jwt').active!;
    expect(x509Key.notAfter).toEqual(jwtKey.notAfter);
    for (const at of [half(x509Key), half(jwtKey), fiveSixths(x509Key), fiveSixths(jwtKey), x509Key.notAfter]) {
      clock.set(new Date(at));
      await authority.keys.tick();
      sequences.push(authority.bundles.ownBundle().sequenceNumber);
    }
    // prepared x509, prepared jwt, (activations: no change), both first keys pruned (and successors prepared) at once
    expect(sequences).toEqual([1, 2, 3, 3, 3, 4]);

    // A restart is a fresh authority (nothing in memory) on the same database.
    const restarted = await createTestAuthority(db.dataSource, { clock, kek: authority.kek });
    const result = await restarted.keys.tick({ waitForLock: true });
    expect(result.changes).toEqual([]);
    expect(restarted.bundles.ownBundle().sequenceNumber).toBe(4);
    expect(restarted.bundles.ownBundle().equals(authority.bundles.ownBundle())).toBe(true);

    await restarted.keys.prepare('jwt');
    expect(restarted.bundles.ownBundle().sequenceNumber).toBe(5);
    await authority.keys.tick();
    expect(authority.bundles.ownBundle().sequenceNumber).toBe(5);
  });

  // Replicas are separate processes on PostgreSQL; on the embedded database there is only one server.
  it.skipIf(isEmbeddedRun())(
    `lets one of two replicas rotate at a time, and the other picks up the keys (${EMBEDDED_SERIAL_REASON})`,
    async () => {
      const otherOn = await db.connectAnother();
      const other = await createTestAuthority(otherOn, { clock, kek: authority.kek });

      const starts = await Promise.all([authority.keys.tick(), other.keys.tick()]);
      expect(starts.filter((result) => result.changes.length > 0)).toHaveLength(1);
      await Promise.all([authority.keys.tick(), other.keys.tick()]);
      const active = authority.keys.slots('x509').active!;
      expect(other.keys.slots('x509').active?.authorityId).toBe(active.authorityId);
      expect(other.keys.slots('jwt').active?.authorityId).toBe(authority.keys.slots('jwt').active!.authorityId);
      expect(
        await db.dataSource.query('SELECT kind, count(*)::int AS n FROM ca_keys GROUP BY kind ORDER BY kind'),
      ).toEqual([
        { kind: 'jwt', n: 1 },
        { kind: 'x509', n: 1 },
      ]);

      clock.set(new Date(half(active)));
      const rotations = await Promise.all([authority.keys.tick(), other.keys.tick()]);
      expect(rotations.filter((result) => result.changes.length > 0)).toHaveLength(1);
      // Either replica may have won the lock; after one more tick each must hold the winner's prepared key.
      await Promise.all([authority.keys.tick(), other.keys.tick()]);
      const prepared = authority.keys.slots('x509').prepared;
      expect(prepared).toBeDefined();
      expect(other.keys.slots('x509').prepared?.authorityId).toBe(prepared!.authorityId);
      expect(other.bundles.ownBundle().equals(authority.bundles.ownBundle())).toBe(true);

      // The replica that did not rotate signs with the same active key, from its own memory.
      expect(await signingAuthorityId('x509', other)).toBe(active.authorityId);
      await otherOn.destroy();
    },
  );

  describe('local authority operations', () => {
    beforeEach(async () => {
      await authority.keys.tick();
    });

    it('prepares on demand (replacing an unused prepared key) and activates only the named prepared key', async () => {
      const active = authority.keys.slots('x509').active!;
      const first = await authority.keys.prepare('x509');
      expect(first.state).toBe('prepared');
      const second = await authority.keys.prepare('x509');
      expect(authority.keys.slots('x509').prepared!.authorityId).toBe(second.authorityId);
      expect(publishedIds('x509')).toEqual([active.authorityId, second.authorityId].sort());
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(3);
      // Keys made at the same instant keep one order: a tick with nothing to do changes nothing.
      expect((await authority.keys.tick()).changes).toEqual([]);
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(3);

      await expect(authority.keys.activate('x509', first.authorityId)).rejects.toMatchObject({
        kind: 'invalid_argument',
        message: `authorityId: '${first.authorityId}' is not the prepared x509 authority (that is '${second.authorityId}')`,
      });
      const activated = await authority.keys.activate('x509', second.authorityId);
      expect(activated.state).toBe('active');
      expect(authority.keys.slots('x509').old.map((key) => key.authorityId)).toEqual([active.authorityId]);
      expect(await signingAuthorityId('x509')).toBe(second.authorityId);
      await expect(authority.keys.activate('x509', second.authorityId)).rejects.toMatchObject({
        kind: 'failed_precondition',
        message: 'x509 authority: there is no prepared key to activate',
      });
      expect(authority.metrics.transitions).toEqual([
        'x509:activated',
        'jwt:activated',
        'x509:prepared',
        'x509:pruned',
        'x509:prepared',
        'x509:retired',
        'x509:activated',
      ]);
    });

    it('follows the upstream bundle (upstream authority sigil): every followed key stores the new set, published at once', async () => {
      const [top1, top2] = await Promise.all([1, 2].map(() => TestCa.create('example.org', { now: new Date(T0) })));
      const b64 = (ca: TestCa) => Buffer.from(ca.certificate.rawData).toString('base64');
      const published = () =>
        authority.bundles
          .ownBundle()
          .x509AuthoritiesDer()
          .map((der) => Buffer.from(der).toString('base64'))
          .sort();
      const stored = async (id: string): Promise<string[] | null> =>
        (await db.dataSource.query('SELECT upstream_authorities FROM ca_keys WHERE id = $1', [id]))[0]
          .upstream_authorities;
      // The journal row as the factory writes a key the upstream server signed under top1.
      const active = authority.keys.slots('x509').active!;
      await db.dataSource.query(
        'UPDATE ca_keys SET upstream_chain = $1::jsonb, upstream_authorities = $1::jsonb WHERE id = $2',
        [JSON.stringify([b64(top1!)]), active.id],
      );
      const sequence = authority.bundles.ownBundle().sequenceNumber!;

      const added = await authority.keys.followUpstreamAuthorities(
        [top1!, top2!].map((ca) => new Uint8Array(ca.certificate.rawData)),
      );
      expect(added).toEqual({
        rowIds: [active.id],
        added: [b64(top2!)],
        removed: [],
        orphaned: [],
        jwtAdded: [],
        jwtRemoved: [],
      });
      expect(published()).toEqual([b64(top1!), b64(top2!)].sort());
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);

      // The same set in another order writes nothing.
      const same = await authority.keys.followUpstreamAuthorities(
        [top2!, top1!].map((ca) => new Uint8Array(ca.certificate.rawData)),
      );
      expect(same.rowIds).toEqual([]);
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);

      // The top dropped top1, the root the active key chains to: refused (what the key signs would stop verifying),
      // nothing written; the stored set, the bundle and its sequence stay.
      await expect(
        authority.keys.followUpstreamAuthorities([new Uint8Array(top2!.certificate.rawData)]),
      ).rejects.toMatchObject({
        kind: 'failed_precondition',
        message: expect.stringContaining(
          `upstream roots refused: they drop the root that X.509 authorities ${active.authorityId} chain to`,
        ),
      });
      expect(await stored(active.id)).toEqual([b64(top1!), b64(top2!)]);
      expect(published()).toEqual([b64(top1!), b64(top2!)].sort());
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);

      // Not self-signed CA certificates, or more than the cap: refused before the journal is touched.
      const intermediate = await top2!.createIntermediate();
      // Self-signed, but basicConstraints cA=false.
      const notCa = await TestCa.create('example.org', { now: new Date(T0), isCa: false });
      for (const [roots, problem] of [
        [
          [top1!.certificate, notCa.certificate],
          'x509_authorities[1]: is not a CA certificate (basicConstraints cA=false)',
        ],
        [[top1!.certificate, intermediate.certificate], 'x509_authorities[1]: is not a self-signed root'],
        [Array.from({ length: MAX_UPSTREAM_ROOTS + 1 }, () => top1!.certificate), 'x509_authorities: at most 32 roots'],
      ] as const) {
        await expect(
          authority.keys.followUpstreamAuthorities(roots.map((certificate) => new Uint8Array(certificate.rawData))),
        ).rejects.toMatchObject({ kind: 'invalid_argument', message: expect.stringContaining(problem) });
      }
      expect(await stored(active.id)).toEqual([b64(top1!), b64(top2!)]);

      // Once the active key chains to top2 (the operator moved to a key the top's current key signed), dropping
      // top1 is followed: it leaves our bundle too.
      await db.dataSource.query('UPDATE ca_keys SET upstream_chain = $1::jsonb WHERE id = $2', [
        JSON.stringify([b64(top2!)]),
        active.id,
      ]);
      const removed = await authority.keys.followUpstreamAuthorities([new Uint8Array(top2!.certificate.rawData)]);
      expect(removed).toEqual({
        rowIds: [active.id],
        added: [],
        removed: [b64(top1!)],
        orphaned: [],
        jwtAdded: [],
        jwtRemoved: [],
      });
      expect(published()).toEqual([b64(top2!)]);
      expect(await stored(active.id)).toEqual([b64(top2!)]);
      expect(authority.keys.storedUpstreamAuthorities().map((der) => der.toString('base64'))).toEqual([b64(top2!)]);

      // Other journal writes (the key retiring) leave the stored set alone.
      const next = await authority.keys.prepare('x509');
      await authority.keys.activate('x509', next.authorityId);
      expect(await stored(active.id)).toEqual([b64(top2!)]);
      expect(published()).toContain(b64(top2!));
    });

    it("follows the upstream bundle's JWT authorities: unexpired ones published beside ours, never in place of ours, dropped when the upstream drops them", async () => {
      const top = await TestCa.create('example.org', { now: new Date(T0) });
      const roots = [new Uint8Array(top.certificate.rawData)];
      const active = authority.keys.slots('x509').active!;
      await db.dataSource.query(
        'UPDATE ca_keys SET upstream_chain = $1::jsonb, upstream_authorities = $1::jsonb WHERE id = $2',
        [JSON.stringify([Buffer.from(roots[0]!).toString('base64')]), active.id],
      );
      const spki = () =>
        generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
      const now = clock.now().getTime();
      const own = authority.keys.slots('jwt').active!;
      const topKey = { kid: 'top-key', publicKeyDer: spki(), notAfter: new Date(now + 3600_000) };
      const expired = { kid: 'expired-key', publicKeyDer: spki(), notAfter: new Date(now - 1000) };
      // Our own key as the upstream answers it back, here with another public key: ours stays.
      const ownEcho = { kid: own.authorityId, publicKeyDer: spki(), notAfter: new Date(now + 3600_000) };
      const sequence = authority.bundles.ownBundle().sequenceNumber!;

      const followed = await authority.keys.followUpstreamAuthorities(roots, [topKey, expired, ownEcho]);
      expect([...followed.jwtAdded].sort()).toEqual(['top-key', own.authorityId].sort());
      expect(followed.jwtRemoved).toEqual([]);
      const bundle = authority.bundles.ownBundle();
      expect(bundle.sequenceNumber).toBe(sequence + 1);
      expect(publishedIds('jwt')).toEqual([own.authorityId, 'top-key'].sort());
      expect(bundle.findJwtAuthority(own.authorityId)).toEqual(
        createPublicKey({ key: own.publicKeyDer, format: 'der', type: 'spki' }).export({ format: 'jwk' }),
      );
      // Answered to our own downstream servers with its expiry.
      expect(await authority.keys.bundleJwtAuthorities()).toContainEqual(topKey);

      // The same answer again writes nothing.
      const same = await authority.keys.followUpstreamAuthorities(roots, [topKey, expired, ownEcho]);
      expect(same.jwtAdded).toEqual([]);
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);
      // An upstream server that does not answer JWT authorities leaves them as they are.
      await authority.keys.followUpstreamAuthorities(roots);
      expect(publishedIds('jwt')).toContain('top-key');

      const dropped = await authority.keys.followUpstreamAuthorities(roots, [ownEcho]);
      expect(dropped.jwtRemoved).toEqual(['top-key']);
      expect(publishedIds('jwt')).toEqual([own.authorityId]);
    });

    it("publishes the upstream's key, not a downstream server's, for a kid both have (a deeper server published it first)", async () => {
      const top = await TestCa.create('example.org', { now: new Date(T0) });
      const roots = [new Uint8Array(top.certificate.rawData)];
      const active = authority.keys.slots('x509').active!;
      await db.dataSource.query(
        'UPDATE ca_keys SET upstream_chain = $1::jsonb, upstream_authorities = $1::jsonb WHERE id = $2',
        [JSON.stringify([Buffer.from(roots[0]!).toString('base64')]), active.id],
      );
      const spki = () =>
        generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' });
      const jwk = (der: Buffer) => createPublicKey({ key: der, format: 'der', type: 'spki' }).export({ format: 'jwk' });
      const notAfter = new Date(clock.now().getTime() + 3600_000);
      const topKey = { kid: 'top-next', publicKeyDer: spki(), notAfter };
      const deeper = { kid: 'top-next', publicKeyDer: spki(), notAfter };
      // A server nested under us saw the kid in the top's bundle before we followed the top.
      await authority.keys.publishDownstreamJwtAuthority('spiffe://example.org/deeper', deeper, {
        maxLifetimeSeconds: 86_400,
        maxPerCaller: 16,
      });
      expect(authority.bundles.ownBundle().findJwtAuthority('top-next')).toEqual(jwk(deeper.publicKeyDer));

      await authority.keys.followUpstreamAuthorities(roots, [topKey]);
      expect(authority.bundles.ownBundle().findJwtAuthority('top-next')).toEqual(jwk(topKey.publicKeyDer));
      // Nor answered to our downstream servers.
      const answered = (await authority.keys.bundleJwtAuthorities()).filter((key) => key.kid === 'top-next');
      expect(answered).toEqual([topKey]);
      // Another run keeps it so.
      expect((await authority.keys.tick()).changes).toEqual([]);
      expect(authority.bundles.ownBundle().findJwtAuthority('top-next')).toEqual(jwk(topKey.publicKeyDer));
    });

    it('taints then revokes an old key, which leaves the bundle; refuses other states and orders', async () => {
      const old = authority.keys.slots('jwt').active!;
      const prepared = await authority.keys.prepare('jwt');
      await expect(authority.keys.taint('jwt', old.authorityId)).rejects.toMatchObject({
        kind: 'failed_precondition',
        message: `authorityId: only an old jwt authority can be tainted, '${old.authorityId}' is active`,
      });
      await authority.keys.activate('jwt', prepared.authorityId);
      await expect(authority.keys.revoke('jwt', old.authorityId)).rejects.toMatchObject({
        kind: 'failed_precondition',
        message: `authorityId: '${old.authorityId}' must be tainted before it is revoked`,
      });
      await expect(authority.keys.taint('jwt', 'nope')).rejects.toMatchObject({
        kind: 'not_found',
        message: "authorityId: no jwt authority 'nope'",
      });

      expect((await authority.keys.taint('jwt', old.authorityId)).tainted).toBe(true);
      await expect(authority.keys.taint('jwt', old.authorityId)).rejects.toMatchObject({
        message: `authorityId: '${old.authorityId}' is already tainted`,
      });
      expect(publishedIds('jwt')).toContain(old.authorityId);
      const sequence = authority.bundles.ownBundle().sequenceNumber!;

      expect((await authority.keys.revoke('jwt', old.authorityId)).revoked).toBe(true);
      expect(publishedIds('jwt')).toEqual([prepared.authorityId]);
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence + 1);
    });
  });

  describe('upstream authority sigil: new JWT keys published to the upstream server', () => {
    const MAX_TTL_SECONDS = 12 * 3600;
    let top: TestCa;
    let upstream: {
      /** The kids the upstream server took, in order. */
      readonly published: string[];
      /** Publications asked for, taken or not. */
      attempts: number;
      /** The upstream server's refusal while set. */
      refuse: string | undefined;
    };

    /**
     * Our factory as with `--upstream-authority sigil`, the upstream server replaced by one in process: it signs our
     * CA with a test root and takes JWT keys by its rule (expiry cut to its downstream_ca_max_ttl), or refuses them.
     */
    beforeEach(async () => {
      top = await TestCa.create('example.org', { now: new Date(T0 - 3600_000) });
      const rootDer = Buffer.from(top.certificate.rawData);
      upstream = { published: [], attempts: 0, refuse: undefined };
      const state = upstream;
      const fake: Pick<UpstreamSigilAuthority, 'signCa' | 'publishJwtAuthority' | 'taintedAuthorities'> = {
        signCa: async (keys, now) => {
          const ca = await createIntermediateCa({
            trustDomain: TrustDomain.parse('example.org'),
            publicKey: keys.publicKey,
            issuer: { certificate: top.certificate, privateKey: top.keys.privateKey },
            ttlSeconds: MAX_TTL_SECONDS,
            now,
          });
          return {
            certificateDer: Buffer.from(ca.der),
            upstreamChainDer: [rootDer],
            upstreamAuthoritiesDer: [rootDer],
          };
        },
        publishJwtAuthority: async (authority, now) => {
          state.attempts += 1;
          if (state.refuse !== undefined) throw new AppError('unavailable', state.refuse);
          state.published.push(authority.kid);
          const latest = Math.floor(now.getTime() / 1000) * 1000 + MAX_TTL_SECONDS * 1000;
          return { ...authority, notAfter: new Date(Math.min(authority.notAfter.getTime(), latest)) };
        },
        taintedAuthorities: async () => new Set<string>(),
      };
      const factory = (authority.keys as unknown as { factory: { upstreamSigil: unknown } }).factory;
      factory.upstreamSigil = fake;
      await authority.keys.tick({ waitForLock: true });
    });

    const transitions = (result: { changes: readonly { kind: string; transition: string }[] }) =>
      result.changes.map((change) => `${change.kind}:${change.transition}`);

    it("keeps the expiry the upstream server answered (cut to its bound) as the JWT key's", async () => {
      const jwt = authority.keys.slots('jwt').active!;
      expect(upstream.published).toEqual([jwt.authorityId]);
      expect(jwt.notAfter.getTime()).toBe(T0 + MAX_TTL_SECONDS * 1000);
      expect(authority.keys.slots('x509').active!.notAfter.getTime()).toBe(T0 + MAX_TTL_SECONDS * 1000);
    });

    it('a refused JWT publication leaves the JWT keys as they are and the X.509 rotation goes on in the same tick', async () => {
      const x509 = authority.keys.slots('x509').active!;
      const jwt = authority.keys.slots('jwt').active!;
      upstream.refuse = 'upstream: 422 jwt_authority: already has 16 unexpired JWT keys published';

      // Half-way: both kinds prepare; the JWT key cannot be published, the X.509 CA is prepared all the same.
      // (Our CA's validity starts a little before it was signed: the later of the two thresholds.)
      clock.set(new Date(Math.max(half(x509), half(jwt))));
      expect(transitions(await authority.keys.tick())).toEqual(['x509:prepared']);
      expect(upstream.attempts).toBe(2); // the bootstrap's, then this tick's one (none again under the lock)
      expect(authority.keys.slots('jwt')).toMatchObject({ prepared: undefined, active: { id: jwt.id } });
      expect(authority.metrics.upstreamBundle).toEqual(['failed:jwt_publish']);

      // Five sixths: the X.509 CA is activated; the JWT key stays active (no create, no activation of a new one).
      clock.set(new Date(Math.max(fiveSixths(x509), fiveSixths(jwt))));
      expect(transitions(await authority.keys.tick())).toEqual(['x509:retired', 'x509:activated']);
      expect(upstream.attempts).toBe(3);
      expect(authority.keys.slots('jwt')).toMatchObject({ prepared: undefined, active: { id: jwt.id } });
      expect(await signingAuthorityId('jwt')).toBe(jwt.authorityId);

      // Taken again: the next tick publishes one key, and prepares and activates it.
      upstream.refuse = undefined;
      clock.advance(10_000);
      expect(transitions(await authority.keys.tick())).toEqual(['jwt:prepared', 'jwt:retired', 'jwt:activated']);
      expect(upstream.attempts).toBe(4);
      expect(authority.keys.slots('jwt').active!.authorityId).toBe(upstream.published[1]);
    });

    it('keeps an unused published JWT key across ticks that do not store it, while more than half its lifetime is left', async () => {
      const jwt = authority.keys.slots('jwt').active!;
      const withRotationLock = authority.journal.withRotationLock.bind(authority.journal);
      const lockHeldElsewhere = () =>
        (authority.journal.withRotationLock = (async () => ({ acquired: false })) as typeof withRotationLock);
      lockHeldElsewhere();

      clock.set(new Date(half(jwt)));
      for (let i = 0; i < 5; i += 1) {
        expect((await authority.keys.tick()).leader).toBe(false);
        clock.advance(10_000);
      }
      expect(upstream.published).toHaveLength(2); // the bootstrap's and one for these five ticks
      const ahead = upstream.published[1]!;

      // A run whose transaction fails does not use it up either.
      authority.journal.withRotationLock = withRotationLock;
      const replace = authority.bundles.replaceOwnAuthorities.bind(authority.bundles);
      authority.bundles.replaceOwnAuthorities = async () => {
        throw new Error('database gone');
      };
      await expect(authority.keys.tick()).rejects.toThrow('database gone');
      authority.bundles.replaceOwnAuthorities = replace;
      expect(authority.keys.slots('jwt').prepared).toBeUndefined();

      // The run that stores a key stores that one, published once.
      expect(transitions(await authority.keys.tick())).toContain('jwt:prepared');
      expect(authority.keys.slots('jwt').prepared!.authorityId).toBe(ahead);
      expect(upstream.published).toHaveLength(2);
      expect((await authority.keys.tick()).changes).toEqual([]);
      expect(upstream.published).toHaveLength(2);
    });

    it('publishes a new key once the unused one has less than half its lifetime left', async () => {
      const jwt = authority.keys.slots('jwt').active!;
      authority.journal.withRotationLock = (async () => ({ acquired: false })) as never;
      clock.set(new Date(half(jwt)));
      await authority.keys.tick();
      expect(upstream.published).toHaveLength(2);
      const ahead = { notBefore: clock.now().getTime(), notAfter: jwt.notAfter.getTime() };
      // The kept key's lifetime is cut to the bound from when it was published: half of it passes later.
      clock.set(new Date(Math.floor(ahead.notBefore / 1000) * 1000 + (MAX_TTL_SECONDS * 1000) / 2 - 1000));
      await authority.keys.tick();
      expect(upstream.published).toHaveLength(2);
      clock.advance(1000);
      await authority.keys.tick();
      expect(upstream.published).toHaveLength(3);
    });
  });
});
