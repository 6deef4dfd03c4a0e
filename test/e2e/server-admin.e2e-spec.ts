import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { TrustBundle, TrustDomain, verifyX509Svid } from '@sigil/spiffe';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../apps/server/src/app.js';
import { AgentsService } from '../../apps/server/src/agents/agents.service.js';
import { createRootLogger } from '../../apps/server/src/common/logging.js';
import { type ServerConfig } from '../../apps/server/src/config.js';
import { Database } from '../../apps/server/src/database/database.js';
import { type TestDatabase } from '../support/database.js';
import { testServerConfig } from '../support/server-config.js';

/** Calls the admin socket the way the CLI does: plain HTTP, no credentials. */
function viaAdminSocket(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest(
      { socketPath, method, path, headers: payload ? { 'content-type': 'application/json' } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A value for each path parameter, enough to reach the route (and its guard). */
function concretePath(url: string): string {
  return url
    .replace(':kind', 'x509')
    .replace(':id', encodeURIComponent('spiffe://example.org/sigil/agent/join_token/none'))
    .replace(':name', 'nobody')
    .replace(/:[A-Za-z]+/g, 'x');
}

describe('sigil-server admin API (HTTP e2e)', () => {
  let db: TestDatabase | undefined;
  /** The server's own database (on the embedded database, the server's one pooled connection). */
  let database: DataSource;
  let scratch: string;
  let server: RunningServer;
  let base: string;
  let adminToken: string;
  const logLines: string[] = [];
  const logs = (): string => logLines.join('');

  const api = () => request.agent(base).disableTLSCerts();
  const auditRows = async (action: string): Promise<Record<string, unknown>[]> =>
    database.query('SELECT actor, action, target, result, status_code FROM audit_log WHERE action = $1 ORDER BY id', [
      action,
    ]);

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-e2e-'));
    let config: ServerConfig;
    ({ config, database: db } = await testServerConfig(scratch, { logLevel: 'debug' }));
    const capture = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logLines.push(chunk.toString('utf8'));
        done();
      },
    });
    server = await startServer(config, { logger: createRootLogger('debug', capture) });
    base = `https://127.0.0.1:${server.address.port}`;
    database = db?.dataSource ?? server.app.get(Database).dataSource;
    const created = await viaAdminSocket(server.adminSocket, 'POST', '/v1/admin-tokens', { name: 'e2e' });
    expect(created.status).toBe(201);
    adminToken = created.body['token'] as string;
  });

  afterAll(async () => {
    await server?.close();
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  it('serves the admin socket in a 0700 directory, as a 0600 socket', async () => {
    expect((await stat(join(scratch, 'admin'))).mode & 0o777).toBe(0o700);
    expect((await stat(server.adminSocket)).mode & 0o777).toBe(0o600);
  });

  it('requires authentication on every /v1 route, and accepts a bearer admin token on each', async () => {
    const v1 = server.routes.filter((route) => route.url.startsWith('/v1'));
    expect(v1.length).toBeGreaterThanOrEqual(10);
    for (const route of v1) {
      const path = concretePath(route.url);
      const method = route.method.toLowerCase() as 'get' | 'post' | 'put' | 'patch' | 'delete';
      const anonymous = await api()[method](path).send({});
      expect({ route, status: anonymous.status, body: anonymous.body }).toEqual({
        route,
        status: 401,
        body: {
          error: 'unauthenticated',
          message:
            'authorization: admin API needs a bearer admin token, an admin X509-SVID (mTLS) or the local admin socket',
        },
      });
      const wrong = await api()[method](path).set('authorization', 'Bearer sigil_admin_wrong').send({});
      expect(wrong.body).toEqual({
        error: 'unauthenticated',
        message: 'authorization: unknown or expired admin token',
      });
      const authenticated = await api()[method](path).set('authorization', `Bearer ${adminToken}`).send({});
      expect({ route, status: authenticated.status }).not.toEqual({ route, status: 401 });
    }
  });

  it('leaves the probes, metrics, federation bundle and docs open', async () => {
    expect((await api().get('/healthz')).body).toEqual({ status: 'ok' });
    const ready = await api().get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', checks: { database: 'ok', authority: 'ok' } });
    const bundle = await api().get('/bundle');
    expect(bundle.status).toBe(200);
    expect(bundle.body.spiffe_sequence).toBeGreaterThanOrEqual(1);
    const openapi = await api().get('/docs/json');
    expect(openapi.body.paths).toHaveProperty(['/v1/join-tokens']);
    const page = await api().get('/docs');
    expect(page.text).toContain('swagger-ui');
    expect((await api().get('/docs/swagger-ui-bundle.js')).status).toBe(200);
  });

  it('exposes Prometheus metrics: agents, entries, SVIDs signed, sign latency', async () => {
    const metrics = await api().get('/metrics');
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(metrics.text).toMatch(/^sigil_agents \d+$/m);
    expect(metrics.text).toMatch(/^sigil_entries \d+$/m);
    // The server's own TLS certificate is an X509-SVID signed at start.
    expect(metrics.text).toMatch(/^sigil_svids_signed_total\{kind="x509"\} [1-9]\d*$/m);
    expect(metrics.text).toContain('sigil_svid_sign_duration_seconds_bucket');
  });

  it('presents an X509-SVID spiffe://example.org/sigil/server that verifies against the bundle', async () => {
    const jwks = (await api().get('/v1/bundle').set('authorization', `Bearer ${adminToken}`)).body as object;
    const bundle = TrustBundle.parseJwks(TrustDomain.parse('example.org'), jwks);
    const chain = await new Promise<Buffer[]>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: server.address.port, rejectUnauthorized: false }, () => {
        const certs: Buffer[] = [];
        let cert = socket.getPeerCertificate(true);
        while (cert?.raw && !certs.some((seen) => seen.equals(cert.raw))) {
          certs.push(cert.raw);
          cert = cert.issuerCertificate;
        }
        socket.end();
        resolve(certs);
      });
      socket.on('error', reject);
    });
    const verified = await verifyX509Svid(chain.slice(0, 1), bundle, { now: new Date() });
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/sigil/server');
  });

  it('answers validation errors with the field: unknown fields are refused by name', async () => {
    const auth = { authorization: `Bearer ${adminToken}` };
    const unknown = await api()
      .post('/v1/join-tokens')
      .set(auth)
      .send({ spiffe_id: 'spiffe://example.org/a', bogus: 1 });
    expect(unknown.status).toBe(400);
    expect(unknown.body).toEqual({ error: 'invalid_argument', message: 'bogus: unknown field' });
    const badTtl = await api().post('/v1/join-tokens').set(auth).send({ ttl: 0 });
    expect(badTtl.body).toEqual({ error: 'invalid_argument', message: 'ttl: must not be less than 1' });
    const badQuery = await api().get('/v1/agents?page_size=0&colour=red').set(auth);
    expect(badQuery.status).toBe(400);
    expect(badQuery.body.message).toContain('colour: unknown field');
    expect(badQuery.body.message).toContain('page_size: must not be less than 1');
  });

  it('answers unknown routes, bad JSON and oversized bodies with the error shape', async () => {
    const auth = { authorization: `Bearer ${adminToken}` };
    expect((await api().get('/v1/nope').set(auth)).body).toEqual({
      error: 'not_found',
      message: 'no route GET /v1/nope',
    });
    const badJson = await api()
      .post('/v1/join-tokens')
      .set(auth)
      .set('content-type', 'application/json')
      .send('{"ttl":');
    expect(badJson.status).toBe(400);
    expect(badJson.body).toEqual({ error: 'invalid_argument', message: 'request body: not valid JSON' });
    const huge = await api()
      .post('/v1/join-tokens')
      .set(auth)
      .send({ spiffe_id: `spiffe://example.org/${'a'.repeat(1024 * 1024 + 10)}` });
    expect(huge.status).toBe(413);
    expect(huge.body).toEqual({
      error: 'resource_exhausted',
      message: 'request body: larger than the 1048576-byte limit',
    });
  });

  it('shows a join token once, stores only its hash, and audits the creation', async () => {
    const created = await api()
      .post('/v1/join-tokens')
      .set('authorization', `Bearer ${adminToken}`)
      .send({ spiffe_id: 'spiffe://example.org/host/web', ttl: 120 });
    expect(created.status).toBe(201);
    const { id, token, expires_at: expiresAt } = created.body as { id: string; token: string; expires_at: string };
    expect(new Date(expiresAt).getTime() - Date.now()).toBeLessThanOrEqual(120_000);
    const rows: Record<string, unknown>[] = await database.query('SELECT * FROM join_tokens WHERE id = $1', [id]);
    expect(rows[0]?.['token_hash']).toBe(createHash('sha256').update(token).digest('hex'));
    expect(JSON.stringify(rows)).not.toContain(token);
    expect(await auditRows('join_token.create')).toContainEqual({
      actor: 'admin-token:e2e',
      action: 'join_token.create',
      target: id,
      result: 'ok',
      status_code: 201,
    });
  });

  it('audits failures with their kind, and the local admin as actor on the socket', async () => {
    const missing = encodeURIComponent('spiffe://example.org/sigil/agent/join_token/missing');
    const evicted = await viaAdminSocket(server.adminSocket, 'DELETE', `/v1/agents/${missing}`);
    expect(evicted.status).toBe(404);
    expect(await auditRows('agent.evict')).toContainEqual({
      actor: 'local-admin',
      action: 'agent.evict',
      target: 'spiffe://example.org/sigil/agent/join_token/missing',
      result: 'not_found',
      status_code: 404,
    });
    await api().post('/v1/join-tokens').set('authorization', `Bearer ${adminToken}`).send({ ttl: -5 });
    expect(await auditRows('join_token.create')).toContainEqual({
      actor: 'admin-token:e2e',
      action: 'join_token.create',
      target: null,
      result: 'invalid_argument',
      status_code: 400,
    });
    const before = await database.query('SELECT count(*)::int AS n FROM audit_log');
    await api().post('/v1/join-tokens').send({});
    expect(await database.query('SELECT count(*)::int AS n FROM audit_log')).toEqual(before);
  });

  it('names nested fields in validation errors and audits a batch that partly failed', async () => {
    const auth = { authorization: `Bearer ${adminToken}` };
    const nested = await api()
      .post('/v1/entries')
      .set(auth)
      .send({
        entries: [
          { spiffe_id: 'spiffe://example.org/a', parent_id: 'spiffe://example.org/p', selectors: [{ type: 1 }] },
        ],
      });
    expect(nested.status).toBe(400);
    expect(nested.body.message).toContain('entries.0.selectors.0.type: must be a string');
    expect(nested.body.message).toContain('entries.0.selectors.0.value: must be a string');

    const entry = (spiffeId: string) => ({
      spiffe_id: spiffeId,
      parent_id: 'spiffe://example.org/sigil/agent/join_token/p1',
      selectors: [{ type: 'unix', value: 'uid:1000' }],
    });
    const batch = await api()
      .post('/v1/entries')
      .set(auth)
      .send({ entries: [entry('spiffe://example.org/batch-ok'), entry('spiffe://other.org/batch-bad')] });
    expect(batch.status).toBe(200);
    const createdId = batch.body.results[0].entry.id as string;
    expect(await auditRows('entry.create')).toContainEqual({
      actor: 'admin-token:e2e',
      action: 'entry.create',
      target: createdId,
      result: 'partial',
      status_code: 200,
    });
  });

  it('pages through agents and gets, bans and evicts one by its URL-encoded SPIFFE ID', async () => {
    const agents = server.app.get(AgentsService);
    for (const name of ['p1', 'p2', 'p3']) {
      await agents.recordAttestation({
        spiffeId: `spiffe://example.org/sigil/agent/join_token/${name}`,
        attestationType: 'join_token',
        serialNumber: `s-${name}`,
        svidExpiresAt: new Date(Date.now() + 3600_000),
        selectors: [{ type: 'join_token', value: name }],
      });
    }
    const auth = { authorization: `Bearer ${adminToken}` };
    const seen: string[] = [];
    let next: string | undefined;
    do {
      const page = await api()
        .get(`/v1/agents?page_size=2${next ? `&page_token=${next}` : ''}`)
        .set(auth);
      expect(page.status).toBe(200);
      expect(page.body.agents.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.agents.map((agent: { spiffe_id: string }) => agent.spiffe_id));
      next = page.body.next_page_token;
    } while (next);
    expect(seen).toEqual(['p1', 'p2', 'p3'].map((name) => `spiffe://example.org/sigil/agent/join_token/${name}`));
    expect((await api().get('/v1/agents/count').set(auth)).body).toEqual({ count: 3 });

    const id = encodeURIComponent('spiffe://example.org/sigil/agent/join_token/p2');
    expect((await api().get(`/v1/agents/${id}`).set(auth)).body.selectors).toEqual([
      { type: 'join_token', value: 'p2' },
    ]);
    expect((await api().post(`/v1/agents/${id}/ban`).set(auth)).body.banned).toBe(true);
    expect((await api().delete(`/v1/agents/${id}`).set(auth)).status).toBe(204);
    expect((await api().get(`/v1/agents/${id}`).set(auth)).status).toBe(404);
    expect((await auditRows('agent.ban')).at(-1)).toMatchObject({ result: 'ok', status_code: 200 });
  });

  it('keeps secrets out of the logs: no private key PEM, no join or admin token', async () => {
    const created = await viaAdminSocket(server.adminSocket, 'POST', '/v1/join-tokens', {});
    expect(created.status).toBe(201);
    const text = logs();
    expect(text).toContain('sigil-server listening');
    expect(text).toContain('join token created');
    expect(text).not.toContain('PRIVATE KEY');
    expect(text).not.toContain(created.body['token']);
    expect(text).not.toContain(adminToken);
    for (const line of logLines) expect(() => JSON.parse(line)).not.toThrow();
  });
});
