import 'reflect-metadata';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDatabase } from '../../../../test/support/database.js';
import { testServerConfig } from '../../../../test/support/server-config.js';
import { CaModule } from '../ca/ca.module.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { CoreModule } from '../common/core.module.js';
import { ErrorFilter } from '../common/error.filter.js';
import { createValidationPipe } from '../common/validation.js';
import { type ServerConfig } from '../config.js';
import { DatabaseModule } from '../database/database.module.js';
import { BundleModule } from './bundle.module.js';

// Wiring of the bundle and local-authority routes through Nest, the validation pipe and the error filter. The
// admin guard is not part of this module set; the server e2e tests check that `/v1` requires authentication.
describe('bundle and authority routes', () => {
  let db: TestDatabase | undefined;
  let scratch: string;
  let app: NestFastifyApplication;
  const request = (method: 'GET' | 'POST', url: string, payload?: object) =>
    app
      .getHttpAdapter()
      .getInstance()
      .inject({ method, url, ...(payload && { payload }) });

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-authority-routes-'));
    // The server's own database: PostgreSQL, or the embedded one it opens in its data dir (as in production).
    let config: ServerConfig;
    ({ config, database: db } = await testServerConfig(scratch, {}, { poolSize: 4 }));
    const module = await Test.createTestingModule({
      imports: [
        CoreModule.forRoot(config, new FakeClock(Date.UTC(2026, 0, 1))),
        DatabaseModule,
        BundleModule,
        CaModule,
      ],
    }).compile();
    app = module.createNestApplication<NestFastifyApplication>(new FastifyAdapter(), { logger: false });
    app.useGlobalPipes(createValidationPipe());
    app.useGlobalFilters(new ErrorFilter(1024 * 1024));
    await app.init();
    await app.getHttpAdapter().getInstance().ready();
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('serves the federation bundle as SPIFFE JWKS with media type application/json', async () => {
    const response = await request('GET', '/bundle');
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
    const bundle = TrustBundle.parseJwks(TrustDomain.parse('example.org'), response.body);
    expect(bundle.x509Authorities).toHaveLength(1);
    expect(bundle.jwtAuthorities.size).toBe(1);
    expect(bundle.sequenceNumber).toBe(1);
    expect(bundle.refreshHintSeconds).toBe(300);
  });

  it('serves GET /v1/bundle as JWKS, or PEM with ?format=pem, and rejects other formats', async () => {
    const jwks = await request('GET', '/v1/bundle');
    expect(jwks.json()).toEqual((await request('GET', '/bundle')).json());
    const pem = await request('GET', '/v1/bundle?format=pem');
    expect(pem.statusCode).toBe(200);
    expect(pem.headers['content-type']).toBe('application/x-pem-file');
    expect(pem.body).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    const bad = await request('GET', '/v1/bundle?format=der');
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ error: 'invalid_argument', message: expect.stringContaining('format') });
  });

  it('shows, prepares and activates authorities, with errors as { error, message }', async () => {
    const shown = (await request('GET', '/v1/authorities/jwt')).json();
    expect(shown).toMatchObject({
      active: { state: 'active', tainted: false, revoked: false },
      prepared: null,
      old: [],
    });

    const prepared = await request('POST', '/v1/authorities/jwt/prepare');
    expect(prepared.statusCode).toBe(200);
    const preparedId: string = prepared.json().authority_id;
    expect((await request('GET', '/bundle')).json().spiffe_sequence).toBe(2);

    const wrong = await request('POST', '/v1/authorities/jwt/activate', { authority_id: 'unknown' });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json()).toEqual({
      error: 'invalid_argument',
      message: `authorityId: 'unknown' is not the prepared jwt authority (that is '${preparedId}')`,
    });
    const activated = await request('POST', '/v1/authorities/jwt/activate', { authority_id: preparedId });
    expect(activated.json()).toMatchObject({ authority_id: preparedId, state: 'active' });
    expect((await request('GET', '/v1/authorities/jwt')).json()).toMatchObject({
      active: { authority_id: preparedId },
      prepared: null,
      old: [{ authority_id: shown.active.authority_id, state: 'old' }],
    });

    const taintActive = await request('POST', '/v1/authorities/jwt/taint', { authority_id: preparedId });
    expect(taintActive.statusCode).toBe(422);
    expect(taintActive.json().error).toBe('failed_precondition');
    const badKind = await request('GET', '/v1/authorities/rsa');
    expect(badKind.statusCode).toBe(400);
    expect(badKind.json()).toMatchObject({
      error: 'invalid_argument',
      message: expect.stringContaining('x509 or jwt'),
    });
    const unknownField = await request('POST', '/v1/authorities/x509/activate', { authority_id: 'a', extra: 1 });
    expect(unknownField.statusCode).toBe(400);
  });
});
