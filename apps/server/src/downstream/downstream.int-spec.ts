import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { createCsr, exportPublicKeySpki, generateKeyPair, privateKeyToPem, toPem } from '@sigil/pki';
import { SpiffeId, type TrustBundle } from '@sigil/spiffe';
import { x509 } from '@sigil/spiffe/x509';
import { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  startAgentApiTestServer,
  type AgentApiTestServer,
  type ClientCredentials,
} from '../../../../test/support/agent-api.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { forgeEmbeddingPem } from '../../../../test/support/forged-certificate.js';
import { opensslVerify } from '../../../../test/support/openssl.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import { AuthorisedEntriesService } from '../agent-api/authorised-entries.service.js';
import { CaService } from '../ca/ca.service.js';
import { EntriesService } from '../entries/entries.service.js';
import { KeyManager } from '../ca/key-manager.js';
import {
  DOWNSTREAM_AUTHORITIES_PATH,
  DOWNSTREAM_JWT_AUTHORITY_PATH,
  DOWNSTREAM_X509_CA_PATH,
  MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER,
} from './downstream-contract.js';

const backend = process.env.DATABASE_URL ? 'postgres' : 'embedded';
const TD = 'example.org';
const NESTED = `spiffe://${TD}/nested-server`;
const PLAIN = `spiffe://${TD}/plain-workload`;
const PARENT = `spiffe://${TD}/sigil/agent/join_token/host-a`;
const MAX_TTL_SECONDS = 2 * 3600;

