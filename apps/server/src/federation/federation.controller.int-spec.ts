import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { generateKeyPairSync } from 'node:crypto';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRoutesApp } from '../../../../test/support/routes-app.js';
import { TestCa } from '../../../../test/support/test-ca.js';
import type { ServerConfig } from '../config.js';
import { EntriesModule } from '../entries/entries.module.js';
import { FEDERATED_BUNDLE_LIMITS } from './federated-bundle-rules.js';
import { FederationModule } from './federation.module.js';

const AGENT = 'spiffe://example.org/sigil/agent/join_token/a1';

function jwtKey(): Record<string, string> {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return publicKey.export({ format: 'jwk' }) as Record<string, string>;
}

// The federated bundle routes behind the app's global pipe and filter, on a real database; auth and audit are the
// e2e tests' (server-request-input lists these routes among the audited mutations).
describe('/v1/federation/bundles', () => {
  let db: TestDatabase;
  let app: NestFastifyApplication;
  let foreign: TestCa;
  let foreignPem: string;

  beforeAll(async () => {
    db = await useTestDatabase();
    const config = { trustDomain: TrustDomain.parse('example.org'), caTtlSeconds: 86_400 } as ServerConfig;
    app = await createRoutesApp(db, config, new FakeClock(Date.parse('2026-03-01T00:00:00Z')), [
      EntriesModule,
      FederationModule,
    ]);
    foreign = await TestCa.create('other.org');
    foreignPem = foreign.bundle().x509Pem();
  });

  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  const call = async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) => {
    const response = await app.inject({ method, url, payload });
    // Response bodies are checked by the expectations, not by the type system.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const body = response.body ? (response.json() as Record<string, any>) : undefined;
    return { status: response.statusCode, body };
  };
  const refused = (message: string | RegExp) => ({
    status: 400,
    body: {
      error: 'invalid_argument',
      message: typeof message === 'string' ? message : expect.stringMatching(message),
    },
  });
  const createEntry = async (name: string, federatesWith: string[]): Promise<string> => {
    const created = await call('POST', '/v1/entries', {
      entries: [
        {
          spiffe_id: `spiffe://example.org/${name}`,
          parent_id: AGENT,
          selectors: [{ type: 'unix', value: `user:${name}` }],
          federates_with: federatesWith,
        },
      ],
    });
    expect(created.body!.results[0].status.code).toBe('ok');
    return created.body!.results[0].entry.id as string;
  };

  describe('refuses what is not a foreign CA bundle, with 400 naming the rule', () => {
    it("refuses the server's own trust domain, by name or SPIFFE ID", async () => {
      for (const id of ['example.org', encodeURIComponent('spiffe://example.org')]) {
        expect(await call('PUT', `/v1/federation/bundles/${id}`, { format: 'pem', bundle: foreignPem })).toEqual(
          refused(/^trust_domain: example\.org is this server's own trust domain/),
        );
      }
      expect((await call('DELETE', '/v1/federation/bundles/example.org')).status).toBe(400);
    });

    it('refuses a trust domain that breaks the trust domain rule', async () => {
      expect(await call('PUT', '/v1/federation/bundles/Bad%20Domain', { bundle: foreignPem })).toEqual(
        refused(/^trust_domain: /),
      );
    });

    it('refuses PEM that does not parse, holds no certificate or holds another block', async () => {
      const put = (bundle: string) => call('PUT', '/v1/federation/bundles/other.org', { format: 'pem', bundle });
      expect(await put('not pem at all')).toEqual(refused('bundle (pem): no CERTIFICATE pem block found'));
      const corrupt = foreignPem.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!');
      expect((await put(corrupt)).status).toBe(400);
      expect(await put('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')).toEqual(
        refused(/^bundle \(pem\): pem block 0 is not a der x\.509 certificate/),
      );
    });

    it('refuses a certificate that is not a CA', async () => {
      const leaf = await foreign.createX509Svid('spiffe://other.org/web');
      const pem = TrustBundle.create(foreign.trustDomain, { x509Authorities: [leaf.certificate] }).x509Pem();
      expect(await call('PUT', '/v1/federation/bundles/other.org', { format: 'pem', bundle: pem })).toEqual(
        refused(/^bundle: x509 authority 0 \(.*\) is not a ca certificate/),
      );
    });

    it('refuses a SPIFFE bundle that breaks the JWKS rules', async () => {
      const put = (jwks: unknown) =>
        call('PUT', '/v1/federation/bundles/other.org', {
          format: 'spiffe',
          bundle: typeof jwks === 'string' ? jwks : JSON.stringify(jwks),
        });
      expect(await put('{not json')).toEqual(refused('bundle (spiffe): bundle is not valid json'));
      expect(await put({ nokeys: [] })).toEqual(refused('bundle (spiffe): bundle must have a keys array'));
      expect(await put({ keys: [{ kty: 'EC', ...jwtKey() }] })).toEqual(
        refused('bundle (spiffe): key entry 0 is missing use'),
      );
      expect(await put({ keys: [{ use: 'jwt-svid', ...jwtKey() }] })).toEqual(
        refused('bundle (spiffe): jwt-svid key entry 0 is missing kid'),
      );
      expect(await put({ keys: [{ use: 'x509-svid', kty: 'EC', x5c: [] }] })).toEqual(
        refused('bundle (spiffe): x509-svid key entry 0 must have exactly one x5c certificate, got 0'),
      );
      expect(await put({ keys: [] })).toEqual(
        refused('bundle: holds no x509 or jwt authority (to stop trusting it, delete it)'),
      );
      expect(await put({ keys: [{ use: 'jwt-svid', kid: 'k', ...jwtKey() }], spiffe_refresh_hint: 0 })).toEqual(
        refused(
          `bundle: spiffe_refresh_hint must be from 1 to ${FEDERATED_BUNDLE_LIMITS.maxRefreshHintSeconds} seconds, got 0`,
        ),
      );
      const tooMany = Array.from({ length: FEDERATED_BUNDLE_LIMITS.maxJwtAuthorities + 1 }, (_, i) => ({
        use: 'jwt-svid',
        kid: `k${i}`,
        ...jwtKey(),
      }));
      expect(await put({ keys: tooMany })).toEqual(
        refused(
          `bundle: ${tooMany.length} jwt authorities, more than the limit of ${FEDERATED_BUNDLE_LIMITS.maxJwtAuthorities}`,
        ),
      );
    });

    it('refuses a bundle text past the size limit and a body without bundle', async () => {
      const big = foreignPem + ' '.repeat(FEDERATED_BUNDLE_LIMITS.maxTextLength);
      expect(await call('PUT', '/v1/federation/bundles/other.org', { bundle: big })).toEqual(
        refused(/^bundle: \d+ characters, more than the 262144-character limit$/),
      );
      expect((await call('PUT', '/v1/federation/bundles/other.org', { format: 'pem' })).status).toBe(400);
      expect(
        (await call('PUT', '/v1/federation/bundles/other.org', { format: 'der', bundle: foreignPem })).status,
      ).toBe(400);
      expect((await call('GET', '/v1/federation/bundles/count')).body).toEqual({ count: 0 });
    });
  });

  it('sets, shows, lists (paged), counts and replaces bundles', async () => {
    const set = await call('PUT', '/v1/federation/bundles/other.org', { format: 'pem', bundle: foreignPem });
    expect(set.status).toBe(200);
    expect(set.body).toEqual({
      trust_domain: 'other.org',
      bundle: { keys: [expect.objectContaining({ use: 'x509-svid', x5c: [expect.any(String)] })], spiffe_sequence: 1 },
      updated_at: '2026-03-01T00:00:00.000Z',
    });
    expect(TrustBundle.parseJwks(foreign.trustDomain, set.body!.bundle).hasX509Authority(foreign.certificate)).toBe(
      true,
    );
    // Replaced by a SPIFFE bundle with a JWT key, its own sequence and refresh hint: taken as given.
    const key = jwtKey();
    const jwks = {
      keys: [...foreign.bundle().toJwks().keys, { use: 'jwt-svid', kid: 'k1', ...key }],
      spiffe_sequence: 42,
      spiffe_refresh_hint: 300,
    };
    const replaced = await call('PUT', `/v1/federation/bundles/${encodeURIComponent('spiffe://other.org')}`, {
      format: 'spiffe',
      bundle: JSON.stringify(jwks),
    });
    expect(replaced.status).toBe(200);
    expect(replaced.body!.bundle).toMatchObject({ spiffe_sequence: 42, spiffe_refresh_hint: 300 });
    expect(replaced.body!.bundle.keys[1]).toEqual({
      use: 'jwt-svid',
      kid: 'k1',
      kty: 'EC',
      crv: 'P-256',
      x: key.x,
      y: key.y,
    });
    expect((await call('GET', '/v1/federation/bundles/other.org')).body).toEqual(replaced.body);

    const third = await TestCa.create('third.org');
    expect(
      (await call('PUT', '/v1/federation/bundles/third.org', { bundle: third.bundle().x509Pem() })).body!.bundle
        .spiffe_sequence,
    ).toBe(1);
    // Our own bundle shares the table (as in SPIRE's datastore) but is never listed or counted as a federated one.
    await db.dataSource.query(
      `INSERT INTO bundles (trust_domain, x509_authorities, jwt_authorities, refresh_hint_seconds, sequence, updated_at)
       VALUES ('example.org', '[]', '[]', NULL, 1, now())`,
    );
    expect((await call('GET', '/v1/federation/bundles/count')).body).toEqual({ count: 2 });
    const first = await call('GET', '/v1/federation/bundles?page_size=1');
    expect(first.body!.bundles.map((b: { trust_domain: string }) => b.trust_domain)).toEqual(['other.org']);
    const second = await call('GET', `/v1/federation/bundles?page_size=1&page_token=${first.body!.next_page_token}`);
    expect(second.body).toEqual({ bundles: [expect.objectContaining({ trust_domain: 'third.org' })] });
    expect((await call('GET', '/v1/federation/bundles?page_token=%21%21')).body).toEqual({
      error: 'invalid_argument',
      message: 'page_token: not a token returned by a previous page',
    });
    expect((await call('GET', '/v1/federation/bundles/nowhere.org')).body).toEqual({
      error: 'not_found',
      message: 'no federated bundle for trust domain nowhere.org',
    });
  });

  it('gives every entry that federates with the trust domain a new revision when its bundle is set', async () => {
    const federating = await createEntry('federating', ['other.org']);
    await createEntry('plain', []);
    const head = async (): Promise<number> =>
      Number((await db.dataSource.query("SELECT revision FROM revision_counters WHERE name = 'entries'"))[0].revision);
    const before = await head();
    expect((await call('PUT', '/v1/federation/bundles/other.org', { bundle: foreignPem })).status).toBe(200);
    const events = await db.dataSource.query(
      'SELECT revision, entry_id, op FROM entry_events WHERE revision > $1 ORDER BY revision',
      [before],
    );
    expect(events).toEqual([{ revision: String(before + 1), entry_id: federating, op: 'updated' }]);
    expect(await head()).toBe(before + 1);
  });

  it('deletes in the three modes of SPIRE: restrict (default) refuses while entries federate, dissociate, delete', async () => {
    const fourth = await TestCa.create('fourth.org');
    const put = () => call('PUT', '/v1/federation/bundles/fourth.org', { bundle: fourth.bundle().x509Pem() });
    expect((await put()).status).toBe(200);
    const kept = await createEntry('kept', ['fourth.org', 'other.org']);
    const removed = await createEntry('removed', ['fourth.org']);

    const restricted = await call('DELETE', '/v1/federation/bundles/fourth.org');
    expect(restricted).toEqual({
      status: 422,
      body: {
        error: 'failed_precondition',
        message: expect.stringMatching(/^trust domain fourth\.org: 2 entries federate with it/),
      },
    });
    expect((await call('GET', '/v1/federation/bundles/fourth.org')).status).toBe(200);

    expect(await call('DELETE', '/v1/federation/bundles/fourth.org?mode=dissociate')).toEqual({
      status: 200,
      body: { trust_domain: 'fourth.org', mode: 'dissociate', entry_ids: [kept, removed].sort() },
    });
    expect((await call('GET', `/v1/entries/${kept}`)).body!.federates_with).toEqual(['other.org']);
    expect((await call('GET', `/v1/entries/${removed}`)).body!.federates_with).toEqual([]);
    expect((await call('GET', '/v1/federation/bundles/fourth.org')).status).toBe(404);

    expect((await put()).status).toBe(200);
    const doomed = await createEntry('doomed', ['fourth.org']);
    expect(
      await call('DELETE', `/v1/federation/bundles/${encodeURIComponent('spiffe://fourth.org')}?mode=delete`),
    ).toEqual({
      status: 200,
      body: { trust_domain: 'fourth.org', mode: 'delete', entry_ids: [doomed] },
    });
    expect((await call('GET', `/v1/entries/${doomed}`)).status).toBe(404);
    expect((await call('GET', `/v1/entries/${kept}`)).status).toBe(200);

    expect((await call('DELETE', '/v1/federation/bundles/fourth.org')).status).toBe(404);
    expect((await call('DELETE', '/v1/federation/bundles/fourth.org?mode=purge')).status).toBe(400);
  });
});
