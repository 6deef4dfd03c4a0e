import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../apps/server/src/app.js';
import {
  ATTESTATION_BODY_LIMIT_BYTES,
  BODY_LIMIT_BYTES,
  MAX_JSON_DEPTH,
} from '../../apps/server/src/common/request-body.js';
import { createRootLogger } from '../../apps/server/src/common/logging.js';
import { type ServerConfig } from '../../apps/server/src/config.js';
import { Database } from '../../apps/server/src/database/database.js';
import { type TestDatabase } from '../support/database.js';
import { testServerConfig } from '../support/server-config.js';

interface Answer {
  status: number;
  // Response bodies are checked by the expectations, not by the type system.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

/** One way into the server: the admin Unix socket (local admin), or the TLS port with a bearer admin token. */
interface Listener {
  readonly name: string;
  /** The actor the audit log names for requests on this listener. */
  readonly actor: string;
  send(method: string, path: string, body?: string | Buffer, headers?: OutgoingHttpHeaders): Promise<Answer>;
}

/** Sends `path` exactly as given (no normalisation, no re-encoding), as an attacker's client would. */
function rawRequest(
  open: typeof httpRequest,
  options: Record<string, unknown>,
  method: string,
  path: string,
  body: string | Buffer | undefined,
  headers: OutgoingHttpHeaders,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = open(
      {
        ...options,
        method,
        path,
        headers:
          body === undefined
            ? headers
            : {
                'content-type': 'application/json',
                // Node's client frames a DELETE body only when told its length.
                ...('transfer-encoding' in headers ? {} : { 'content-length': Buffer.byteLength(body) }),
                ...headers,
              },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as unknown) : undefined });
        });
      },
    );
    // The server may answer (413) and close before it has read a huge body: the answer is what counts.
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' ? undefined : reject(error)));
    req.end(body);
  });
}

/** Percent-encodes the first letter of `/v1` (`/%761/...`): Fastify routes it as `/v1/...`. */
function encodeVersion(path: string): string {
  expect(path.startsWith('/v1/')).toBe(true);
  return `/%76${path.slice(2)}`;
}

/** Percent-encodes the first letter of the segment after `/v1/` (`/v1/%65ntries`). */
function encodeResource(path: string): string {
  const letter = path.charAt(4);
  return `/v1/%${letter.charCodeAt(0).toString(16)}${path.slice(5)}`;
}

const AGENT_ID = 'spiffe://example.org/sigil/agent/join_token/none';

/** Every mutation route of the admin API, the action its audit record names, and a body that reaches the handler. */
const MUTATIONS: Record<string, { action: string; body?: unknown }> = {
  'POST /v1/entries': {
    action: 'entry.create',
    body: {
      entries: [
        {
          spiffe_id: 'spiffe://example.org/audited',
          parent_id: AGENT_ID,
          selectors: [{ type: 'unix', value: 'uid:1000' }],
        },
      ],
    },
  },
  'PATCH /v1/entries/:id': { action: 'entry.update', body: { hint: 'x' } },
  'DELETE /v1/entries/:id': { action: 'entry.delete' },
  'POST /v1/join-tokens': { action: 'join_token.create', body: {} },
  'DELETE /v1/agents/:id': { action: 'agent.evict' },
  'POST /v1/agents/purge': { action: 'agent.purge', body: { expired_for: 86400, dry_run: true } },
  'PUT /v1/logger': { action: 'logger.set', body: { level: 'info' } },
  'DELETE /v1/logger': { action: 'logger.reset' },
  'POST /v1/agents/:id/ban': { action: 'agent.ban' },
  'POST /v1/admin-tokens': { action: 'admin_token.create', body: { name: 'encoded-path' } },
  'DELETE /v1/admin-tokens/:name': { action: 'admin_token.revoke' },
  'POST /v1/authorities/:kind/prepare': { action: 'authority.prepare' },
  'POST /v1/authorities/:kind/activate': { action: 'authority.activate', body: { authority_id: 'none' } },
  'POST /v1/authorities/:kind/taint': { action: 'authority.taint', body: { authority_id: 'none' } },
  'POST /v1/authorities/:kind/revoke': { action: 'authority.revoke', body: { authority_id: 'none' } },
  'POST /v1/x509-svids/mint': { action: 'x509_svid.mint', body: { csr: 'bm90IGEgQ1NS' } },
  'POST /v1/jwt-svids/mint': {
    action: 'jwt_svid.mint',
    body: { spiffe_id: 'spiffe://example.org/audited', audience: ['audit'] },
  },
  'PUT /v1/federation/bundles/:trust_domain': {
    action: 'federation.setBundle',
    body: { format: 'pem', bundle: 'not a bundle' },
  },
  'DELETE /v1/federation/bundles/:trust_domain': { action: 'federation.deleteBundle' },
  'POST /v1/federation/relationships': {
    action: 'federation.createRelationship',
    body: { trust_domain: 'other.org', bundle_endpoint_url: 'http://not-https', bundle_endpoint_profile: 'https_web' },
  },
  'PUT /v1/federation/relationships/:trust_domain': {
    action: 'federation.updateRelationship',
    body: { bundle_endpoint_url: 'https://bundles.other.org/', bundle_endpoint_profile: 'https_web' },
  },
  'DELETE /v1/federation/relationships/:trust_domain': { action: 'federation.deleteRelationship' },
  'POST /v1/federation/relationships/:trust_domain/refresh': { action: 'federation.refreshBundle' },
};

