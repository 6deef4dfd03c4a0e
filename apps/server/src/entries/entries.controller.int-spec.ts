import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRoutesApp } from '../../../../test/support/routes-app.js';
import type { ServerConfig } from '../config.js';
import { EntriesModule } from './entries.module.js';

const AGENT = 'spiffe://example.org/sigil/agent/join_token/a1';
const entry = (name: string, extra: Record<string, unknown> = {}) => ({
  spiffe_id: `spiffe://example.org/${name}`,
  parent_id: AGENT,
  selectors: [{ type: 'unix', value: `user:${name}` }],
  ...extra,
});

// Checks the wiring of EntriesModule behind the app's global pipe and filter; auth and audit are the e2e tests'.
describe('/v1/entries', () => {
  let db: TestDatabase;
  let app: NestFastifyApplication;

  beforeAll(async () => {
    db = await useTestDatabase();
    const config = { trustDomain: TrustDomain.parse('example.org') } as ServerConfig;
    app = await createRoutesApp(db, config, new FakeClock(Date.parse('2026-03-01T00:00:00Z')), [EntriesModule]);
  });

  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  const call = async (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object) => {
    const response = await app.inject({ method, url, payload });
    // Response bodies are checked by the expectations, not by the type system.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const body = response.body ? (response.json() as Record<string, any>) : undefined;
    return { status: response.statusCode, body };
  };

  it('creates a batch with one result per entry, as SPIRE BatchCreateEntry', async () => {
    const first = await call('POST', '/v1/entries', {
      entries: [entry('web', { dns_names: ['web.example.org'], expires_at: '2026-04-01T00:00:00Z' })],
    });
    expect(first.status).toBe(200);
    expect(first.body!.results[0]).toEqual({
      status: { code: 'ok', message: 'ok' },
      entry: {
        id: expect.stringMatching(/^[0-9a-f-]{36}$/),
        spiffe_id: 'spiffe://example.org/web',
        parent_id: AGENT,
        selectors: [{ type: 'unix', value: 'user:web' }],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: ['web.example.org'],
        federates_with: [],
        admin: false,
        downstream: false,
        hint: '',
        expires_at: '2026-04-01T00:00:00.000Z',
        revision_number: expect.any(Number),
        created_at: '2026-03-01T00:00:00.000Z',
        updated_at: '2026-03-01T00:00:00.000Z',
      },
    });

    const batch = await call('POST', '/v1/entries', {
      entries: [entry('db'), entry('bad', { spiffe_id: 'spiffe://other.org/bad' }), entry('web')],
    });
    expect(batch.status).toBe(200);
    expect(batch.body!.results.map((result: { status: { code: string } }) => result.status.code)).toEqual([
      'ok',
      'invalid_argument',
      'already_exists',
    ]);
    expect(batch.body!.results[1]).toEqual({
      status: {
        code: 'invalid_argument',
        message: 'spiffe_id: must be in trust domain "example.org", got "other.org"',
      },
    });
    expect(batch.body!.results[2].entry.id).toBe(first.body!.results[0].entry.id);
  });

  it('refuses malformed bodies as a whole, naming the field', async () => {
    expect(await call('POST', '/v1/entries', { entries: [entry('x', { colour: 'red' })] })).toEqual({
      status: 400,
      body: { error: 'invalid_argument', message: 'entries.0.colour: unknown field' },
    });
    expect((await call('POST', '/v1/entries', { entries: [] })).body).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringMatching(/^entries: /),
    });
    expect((await call('POST', '/v1/entries', { entries: [entry('x', { x509_svid_ttl: '60' })] })).status).toBe(400);
  });

  it('lists with filters and cursor pages, counts, gets, updates and deletes', async () => {
    const created = await call('POST', '/v1/entries', {
      entries: ['p1', 'p2', 'p3'].map((name) =>
        entry(name, {
          selectors: [
            { type: 'k8s', value: 'ns:pay' },
            { type: 'k8s', value: `sa:${name}` },
          ],
        }),
      ),
    });
    const ids = created.body!.results.map((result: { entry: { id: string } }) => result.entry.id).sort();

    const seen: string[] = [];
    let url = '/v1/entries?selector=k8s:ns:pay&page_size=2';
    for (;;) {
      const page = await call('GET', url);
      expect(page.status).toBe(200);
      seen.push(...page.body!.entries.map((listed: { id: string }) => listed.id));
      if (page.body!.next_page_token === null) break;
      url = `/v1/entries?selector=k8s:ns:pay&page_size=2&page_token=${page.body!.next_page_token}`;
    }
    expect(seen).toEqual(ids);
    const exact = await call('GET', '/v1/entries?selector=k8s:ns:pay&selector=k8s:sa:p2&selector_match=exact');
    expect(exact.body!.entries.map((listed: { spiffe_id: string }) => listed.spiffe_id)).toEqual([
      'spiffe://example.org/p2',
    ]);
    expect(await call('GET', '/v1/entries/count?selector=k8s:ns:pay')).toEqual({ status: 200, body: { count: 3 } });
    expect(await call('GET', '/v1/entries?selector=k8s')).toEqual({
      status: 400,
      body: {
        error: 'invalid_argument',
        message: 'selector.0: must look like type:value (e.g. unix:uid:1000), got "k8s"',
      },
    });
    expect((await call('GET', '/v1/entries?page_size=5000')).status).toBe(400);

    const id = ids[0]!;
    expect((await call('GET', `/v1/entries/${id}`)).body).toMatchObject({ id, hint: '' });
    const patched = await call('PATCH', `/v1/entries/${id}`, { hint: 'payments', x509_svid_ttl: 900 });
    expect(patched).toMatchObject({ status: 200, body: { id, hint: 'payments', x509_svid_ttl: 900 } });
    expect(await call('PATCH', `/v1/entries/${id}`, { jwt_svid_ttl: 1 })).toEqual({
      status: 400,
      body: {
        error: 'invalid_argument',
        message: 'jwt_svid_ttl: must be 0 (the server default) or from 30 to 86400 seconds, got 1',
      },
    });

    expect(await call('DELETE', `/v1/entries/${id}`)).toEqual({ status: 204, body: undefined });
    expect(await call('GET', `/v1/entries/${id}`)).toEqual({
      status: 404,
      body: { error: 'not_found', message: `entry "${id}" not found` },
    });
    expect((await call('DELETE', '/v1/entries/not-a-uuid')).body).toEqual({
      error: 'invalid_argument',
      message: 'id: must be an entry id (a lowercase uuid), got "not-a-uuid"',
    });
  });
});
