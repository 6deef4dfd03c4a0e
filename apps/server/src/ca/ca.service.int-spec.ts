import 'reflect-metadata';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import {
  certificatesToPem,
  createCsr,
  createIntermediateCa,
  createRootCa,
  exportPublicKeySpki,
  generateKeyPair,
  privateKeyToPem,
} from '@sigil/pki';
import { SpiffeId, TrustDomain, parseAndValidateJwtSvid, verifyX509Svid } from '@sigil/spiffe';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestAuthority, type TestAuthority } from '../../../../test/support/authority.js';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { opensslVerify } from '../../../../test/support/openssl.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';

const T0 = Date.UTC(2026, 0, 1);
const TRUST_DOMAIN = TrustDomain.parse('example.org');
const WORKLOAD = SpiffeId.parse('spiffe://example.org/ns/prod/sa/web');

describe('CaService', () => {
  let db: TestDatabase;
  let clock: FakeClock;
  let authority: TestAuthority;
  let scratch: string;

  beforeAll(async () => {
    db = await useTestDatabase();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-ca-'));
  });
  afterAll(async () => {
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  async function startAuthority(flags = {}): Promise<void> {
    await db.dataSource.query('DELETE FROM ca_keys');
    await db.dataSource.query('DELETE FROM bundles');
    clock = new FakeClock(T0);
    authority = await createTestAuthority(db.dataSource, { clock, flags });
    await authority.keys.tick({ waitForLock: true });
  }

  describe('self-signed CA', () => {
    beforeEach(async () => {
      await startAuthority();
    });

    it('signs an X.509-SVID from a CSR that verifies against the bundle, with libs/spiffe and openssl', async () => {
      const csr = await createCsr({ keys: await generateKeyPair() });
      const svid = authority.ca.signX509Svid({ spiffeId: WORKLOAD, csr: csr.pem, dnsNames: ['web.example.org'] });
      expect(svid.certificateChainDer).toHaveLength(1);
      expect(svid.expiresAt).toEqual(new Date(T0 + 3600 * 1000));

      const bundle = authority.bundles.ownBundle();
      const verified = await verifyX509Svid(svid.certificateChainDer, bundle, { now: clock.now() });
      expect(verified.spiffeId.toString()).toBe(WORKLOAD.toString());
      const leaf = new x509.X509Certificate(svid.certificateChainDer[0]!);
      expect(leaf.notAfter).toEqual(svid.expiresAt);
      expect(leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()).toEqual(
        expect.arrayContaining([
          { type: 'url', value: WORKLOAD.toString() },
          { type: 'dns', value: 'web.example.org' },
        ]),
      );

      const openssl = await opensslVerify({
        root: bundle.x509AuthoritiesDer()[0]!,
        leaf: svid.certificateChainDer[0]!,
        at: clock.now(),
      });
      expect(openssl.output).toMatch(/OK/);
      expect(openssl.ok).toBe(true);
      expect(authority.metrics.signed).toEqual(['x509']);
    });

    for (const workers of [2, 0]) {
      it(`signs agents' CSR chunks ${workers > 0 ? `on ${workers} signing workers` : 'on the event loop'}, with the key active right after a rotation`, async () => {
        await startAuthority({ signingWorkers: String(workers) });
        try {
          const keys = await generateKeyPair();
          const csr = await createCsr({ keys, spiffeId: WORKLOAD });
          const request = {
            spiffeId: WORKLOAD,
            entrySpiffeId: WORKLOAD.toString(),
            entrySpiffeIdCanonical: true,
            csr: csr.pem,
            field: 'csrs.0.csr',
            dnsNames: ['web.example.org'],
          };
          const chunk = [
            request,
            { ...request, field: 'csrs.1.csr', ttlSeconds: 60 },
            { ...request, field: 'csrs.2.csr', entrySpiffeId: 'spiffe://example.org/other' },
            { ...request, field: 'csrs.3.csr', spiffeId: SpiffeId.parse('spiffe://elsewhere.org/web') },
          ];
          const leavesOf = (results: Awaited<ReturnType<typeof authority.ca.signX509SvidCsrs>>) =>
            results.slice(0, 2).map((result) => {
              expect(result).not.toBeInstanceOf(Error);
              return new x509.X509Certificate((result as { certificateChainDer: Buffer[] }).certificateChainDer[0]!);
            });
          const first = new x509.X509Certificate(authority.keys.slots('x509').active!.certificateDer!);
          const before = await authority.ca.signX509SvidCsrs(chunk);
          expect(authority.ca.signingWorkersRunning).toBe(workers > 0 ? 1 : 0);
          for (const leaf of leavesOf(before))
            expect(await leaf.verify({ publicKey: first.publicKey, signatureOnly: true })).toBe(true);
          expect(before[1]).toMatchObject({ expiresAt: new Date(T0 + 60 * 1000) });
          expect(before.slice(2)).toMatchObject([
            {
              kind: 'invalid_argument',
              message: `csrs.2.csr: uri san "${WORKLOAD.toString()}" does not match the spiffe id spiffe://example.org/other`,
            },
            {
              kind: 'invalid_argument',
              message: 'spiffeId: must be in trust domain example.org, got spiffe://elsewhere.org/web',
            },
          ]);

          const prepared = await authority.keys.prepare('x509');
          await authority.keys.activate('x509', prepared.authorityId);
          const second = new x509.X509Certificate(prepared.certificateDer!);
          // Right after the activation, on the same workers: every leaf is issued by the new CA.
          const after = await authority.ca.signX509SvidCsrs(chunk);
          for (const leaf of leavesOf(after)) {
            expect(leaf.issuer).toBe(second.subject);
            expect(await leaf.verify({ publicKey: second.publicKey, signatureOnly: true })).toBe(true);
            expect(await leaf.verify({ publicKey: first.publicKey, signatureOnly: true })).toBe(false);
            const verified = await verifyX509Svid([Buffer.from(leaf.rawData)], authority.bundles.ownBundle(), {
              now: clock.now(),
            });
            expect(verified.spiffeId.toString()).toBe(WORKLOAD.toString());
          }
          expect(authority.metrics.signed.filter((kind) => kind === 'x509')).toHaveLength(4);
        } finally {
          await authority.ca.onApplicationShutdown();
        }
      });
    }

    it('signs from a verified public key, and caps the lifetime at the CA expiry', async () => {
      const spkiDer = exportPublicKeySpki((await generateKeyPair()).publicKey);
      const caNotAfter = authority.keys.slots('x509').active!.notAfter;
      clock.set(new Date(caNotAfter.getTime() - 600_000));
      const svid = authority.ca.signX509Svid({ spiffeId: WORKLOAD, spkiDer, ttlSeconds: 3600 });
      expect(svid.expiresAt).toEqual(caNotAfter);
      expect(new x509.X509Certificate(svid.certificateChainDer[0]!).notAfter).toEqual(caNotAfter);
    });

    it.each([
      [
        'another trust domain',
        { spiffeId: SpiffeId.parse('spiffe://other.org/web'), spkiDer: new Uint8Array(1) },
        'spiffeId: must be in trust domain example.org, got spiffe://other.org/web',
      ],
      ['no key', { spiffeId: WORKLOAD }, 'request: must carry exactly one of spkiDer or csr'],
      ['a zero ttl', { spiffeId: WORKLOAD, csr: 'x', ttlSeconds: 0 }, 'ttlSeconds: must be a positive whole number'],
      ['a malformed csr', { spiffeId: WORKLOAD, csr: 'not a csr' }, /^csr: /],
    ])('refuses an X.509-SVID request with %s', (_name, request, message) => {
      expect(() => authority.ca.signX509Svid(request)).toThrow(message);
      try {
        authority.ca.signX509Svid(request);
      } catch (error) {
        expect(error).toMatchObject({ kind: 'invalid_argument' });
      }
    });

    it('signs a JWT-SVID with the active key and its kid, valid against the bundle until it expires', async () => {
      const jwt = await authority.ca.signJwtSvid({ spiffeId: WORKLOAD, audience: ['db', 'cache'] });
      expect(jwt.expiresAt).toEqual(new Date(T0 + 300 * 1000));
      const bundle = authority.bundles.ownBundle();
      const validated = await parseAndValidateJwtSvid(jwt.token, bundle, 'db', { now: clock.now() });
      expect(validated.spiffeId.toString()).toBe(WORKLOAD.toString());
      expect(validated.audience).toEqual(['db', 'cache']);
      expect(JSON.parse(Buffer.from(jwt.token.split('.')[0]!, 'base64url').toString())).toEqual({
        alg: 'ES256',
        kid: authority.keys.slots('jwt').active!.authorityId,
        typ: 'JWT',
      });
      await expect(parseAndValidateJwtSvid(jwt.token, bundle, 'db', { now: jwt.expiresAt })).rejects.toThrow(/expired/);
      await expect(authority.ca.signJwtSvid({ spiffeId: WORKLOAD, audience: [] })).rejects.toMatchObject({
        kind: 'invalid_argument',
        message: 'audience: must be specified',
      });
      await expect(
        authority.ca.signJwtSvid({ spiffeId: WORKLOAD, audience: Array.from({ length: 17 }, (_, i) => `a${i}`) }),
      ).rejects.toMatchObject({
        kind: 'invalid_argument',
        message: 'audience: at most 16 audiences per request, got 17',
      });
      await expect(
        authority.ca.signJwtSvid({ spiffeId: WORKLOAD, audience: ['db', 'é'.repeat(1025)] }),
      ).rejects.toMatchObject({
        kind: 'invalid_argument',
        message: 'audience[1]: at most 2048 bytes per audience, got 2050',
      });
      expect(authority.metrics.signed).toEqual(['jwt']);
    });

    it('exports the CA certificate chain for TLS', () => {
      const chain = authority.ca.x509Authority();
      expect(chain.certificateChainDer).toHaveLength(1);
      expect(authority.bundles.ownBundle().hasX509Authority(chain.certificateChainDer[0]!)).toBe(true);
      expect(chain.notAfter).toEqual(authority.keys.slots('x509').active!.notAfter);
    });
  });

  describe('intermediate CA under an upstream authority', () => {
    let upstreamRoot: Uint8Array;
    let upstreamIntermediate: Uint8Array;

    beforeAll(async () => {
      const rootKeys = await generateKeyPair();
      const root = await createRootCa({
        trustDomain: TRUST_DOMAIN,
        keys: rootKeys,
        ttlSeconds: 90 * 86400,
        now: new Date(T0 - 86400_000),
      });
      const intermediateKeys = await generateKeyPair();
      const intermediate = await createIntermediateCa({
        trustDomain: TRUST_DOMAIN,
        publicKey: intermediateKeys.publicKey,
        issuer: { certificate: root.certificate, privateKey: rootKeys.privateKey },
        ttlSeconds: 60 * 86400,
        now: new Date(T0 - 86400_000),
      });
      upstreamRoot = root.der;
      upstreamIntermediate = intermediate.der;
      await writeFile(join(scratch, 'upstream.pem'), certificatesToPem([intermediate.der, root.der]));
      await writeFile(join(scratch, 'upstream.key'), privateKeyToPem(intermediateKeys.privateKey), { mode: 0o600 });
    });

    beforeEach(async () => {
      await startAuthority({
        upstreamCaCert: join(scratch, 'upstream.pem'),
        upstreamCaKey: join(scratch, 'upstream.key'),
      });
    });

    it('publishes the upstream root, not our intermediates, and SVID chains verify up to it', async () => {
      const bundle = authority.bundles.ownBundle();
      expect(bundle.x509AuthoritiesDer().map((der) => Buffer.from(der))).toEqual([Buffer.from(upstreamRoot)]);

      const csr = await createCsr({ keys: await generateKeyPair() });
      const svid = authority.ca.signX509Svid({ spiffeId: WORKLOAD, csr: csr.der });
      const ours = authority.keys.slots('x509').active!.certificateDer!;
      expect(svid.certificateChainDer.slice(1)).toEqual([ours, Buffer.from(upstreamIntermediate)]);
      expect(authority.ca.x509Authority().certificateChainDer).toEqual([ours, Buffer.from(upstreamIntermediate)]);

      const verified = await verifyX509Svid(svid.certificateChainDer, bundle, { now: clock.now() });
      expect(verified.spiffeId.toString()).toBe(WORKLOAD.toString());
      const openssl = await opensslVerify({
        root: upstreamRoot,
        intermediates: svid.certificateChainDer.slice(1),
        leaf: svid.certificateChainDer[0]!,
        at: clock.now(),
      });
      expect(openssl.output).toMatch(/OK/);
      expect(openssl.ok).toBe(true);
    });

    it('keeps the bundle at the upstream root through a rotation, and refuses to revoke an intermediate', async () => {
      const first = authority.keys.slots('x509').active!;
      const sequence = authority.bundles.ownBundle().sequenceNumber;
      const prepared = await authority.keys.prepare('x509');
      expect(authority.bundles.ownBundle().sequenceNumber).toBe(sequence);
      await authority.keys.activate('x509', prepared.authorityId);
      await authority.keys.taint('x509', first.authorityId);
      await expect(authority.keys.revoke('x509', first.authorityId)).rejects.toMatchObject({
        kind: 'failed_precondition',
        message: expect.stringMatching(/is an intermediate under the upstream CA/),
      });
    });
  });
});