function concretePath(url: string): string {
  return url
    .replace(':kind', 'jwt')
    .replace(':id', encodeURIComponent(AGENT_ID))
    .replace(':name', 'nobody')
    .replace(':trust_domain', 'other.org');
}

describe('sigil-server request input: audit by matched route, bounded bodies (both listeners)', () => {
  let db: TestDatabase | undefined;
  /** The server's own database (on the embedded database, the server's one pooled connection). */
  let database: DataSource;
  let scratch: string;
  let server: RunningServer;
  let adminToken: string;
  let listeners: Listener[];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'sigil-e2e-input-'));
    let config: ServerConfig;
    // Malformed attestation bodies are refusals that cost 10 tokens each: the budget is raised out of the way, as
    // this spec is about what each malformed body gets, not about the rate limit.
    ({ config, database: db } = await testServerConfig(scratch, {
      logLevel: 'error',
      attestationRate: '100000',
      attestationBurst: '100000',
    }));
    server = await startServer(config, { logger: createRootLogger('silent') });
    database = db?.dataSource ?? server.app.get(Database).dataSource;
    const socket: Listener = {
      name: 'admin socket',
      actor: 'local-admin',
      send: (method, path, body, headers = {}) =>
        rawRequest(httpRequest, { socketPath: server.adminSocket }, method, path, body, headers),
    };
    const created = await socket.send('POST', '/v1/admin-tokens', JSON.stringify({ name: 'input' }));
    expect(created.status).toBe(201);
    adminToken = created.body.token as string;
    const tcp: Listener = {
      name: 'TLS port',
      actor: 'admin-token:input',
      send: (method, path, body, headers = {}) =>
        rawRequest(
          httpsRequest as typeof httpRequest,
          { host: '127.0.0.1', port: server.address.port, rejectUnauthorized: false },
          method,
          path,
          body,
          { authorization: `Bearer ${adminToken}`, ...headers },
        ),
    };
    listeners = [socket, tcp];
  });

  afterAll(async () => {
    await server?.close();
    await db?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const lastAuditId = async (): Promise<number> =>
    Number((await database.query('SELECT coalesce(max(id), 0) AS id FROM audit_log'))[0].id);
  const auditRowsAfter = async (id: number): Promise<Record<string, unknown>[]> =>
    database.query('SELECT actor, action, status_code FROM audit_log WHERE id > $1 ORDER BY id', [id]);

  describe('finding 4: the audit log follows the matched route, not the raw URL', () => {
    it('lists every mutation route the server serves (a new one must be added here)', () => {
      const served = server.routes
        .filter((route) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(route.method) && route.url.startsWith('/v1/'))
        .map((route) => `${route.method} ${route.url}`)
        .sort();
      expect(served).toEqual(Object.keys(MUTATIONS).sort());
    });

    for (const [route, { action, body }] of Object.entries(MUTATIONS)) {
      const [method, url] = route.split(' ') as [string, string];
      it(`audits ${route} reached through a percent-encoded path, on both listeners`, async () => {
        for (const listener of listeners) {
          for (const path of [encodeVersion(concretePath(url)), encodeResource(concretePath(url))]) {
            const before = await lastAuditId();
            const answer = await listener.send(method, path, body === undefined ? undefined : JSON.stringify(body));
            // The route was matched (a 404 would come from the service, not the router).
            expect({ listener: listener.name, path, message: answer.body?.message }).not.toMatchObject({
              message: expect.stringMatching(/^no route /),
            });
            expect({ listener: listener.name, path, rows: await auditRowsAfter(before) }).toEqual({
              listener: listener.name,
              path,
              rows: [{ actor: listener.actor, action, status_code: answer.status }],
            });
          }
        }
      });
    }

    it('still authenticates percent-encoded paths on the TLS port, and audits nothing for a refused caller', async () => {
      for (const route of Object.keys(MUTATIONS)) {
        const [method, url] = route.split(' ') as [string, string];
        const before = await lastAuditId();
        const answer = await listeners[1]!.send(method, encodeVersion(concretePath(url)), '{}', {
          authorization: 'Bearer sigil_admin_wrong',
        });
        expect({ route, status: answer.status, error: answer.body?.error }).toEqual({
          route,
          status: 401,
          error: 'unauthenticated',
        });
        expect(await auditRowsAfter(before)).toEqual([]);
      }
    });

    it('does not audit agent API routes, however they are spelt', async () => {
      const before = await lastAuditId();
      const answer = await listeners[1]!.send('POST', '/agent/%761/attest/join-token', JSON.stringify({}));
      expect(answer.status).toBe(400);
      expect(await auditRowsAfter(before)).toEqual([]);
    });
  });

  describe('finding 5: malformed bodies get a 4xx JSON error before any transformer runs', () => {
    const nestedArrays = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const nestedObjects = (depth: number): string => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    const tooDeep = {
      error: 'invalid_argument',
      message: `request body: nested deeper than ${MAX_JSON_DEPTH} levels`,
    };

    /** The body limit of a route: the open attestation routes take at most 96 KiB, the others 1 MiB. */
    const bodyLimitOf = (path: string): number =>
      path.startsWith('/agent/v1/attest/') ? ATTESTATION_BODY_LIMIT_BYTES : BODY_LIMIT_BYTES;
    const tooLarge = (limit: number) => ({
      status: 413,
      body: { error: 'resource_exhausted', message: `request body: larger than the ${limit}-byte limit` },
    });

    // Body-taking routes of each group: admin (both listeners) and the agent API's open attestation routes.
    const bodyRoutes = [
      '/v1/entries',
      '/v1/join-tokens',
      '/v1/admin-tokens',
      '/v1/authorities/x509/activate',
      '/agent/v1/attest/join-token',
      '/agent/v1/attest/x509pop/challenge',
      '/agent/v1/attest/x509pop',
    ];

    it('refuses deeply nested arrays and objects with 400 on every body route of both listeners', async () => {
      const bodies = [
        `{"entries":${nestedArrays(100_000)}}`,
        nestedArrays(100_000),
        `{"entries":[{"selectors":${nestedObjects(50_000)}}]}`,
        nestedObjects(MAX_JSON_DEPTH + 1),
        // Brackets inside strings do not count; the real nesting does.
        `{"s":"${'['.repeat(100)}","a":${nestedArrays(MAX_JSON_DEPTH)}}`,
      ];
      for (const listener of listeners) {
        for (const path of bodyRoutes) {
          for (const body of bodies) {
            const answer = await listener.send('POST', path, body);
            // The open attestation routes read at most 96 KiB: a deeper body that is also larger gets 413 first.
            const limit = bodyLimitOf(path);
            expect({ listener: listener.name, path, body: body.slice(0, 40), answer }).toEqual({
              listener: listener.name,
              path,
              body: body.slice(0, 40),
              answer: Buffer.byteLength(body) > limit ? tooLarge(limit) : { status: 400, body: tooDeep },
            });
          }
        }
      }
    });

    it('lets bodies up to the limit through to the usual validation', async () => {
      const atLimit = `{"entries":${nestedArrays(MAX_JSON_DEPTH - 1)}}`;
      const answer = await listeners[0]!.send('POST', '/v1/entries', atLimit);
      expect(answer.status).toBe(400);
      expect(answer.body.error).toBe('invalid_argument');
      expect(answer.body.message).not.toContain('nested deeper');
      const escaped = await listeners[0]!.send('POST', '/v1/join-tokens', JSON.stringify({ spiffe_id: '\\"[{[{' }));
      expect(escaped.body.message).not.toContain('nested deeper');
    });

    it('refuses bodies over the size limit with 413, with and without a content-length', async () => {
      for (const listener of listeners) {
        for (const path of ['/v1/entries', '/agent/v1/attest/join-token']) {
          const limit = bodyLimitOf(path);
          const huge = Buffer.alloc(limit + 1, 0x20);
          for (const headers of [{}, { 'transfer-encoding': 'chunked' }]) {
            const answer = await listener.send('POST', path, huge, headers);
            expect({ listener: listener.name, path, headers, answer }).toEqual({
              listener: listener.name,
              path,
              headers,
              answer: tooLarge(limit),
            });
          }
        }
      }
    });

    it('answers other malformed bodies with a 4xx error, never a 500', async () => {
      const notAnObject = { error: 'invalid_argument', message: 'request body: must be a JSON object' };
      const notJson = { error: 'invalid_argument', message: 'content-type: must be application/json' };
      const malformed: [string, OutgoingHttpHeaders, { status: number; body: object } | undefined][] = [
        ['null', {}, { status: 400, body: notAnObject }],
        ['"text"', {}, { status: 400, body: notAnObject }],
        ['42', {}, { status: 400, body: notAnObject }],
        ['[]', {}, { status: 400, body: notAnObject }],
        ['{"entries":null}', {}, undefined],
        ['{"entries":[null]}', {}, undefined],
        ['{"entries":[[]]}', {}, undefined],
        ['{"entries":[{"selectors":[null]}]}', {}, undefined],
        ['{"entries":[{"selectors":[[{"type":"unix","value":"uid:1"}]]}]}', {}, undefined],
        ['{"__proto__":{"admin":true}}', {}, undefined],
        ['{"constructor":{"prototype":{"admin":true}}}', {}, undefined],
        [
          '{"entries":',
          {},
          { status: 400, body: { error: 'invalid_argument', message: 'request body: not valid JSON' } },
        ],
        ['', {}, undefined],
        ['entries=1', { 'content-type': 'text/plain' }, { status: 415, body: notJson }],
        [
          'entries[0][spiffe_id]=x',
          { 'content-type': 'application/x-www-form-urlencoded' },
          { status: 415, body: notJson },
        ],
        ['<entries/>', { 'content-type': 'application/xml' }, { status: 415, body: notJson }],
      ];
      for (const listener of listeners) {
        for (const path of bodyRoutes) {
          for (const [body, headers, expected] of malformed) {
            const answer = await listener.send('POST', path, body, headers);
            const where = { listener: listener.name, path, body };
            expect({ ...where, status: answer.status }).toEqual({
              ...where,
              status: expect.toSatisfy((status: number) => status >= 400 && status < 500),
            });
            expect(answer.body).toEqual({ error: expect.any(String), message: expect.any(String) });
            if (expected) expect({ ...where, answer }).toEqual({ ...where, answer: expected });
          }
          // A list of lists where a list of objects belongs is refused as a whole, not taken for more elements.
          if (path === '/v1/entries') {
            const nested = await listener.send('POST', path, '{"entries":[[]]}');
            expect(nested.body).toEqual({
              error: 'invalid_argument',
              message: 'entries: each value must be an object',
            });
          }
        }
      }
    });

    it('answers any JSON value on a body route with a 2xx or a 4xx JSON error (property)', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom(...bodyRoutes),
          fc.jsonValue({ maxDepth: MAX_JSON_DEPTH + 4 }),
          async (path, value) => {
            const answer = await listeners[0]!.send('POST', path, JSON.stringify(value));
            expect(answer.status).toBeLessThan(500);
            if (answer.status >= 400) {
              expect(answer.body).toEqual({ error: expect.any(String), message: expect.any(String) });
            }
          },
        ),
        { numRuns: 150 },
      );
    });

    it('still answers normally afterwards, on both listeners', async () => {
      for (const [index, listener] of listeners.entries()) {
        expect((await listener.send('GET', '/healthz')).body).toEqual({ status: 'ok' });
        const created = await listener.send(
          'POST',
          '/v1/entries',
          JSON.stringify({
            entries: [
              {
                spiffe_id: `spiffe://example.org/after-${index}`,
                parent_id: AGENT_ID,
                selectors: [{ type: 'unix', value: `uid:${index}` }],
                dns_names: ['web.example.org'],
              },
            ],
          }),
        );
        expect(created.status).toBe(200);
        expect(created.body.results[0].status.code).toBe('ok');
      }
    });
  });
});