describe(`downstream CA route (${backend})`, () => {
  const clock = new FakeClock(Date.now());
  let api: AgentApiTestServer;
  let bundle: TrustBundle;

  /** An X509-SVID of our CA for `spiffeId`, as the agent would hand it to the workload. */
  const svidFor = async (spiffeId: string): Promise<ClientCredentials> => {
    const keys = await generateKeyPair('ec-p256');
    const csr = await createCsr({ keys, spiffeId: SpiffeId.parse(spiffeId) });
    const signed = api.server.app.get(CaService).signX509Svid({ spiffeId: SpiffeId.parse(spiffeId), csr: csr.der });
    return {
      certificatePem: signed.certificateChainDer.map((der) => toPem('CERTIFICATE', der)).join(''),
      privateKeyPem: privateKeyToPem(keys.privateKey),
    };
  };
  const caCsr = async (): Promise<{ csr: string; spki: Buffer }> => {
    const keys = await generateKeyPair('ec-p256');
    const csr = await createCsr({ keys });
    return { csr: Buffer.from(csr.der).toString('base64'), spki: Buffer.from(exportPublicKeySpki(keys.publicKey)) };
  };
  const askCa = async (credentials: ClientCredentials | undefined, body?: unknown) =>
    api.call('POST', DOWNSTREAM_X509_CA_PATH, body ?? { csr: (await caCsr()).csr }, credentials);
  const auditRows = async (actor: string) =>
    (await api.server.app
      .get(DataSource)
      .query(`SELECT actor, action, target, result FROM audit_log WHERE actor = $1 ORDER BY id`, [actor])) as {
      actor: string;
      action: string;
      target: string | null;
      result: string;
    }[];

  beforeAll(async () => {
    api = await startAgentApiTestServer({ clock, flags: { downstreamCaMaxTtl: `${MAX_TTL_SECONDS}s` } });
    bundle = await api.trustBundle();
    const entries = api.server.app.get(EntriesService);
    await entries.createEntry({
      spiffeId: NESTED,
      parentId: PARENT,
      selectors: [{ type: 'unix', value: 'uid:1001' }],
      downstream: true,
    });
    await entries.createEntry({ spiffeId: PLAIN, parentId: PARENT, selectors: [{ type: 'unix', value: 'uid:1002' }] });
    // The guard reads this replica's entry index, which follows the writes asynchronously.
    await api.server.app.get(AuthorisedEntriesService).refresh();
  }, 60_000);

  afterAll(async () => {
    await api?.close();
  });

  it('signs an intermediate CA for the key of a downstream entry, with the chain above it and the bundle roots', async () => {
    const { csr, spki } = await caCsr();
    const response = await askCa(await svidFor(NESTED), { csr });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    const chain = (response.body['ca_cert_chain'] as string[]).map((der) => Buffer.from(der, 'base64'));
    const roots = (response.body['x509_authorities'] as string[]).map((der) => Buffer.from(der, 'base64'));
    expect(roots.map((der) => der.toString('base64')).sort()).toEqual(
      bundle
        .x509AuthoritiesDer()
        .map((der) => Buffer.from(der).toString('base64'))
        .sort(),
    );
    const ca = new X509Certificate(chain[0]!);
    expect(ca.ca).toBe(true);
    expect(ca.subjectAltName).toBe(`URI:spiffe://${TD}`);
    expect(ca.publicKey.export({ type: 'spki', format: 'der' }).equals(spki)).toBe(true);
    // Bounded by downstream_ca_max_ttl (the CA TTL is the default 24 h).
    const lifetimeSeconds = (new Date(ca.validTo).getTime() - clock.now().getTime()) / 1000;
    expect(lifetimeSeconds).toBeGreaterThan(MAX_TTL_SECONDS - 60);
    expect(lifetimeSeconds).toBeLessThanOrEqual(MAX_TTL_SECONDS);
    expect(response.body['expires_at']).toBe(new Date(ca.validTo).toISOString());
    // openssl: the new CA chains to the upstream root, and can itself sign a CA below it (no path length limit).
    const verified = await opensslVerify({ root: roots[0]!, leaf: chain[0]!, intermediates: chain.slice(1) });
    expect(verified.ok, verified.output).toBe(true);

    expect(await auditRows(NESTED)).toEqual([
      { actor: NESTED, action: 'downstream.new_x509_ca', target: ca.serialNumber.toLowerCase(), result: 'ok' },
    ]);
  });

  it('caps a preferred TTL at downstream_ca_max_ttl and honours a shorter one', async () => {
    const credentials = await svidFor(NESTED);
    const lifetime = async (preferred: number) => {
      const response = await askCa(credentials, { csr: (await caCsr()).csr, preferred_ttl: preferred });
      expect(response.status).toBe(200);
      const ca = new X509Certificate(Buffer.from((response.body['ca_cert_chain'] as string[])[0]!, 'base64'));
      return (new Date(ca.validTo).getTime() - clock.now().getTime()) / 1000;
    };
    expect(await lifetime(600)).toBeLessThanOrEqual(600);
    expect(await lifetime(600)).toBeGreaterThan(540);
    expect(await lifetime(10 * 24 * 3600)).toBeLessThanOrEqual(MAX_TTL_SECONDS);
  });

  it('refuses an SVID whose entry is not downstream with 403, audited', async () => {
    const response = await askCa(await svidFor(PLAIN));
    expect(response.status).toBe(403);
    expect(response.body).toEqual({
      error: 'permission_denied',
      message: `client certificate: ${PLAIN} has no registration entry with downstream: true; only downstream entries may obtain a CA`,
    });
    expect(await auditRows(PLAIN)).toEqual([
      { actor: PLAIN, action: 'downstream.new_x509_ca', target: null, result: 'permission_denied' },
    ]);
  });

  it('refuses an SVID of another trust domain with 403', async () => {
    const other = await TestCa.create('other.org');
    const svid = await other.createX509Svid('spiffe://other.org/nested-server');
    const credentials: ClientCredentials = {
      certificatePem: svid
        .chainDer()
        .map((der) => toPem('CERTIFICATE', der))
        .join(''),
      privateKeyPem: toPem('PRIVATE KEY', await svid.privateKeyPkcs8()),
    };
    const response = await askCa(credentials);
    expect(response.status).toBe(403);
    expect(response.body['message']).toBe(
      'client certificate: an X509-SVID of trust domain other.org, not example.org; only downstream entries of this ' +
        'trust domain may obtain a CA',
    );
    // Nothing of it verified: an unauthenticated caller writes no audit record (review R6).
    expect(await auditRows('unknown')).toEqual([]);
    expect(await auditRows('spiffe://other.org/nested-server')).toEqual([]);
  });

  it('refuses a caller without a client certificate with 401, and an SVID of a CA not in the bundle', async () => {
    const none = await askCa(undefined);
    expect(none.status).toBe(401);
    expect(none.body['message']).toMatch(/X509-SVID of a downstream entry \(mTLS\)/);

    const impostor = await TestCa.create(TD);
    const svid = await impostor.createX509Svid(NESTED);
    const forged = await askCa({
      certificatePem: svid
        .chainDer()
        .map((der) => toPem('CERTIFICATE', der))
        .join(''),
      privateKeyPem: toPem('PRIVATE KEY', await svid.privateKeyPkcs8()),
    });
    expect(forged.status).toBe(401);
  });

  it('refuses with 401 a certificate whose DER embeds a CA-signed certificate as PEM (review R6, R7)', async () => {
    const real = await svidFor(NESTED);
    const leaf = new x509.X509Certificate(
      real.certificatePem.split('-----END CERTIFICATE-----')[0]! + '-----END CERTIFICATE-----',
    );
    const forged = forgeEmbeddingPem({
      issuer: new Uint8Array(leaf.issuerName.toArrayBuffer()),
      spiffeId: NESTED,
      embeddedPem: leaf.toString('pem'),
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
    });
    const response = await askCa({
      certificatePem: toPem('CERTIFICATE', forged.der),
      privateKeyPem: forged.privateKeyPem,
    });
    expect(response.status).toBe(401);
    expect(response.body['message']).toContain('not the DER bytes given');
  });

  it('follows entry changes at once through the entry index', async () => {
    const entries = api.server.app.get(EntriesService);
    const id = `spiffe://${TD}/later-downstream`;
    const credentials = await svidFor(id);
    expect((await askCa(credentials)).status).toBe(403);
    const entry = await entries.createEntry({
      spiffeId: id,
      parentId: PARENT,
      selectors: [{ type: 'unix', value: 'uid:1003' }],
      downstream: true,
    });
    await expect.poll(async () => (await askCa(credentials)).status, { timeout: 3_000 }).toBe(200);
    await entries.updateEntry(entry.id, { downstream: false });
    await expect.poll(async () => (await askCa(credentials)).status, { timeout: 3_000 }).toBe(403);
  });

  it('tells a downstream caller our X.509 authorities and the authority IDs of our tainted keys, and no one else (401, 403)', async () => {
    const ask = async (credentials: ClientCredentials | undefined) =>
      api.call('GET', DOWNSTREAM_AUTHORITIES_PATH, undefined, credentials);
    // The roots a nested server follows: our bundle's, as the trust bundle route serves them.
    const roots = async () =>
      (await api.trustBundle())
        .x509AuthoritiesDer()
        .map((der) => Buffer.from(der).toString('base64'))
        .sort();
    // The JWT authorities it also answers are checked with the JWT authority route below.
    const sortedRoots = (body: Record<string, unknown>) => ({
      tainted_authorities: body['tainted_authorities'],
      x509_authorities: [...(body['x509_authorities'] as string[])].sort(),
    });
    const nested = await svidFor(NESTED);
    expect(sortedRoots((await ask(nested)).body)).toEqual({ tainted_authorities: [], x509_authorities: await roots() });

    const keys = api.server.app.get(KeyManager);
    const old = keys.slots('x509').active!.authorityId;
    const prepared = await keys.prepare('x509');
    await keys.activate('x509', prepared.authorityId);
    await keys.taint('x509', old);
    const answer = await ask(nested);
    expect(answer.status).toBe(200);
    expect(sortedRoots(answer.body)).toEqual({ tainted_authorities: [old], x509_authorities: await roots() });
    expect(answer.body['x509_authorities']).toHaveLength(2);

    expect((await ask(undefined)).status).toBe(401);
    const plain = await ask(await svidFor(PLAIN));
    expect(plain.status).toBe(403);
    expect(plain.body['message']).toContain(`${PLAIN} has no registration entry with downstream: true`);
  });

  it('refuses a CSR that is not one with 400 naming the field', async () => {
    const credentials = await svidFor(NESTED);
    const response = await askCa(credentials, { csr: Buffer.from('not a csr').toString('base64') });
    expect(response.status).toBe(400);
    expect(response.body['message']).toMatch(/^csr: /);
    const missing = await askCa(credentials, {});
    expect(missing.status).toBe(400);
  });
  describe('JWT authorities published by downstream servers (SPIRE PublishJWTAuthority)', () => {
    const kid = () => randomBytes(24).toString('base64url');
    const spki = (type: 'ec' | 'ed25519' = 'ec', namedCurve = 'P-256') =>
      (type === 'ec' ? generateKeyPairSync('ec', { namedCurve }) : generateKeyPairSync('ed25519')).publicKey
        .export({ type: 'spki', format: 'der' })
        .toString('base64');
    const inSeconds = (seconds: number) => Math.floor(clock.now().getTime() / 1000) + seconds;
    const jwtKey = (overrides: Record<string, unknown> = {}) => ({
      key_id: kid(),
      public_key: spki(),
      expires_at: inSeconds(3600),
      ...overrides,
    });
    const publish = (credentials: ClientCredentials | undefined, body: unknown) =>
      api.call('POST', DOWNSTREAM_JWT_AUTHORITY_PATH, body, credentials);
    const bundleKids = async () => [...(await api.trustBundle()).jwtAuthorities.keys()];

    it('publishes the key in the trust bundle until it expires and answers the bundle JWT authorities with their expiry', async () => {
      const nested = await svidFor(NESTED);
      const key = jwtKey();
      const response = await publish(nested, { jwt_authority: key });
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      const listed = response.body['jwt_authorities'] as { key_id: string; public_key: string; expires_at: number }[];
      expect(listed).toContainEqual(key);
      // Our own JWT key is listed too, with its expiry.
      const own = api.server.app.get(KeyManager).slots('jwt').active!;
      expect(listed).toContainEqual({
        key_id: own.authorityId,
        public_key: own.publicKeyDer.toString('base64'),
        expires_at: Math.floor(own.notAfter.getTime() / 1000),
      });
      expect(await bundleKids()).toEqual(expect.arrayContaining([key.key_id, own.authorityId]));
      // Served as a JWT authority of our trust domain: the same public key as published.
      const jwk = (await api.trustBundle()).findJwtAuthority(key.key_id)!;
      expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256' });
      // A retry of the same key is accepted and changes nothing.
      expect((await publish(nested, { jwt_authority: key })).status).toBe(200);
      // The authorities read answers them too.
      const read = await api.call('GET', DOWNSTREAM_AUTHORITIES_PATH, undefined, nested);
      expect(read.body['jwt_authorities']).toContainEqual(key);
      expect((await auditRows(NESTED)).filter((row) => row.action === 'downstream.publish_jwt_authority')).toEqual([
        { actor: NESTED, action: 'downstream.publish_jwt_authority', target: key.key_id, result: 'ok' },
        { actor: NESTED, action: 'downstream.publish_jwt_authority', target: key.key_id, result: 'ok' },
      ]);
    });

    it('refuses a caller without an SVID (401), of a non-downstream entry (403, audited) or of another trust domain (403)', async () => {
      const body = { jwt_authority: jwtKey() };
      expect((await publish(undefined, body)).status).toBe(401);
      const plain = await publish(await svidFor(PLAIN), body);
      expect(plain.status).toBe(403);
      expect(plain.body['message']).toContain(`${PLAIN} has no registration entry with downstream: true`);
      expect((await auditRows(PLAIN)).filter((row) => row.action === 'downstream.publish_jwt_authority')).toEqual([
        { actor: PLAIN, action: 'downstream.publish_jwt_authority', target: null, result: 'permission_denied' },
      ]);
      const other = await TestCa.create('other.org');
      const svid = await other.createX509Svid('spiffe://other.org/nested-server');
      const foreign = await publish(
        {
          certificatePem: svid
            .chainDer()
            .map((der) => toPem('CERTIFICATE', der))
            .join(''),
          privateKeyPem: toPem('PRIVATE KEY', await svid.privateKeyPkcs8()),
        },
        body,
      );
      expect(foreign.status).toBe(403);
      expect(await bundleKids()).not.toContain(body.jwt_authority.key_id);
    });

    it.each([
      [
        'a key that is not SPKI DER',
        { public_key: Buffer.from('not a key').toString('base64') },
        /^jwt_authority\.public_key: is not a SubjectPublicKeyInfo DER public key$/,
      ],
      [
        'an Ed25519 key',
        { public_key: spki('ed25519') },
        /^jwt_authority\.public_key: unsupported key algorithm ed25519/,
      ],
      [
        'a P-521 key',
        { public_key: spki('ec', 'P-521') },
        /^jwt_authority\.public_key: unsupported ec curve secp521r1/,
      ],
      ['a kid with other characters', { key_id: 'a/b' }, /^jwt_authority\.key_id: must be 1 to 128 characters/],
      ['an empty kid', { key_id: '' }, /^jwt_authority\.key_id: /],
      ['an expiry that has passed', { expires_at: inSeconds(-1) }, /^jwt_authority\.expires_at: .* has passed$/],
      [
        'a key with bytes after its SPKI DER',
        { public_key: Buffer.concat([Buffer.from(spki(), 'base64'), Buffer.alloc(8, 0x41)]).toString('base64') },
        /^jwt_authority\.public_key: must be the canonical DER encoding of the key$/,
      ],
    ])('refuses %s with 400 naming the field, and publishes nothing', async (_name, overrides, message) => {
      const key = jwtKey(overrides);
      const response = await publish(await svidFor(NESTED), { jwt_authority: key });
      expect(response.status, JSON.stringify(response.body)).toBe(400);
      expect(response.body['message']).toMatch(message);
      expect(await bundleKids()).not.toContain(key.key_id);
    });

    it('cuts an expiry beyond downstream_ca_max_ttl to it, stores and answers that expiry, and keeps it on a retry', async () => {
      const nested = await svidFor(NESTED);
      const key = jwtKey({ expires_at: inSeconds(MAX_TTL_SECONDS + 3600) });
      const response = await publish(nested, { jwt_authority: key });
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      const stored = { ...key, expires_at: inSeconds(MAX_TTL_SECONDS) };
      expect(response.body['jwt_authorities']).toContainEqual(stored);
      const read = await api.call('GET', DOWNSTREAM_AUTHORITIES_PATH, undefined, nested);
      expect(read.body['jwt_authorities']).toContainEqual(stored);
      // A retry later answers the expiry stored first, not a later cut.
      clock.advance(60_000);
      const retry = await publish(nested, { jwt_authority: key });
      expect(retry.status).toBe(200);
      expect(retry.body['jwt_authorities']).toContainEqual(stored);
      // Within the bound it is kept as asked.
      const within = jwtKey({ expires_at: inSeconds(MAX_TTL_SECONDS - 10) });
      expect((await publish(nested, { jwt_authority: within })).body['jwt_authorities']).toContainEqual(within);
    });

    it('refuses a body without a key with 400', async () => {
      const nested = await svidFor(NESTED);
      expect((await publish(nested, {})).status).toBe(400);
      expect((await publish(nested, { jwt_authority: 'x' })).status).toBe(400);
      expect((await publish(nested, { jwt_authority: { ...jwtKey(), expires_at: 'soon' } })).status).toBe(400);
    });

    it('refuses a kid that names another key (ours, or one published with another key) with 409', async () => {
      const nested = await svidFor(NESTED);
      const own = api.server.app.get(KeyManager).slots('jwt').active!.authorityId;
      const ours = await publish(nested, { jwt_authority: jwtKey({ key_id: own }) });
      expect(ours.status).toBe(409);
      expect(ours.body['message']).toBe(`jwt_authority.key_id: ${own} is a JWT authority of this server`);
      const first = jwtKey();
      expect((await publish(nested, { jwt_authority: first })).status).toBe(200);
      const swapped = await publish(nested, { jwt_authority: { ...first, public_key: spki() } });
      expect(swapped.status).toBe(409);
      expect(swapped.body['message']).toMatch(/already a JWT authority of this trust domain with another key/);
      // The bundle still serves the first key under that kid.
      const served = (await api.trustBundle()).findJwtAuthority(first.key_id) as Record<string, string>;
      const firstJwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }); // shape only
      expect(Object.keys(served).sort()).toEqual(Object.keys(firstJwk.publicKey.export({ format: 'jwk' })).sort());
    });

    it(`keeps at most ${MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER} unexpired keys per caller (422), and prunes expired ones from the bundle`, async () => {
      // A caller of its own, so the keys the other tests published do not count.
      const id = `spiffe://${TD}/capped-downstream`;
      await api.server.app.get(EntriesService).createEntry({
        spiffeId: id,
        parentId: PARENT,
        selectors: [{ type: 'unix', value: 'uid:1004' }],
        downstream: true,
      });
      await api.server.app.get(AuthorisedEntriesService).refresh();
      const capped = await svidFor(id);
      const shortLived = jwtKey({ expires_at: inSeconds(120) });
      expect((await publish(capped, { jwt_authority: shortLived })).status).toBe(200);
      for (let i = 1; i < MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER; i += 1) {
        expect((await publish(capped, { jwt_authority: jwtKey() })).status).toBe(200);
      }
      const over = jwtKey();
      const refused = await publish(capped, { jwt_authority: over });
      expect(refused.status).toBe(422);
      expect(refused.body['message']).toBe(
        `jwt_authority: ${id} already has ${MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER} unexpired JWT keys published, ` +
          `at most ${MAX_PUBLISHED_JWT_AUTHORITIES_PER_CALLER}; publish more once some have expired`,
      );
      expect(await bundleKids()).not.toContain(over.key_id);
      // Another caller is not held by this one's count.
      expect((await publish(await svidFor(NESTED), { jwt_authority: jwtKey() })).status).toBe(200);
      // Once one has expired, the caller may publish again, and the expired key leaves the bundle.
      expect(await bundleKids()).toContain(shortLived.key_id);
      clock.advance(121_000);
      const again = await publish(capped, { jwt_authority: over });
      expect(again.status, JSON.stringify(again.body)).toBe(200);
      const kids = await bundleKids();
      expect(kids).toContain(over.key_id);
      expect(kids).not.toContain(shortLived.key_id);
      expect((again.body['jwt_authorities'] as { key_id: string }[]).map((key) => key.key_id)).not.toContain(
        shortLived.key_id,
      );
    });
  });
});
