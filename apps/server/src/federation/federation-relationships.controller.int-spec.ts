import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRoutesApp } from '../../../../test/support/routes-app.js';
import type { ServerConfig } from '../config.js';
import { EntriesModule } from '../entries/entries.module.js';
import { FederationModule } from './federation.module.js';

// The relationship routes behind the app's global pipe and filter, on a real database; auth and audit are the e2e
// tests' (server-request-input lists the mutations among the audited routes).
describe('/v1/federation/relationships', () => {
  let db: TestDatabase;
  let app: NestFastifyApplication;
  let clock: FakeClock;

  beforeAll(async () => {
    db = await useTestDatabase();
    const config = { trustDomain: TrustDomain.parse('example.org'), caTtlSeconds: 86_400 } as ServerConfig;
    clock = new FakeClock(Date.parse('2026-03-01T00:00:00Z'));
    app = await createRoutesApp(db, config, clock, [EntriesModule, FederationModule]);
  });

  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  const call = async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) => {
    const response = await app.inject({ method, url, payload });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const body = response.body ? (response.json() as Record<string, any>) : undefined;
    return { status: response.statusCode, body };
  };
  const spiffe = {
    trust_domain: 'spiffe://other.org',
    bundle_endpoint_url: 'https://bundles.other.org:8443/',
    bundle_endpoint_profile: 'https_spiffe',
    endpoint_spiffe_id: 'spiffe://other.org/sigil/server',
  };

  it('refuses what breaks a rule, naming the field', async () => {
    const cases: [object, string][] = [
      [{ ...spiffe, trust_domain: 'example.org' }, "trust_domain: example.org is this server's own trust domain"],
      [{ ...spiffe, trust_domain: 'bad domain!' }, 'trust_domain: '],
      [{ ...spiffe, bundle_endpoint_url: 'http://bundles.other.org/' }, 'bundle_endpoint_url: must be an https://'],
      [{ ...spiffe, bundle_endpoint_url: 'not a url' }, 'bundle_endpoint_url: not a URL'],
      [{ ...spiffe, bundle_endpoint_url: 'https://u:p@bundles.other.org/' }, 'bundle_endpoint_url: must not hold'],
      [{ ...spiffe, bundle_endpoint_url: `https://a.org/${'x'.repeat(2048)}` }, 'bundle_endpoint_url: longer than'],
      [{ ...spiffe, bundle_endpoint_profile: 'acme' }, 'bundle_endpoint_profile: must be one of https_spiffe'],
      [{ ...spiffe, endpoint_spiffe_id: undefined }, 'endpoint_spiffe_id: required by the https_spiffe profile'],
      [{ ...spiffe, endpoint_spiffe_id: 'other.org/server' }, 'endpoint_spiffe_id: '],
      [{ ...spiffe, bundle_endpoint_profile: 'https_web' }, 'endpoint_spiffe_id: only for the https_spiffe profile'],
      [{ ...spiffe, bundle_endpoint_url: 7 }, 'bundle_endpoint_url: must be a string'],
    ];
    for (const [payload, message] of cases) {
      const answer = await call('POST', '/v1/federation/relationships', payload);
      expect(answer, message).toMatchObject({ status: 400, body: { error: 'invalid_argument' } });
      expect(answer.body!.message, message).toContain(message);
    }
    expect((await call('GET', '/v1/federation/relationships')).body).toEqual({ relationships: [] });
  });

  it('creates, refuses a second create, lists, shows, updates and deletes', async () => {
    const created = await call('POST', '/v1/federation/relationships', spiffe);
    expect(created).toEqual({
      status: 201,
      body: {
        trust_domain: 'other.org',
        bundle_endpoint_url: 'https://bundles.other.org:8443/',
        bundle_endpoint_profile: 'https_spiffe',
        endpoint_spiffe_id: 'spiffe://other.org/sigil/server',
        created_at: '2026-03-01T00:00:00.000Z',
        updated_at: '2026-03-01T00:00:00.000Z',
      },
    });
    expect(await call('POST', '/v1/federation/relationships', { ...spiffe, trust_domain: 'other.org' })).toMatchObject({
      status: 409,
      body: { error: 'already_exists' },
    });
    const web = { bundle_endpoint_url: 'https://web.example/bundle', bundle_endpoint_profile: 'https_web' };
    expect((await call('POST', '/v1/federation/relationships', { ...web, trust_domain: 'alpha.org' })).status).toBe(
      201,
    );
    const listed = await call('GET', '/v1/federation/relationships');
    expect(listed.body!.relationships.map((r: { trust_domain: string }) => r.trust_domain)).toEqual([
      'alpha.org',
      'other.org',
    ]);
    expect((await call('GET', '/v1/federation/relationships/spiffe%3A%2F%2Fother.org')).body).toEqual(created.body);

    clock.advance(60_000);
    const updated = await call('PUT', '/v1/federation/relationships/other.org', web);
    expect(updated).toEqual({
      status: 200,
      body: {
        trust_domain: 'other.org',
        bundle_endpoint_url: 'https://web.example/bundle',
        bundle_endpoint_profile: 'https_web',
        created_at: '2026-03-01T00:00:00.000Z',
        updated_at: '2026-03-01T00:01:00.000Z',
      },
    });
    expect((await call('GET', '/v1/federation/relationships/other.org')).body).toEqual(updated.body);
    expect(await call('PUT', '/v1/federation/relationships/nobody.org', web)).toMatchObject({
      status: 404,
      body: { error: 'not_found', message: 'no federation relationship for trust domain nobody.org' },
    });

    expect(await call('DELETE', '/v1/federation/relationships/other.org')).toEqual({
      status: 200,
      body: { trust_domain: 'other.org' },
    });
    expect((await call('GET', '/v1/federation/relationships/other.org')).status).toBe(404);
    expect((await call('DELETE', '/v1/federation/relationships/other.org')).status).toBe(404);
    expect((await call('DELETE', '/v1/federation/relationships/alpha.org')).status).toBe(200);
  });
});
