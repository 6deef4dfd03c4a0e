import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createCsr, generateKeyPair } from '@sigil/pki';
import fc from 'fast-check';
import { createServerApp, type BuiltServerApp } from '../../../apps/server/src/app.js';
import { AdminTokensService } from '../../../apps/server/src/auth/admin-tokens.service.js';
import { createRootLogger } from '../../../apps/server/src/common/logging.js';
import { type ServerConfig } from '../../../apps/server/src/config.js';
import { type TestDatabase } from '../../support/database.js';
import { anyString, jsonText, mutatedJson, mutatedText } from '../arbitraries.js';
import { ContractViolation, Outcomes, runTarget, type FuzzReport } from '../harness.js';
import { testServerConfig } from '../../support/server-config.js';

const ENTRY_ID = '0b7e6f3a-1f2c-4d5e-8a9b-0c1d2e3f4a5b';
const AGENT_ID = 'spiffe://example.org/sigil/agent/join_token/a1';
const ENTRY = {
  spiffe_id: 'spiffe://example.org/web',
  parent_id: AGENT_ID,
  selectors: [{ type: 'unix', value: 'uid:1000' }],
  x509_svid_ttl: 3600,
  jwt_svid_ttl: 300,
  dns_names: ['web.example.org'],
  federates_with: ['other.org'],
  admin: false,
  downstream: false,
  hint: 'web',
  expires_at: '2099-01-01T00:00:00Z',
};

interface Route {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** `:param` is replaced by a (mutated) path parameter. */
  readonly path: string;
  readonly params: readonly string[];
  readonly bodies: readonly unknown[];
  readonly query?: readonly string[];
}

/** Every route that reads a body, a path parameter or a query, admin and agent (attestation) alike. */
function routes(csr: string): Route[] {
  const entryIds = [ENTRY_ID, 'not-a-uuid'];
  return [
    {
      method: 'POST',
      path: '/v1/entries',
      params: [],
      bodies: [{ entries: [ENTRY] }, { entries: [ENTRY, { ...ENTRY, hint: '' }] }],
    },
    {
      method: 'PATCH',
      path: '/v1/entries/:p',
      params: entryIds,
      bodies: [{ hint: 'x', dns_names: [], expires_at: null }, ENTRY],
    },
    { method: 'DELETE', path: '/v1/entries/:p', params: entryIds, bodies: [] },
    {
      method: 'GET',
      path: '/v1/entries',
      params: [],
      bodies: [],
      query: [
        'selector=unix:uid:1000&selector=k8s:ns:a&selector_match=exact&page_size=2',
        'spiffe_id=spiffe://example.org/web&page_token=abc',
      ],
    },
    {
      method: 'GET',
      path: '/v1/entries/count',
      params: [],
      bodies: [],
      query: ['parent_id=x&federates_with=other.org&hint=h'],
    },
    { method: 'GET', path: '/v1/entries/:p', params: entryIds, bodies: [] },
    { method: 'POST', path: '/v1/join-tokens', params: [], bodies: [{ spiffe_id: AGENT_ID, ttl: 600 }, {}] },
    { method: 'POST', path: '/v1/admin-tokens', params: [], bodies: [{ name: 'ops', ttl: 3600 }] },
    { method: 'DELETE', path: '/v1/admin-tokens/:p', params: ['ops'], bodies: [] },
    {
      method: 'GET',
      path: '/v1/agents',
      params: [],
      bodies: [],
      query: ['attestation_type=join_token&banned=true&page_size=5'],
    },
    { method: 'GET', path: '/v1/agents/:p', params: [encodeURIComponent(AGENT_ID)], bodies: [] },
    { method: 'DELETE', path: '/v1/agents/:p', params: [encodeURIComponent(AGENT_ID)], bodies: [] },
    { method: 'POST', path: '/v1/agents/:p/ban', params: [encodeURIComponent(AGENT_ID)], bodies: [{}] },
    { method: 'GET', path: '/v1/authorities/:p', params: ['x509', 'jwt'], bodies: [] },
    {
      method: 'POST',
      path: '/v1/authorities/:p/activate',
      params: ['x509', 'jwt'],
      bodies: [{ authority_id: 'ab12' }],
    },
    { method: 'POST', path: '/v1/authorities/:p/taint', params: ['x509', 'jwt'], bodies: [{ authority_id: 'ab12' }] },
    { method: 'POST', path: '/v1/authorities/:p/revoke', params: ['x509', 'jwt'], bodies: [{ authority_id: 'ab12' }] },
    { method: 'POST', path: '/agent/v1/attest/join-token', params: [], bodies: [{ token: 'abc', csr }] },
    { method: 'POST', path: '/agent/v1/attest/x509pop/challenge', params: [], bodies: [{ certificates: ['MIIB'] }] },
    {
      method: 'POST',
      path: '/agent/v1/attest/x509pop',
      params: [],
      bodies: [{ challenge_id: ENTRY_ID, signature: 'AAAA', csr }],
    },
    { method: 'POST', path: '/agent/v1/svids/x509', params: [], bodies: [{ csrs: [{ entry_id: ENTRY_ID, csr }] }] },
  ];
}

/** encodeURIComponent of the UTF-8 bytes, which (unlike encodeURIComponent) takes lone surrogates too. */
function percentEncode(text: string): string {
  return [...Buffer.from(text, 'utf8')]
    .map((byte) =>
      /[A-Za-z0-9\-_.!~*'()]/.test(String.fromCharCode(byte))
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).padStart(2, '0').toUpperCase()}`,
    )
    .join('');
}

interface Request {
  readonly method: Route['method'];
  readonly url: string;
  readonly payload: string | undefined;
  readonly contentType: string | undefined;
  readonly authorized: boolean;
}

/**
 * The admin API and the agent attestation routes through the real Nest + Fastify app of `createServerApp` (global
 * pipe, filter, body parser and guards; on PostgreSQL, or on the embedded database in its data dir as production
 * runs it), called with `inject`: mutated valid bodies as JSON
 * text (fields of the wrong type, removed, cut, nested up to 100,000 levels), mutated path parameters and queries,
 * odd content types, with and without an admin token. Every answer must be JSON: a 2xx, or a 4xx `{ error,
 * message }` — never a 500.
 */
export async function fuzzAdminApi(runs: number): Promise<FuzzReport> {
  const scratch = await mkdtemp(join(tmpdir(), 'sigil-fuzz-admin-'));
  let db: TestDatabase | undefined;
  let built: BuiltServerApp | undefined;
  try {
    let config: ServerConfig;
    ({ config, database: db } = await testServerConfig(scratch, { logLevel: 'fatal' }));
    // Error lines only (a 500 is logged with its errorId), the last few kept for the failure message.
    const errorLog: string[] = [];
    const capture = new Writable({
      write(chunk: Buffer, _encoding, done) {
        errorLog.push(chunk.toString('utf8'));
        if (errorLog.length > 20) errorLog.shift();
        done();
      },
    });
    built = await createServerApp(config, { logger: createRootLogger('error', capture) });
    const { app } = built;
    await app.getHttpAdapter().getInstance().ready();
    const token = (await app.get(AdminTokensService).create({ kind: 'local-admin' }, { name: 'fuzz' })).token;
    const csr = (await createCsr({ keys: await generateKeyPair('ec-p256') })).pem;
    const all = routes(csr);
    const request: fc.Arbitrary<Request> = fc.constantFrom(...all).chain((route) =>
      fc
        .record({
          param: route.params.length > 0 ? fc.oneof(mutatedText(route.params, 2), anyString) : fc.constant(''),
          encode: fc.boolean(),
          query: route.query ? fc.option(mutatedText(route.query, 3), { nil: undefined }) : fc.constant(undefined),
          payload:
            route.bodies.length > 0
              ? fc.oneof(
                  { weight: 9, arbitrary: jsonText(mutatedJson(route.bodies, 3)) },
                  { weight: 1, arbitrary: fc.constant(undefined) },
                )
              : fc.option(fc.constantFrom('{}', '[]', 'x'), { nil: undefined, freq: 4 }),
          contentType: fc.oneof(
            { weight: 12, arbitrary: fc.constant('application/json') },
            {
              weight: 1,
              arbitrary: fc.constantFrom(
                undefined,
                'text/plain',
                'application/json; charset=latin1',
                'application/x-www-form-urlencoded',
              ),
            },
          ),
          authorized: fc.oneof(
            { weight: 9, arbitrary: fc.constant(true) },
            { weight: 1, arbitrary: fc.constant(false) },
          ),
        })
        .map(({ param, encode, query, payload, contentType, authorized }): Request => {
          const path = route.path.replace(':p', encode ? percentEncode(param) : param.replace(/[?#]/g, ''));
          return {
            method: route.method,
            url: query === undefined ? path : `${path}?${query}`,
            payload: route.method === 'GET' ? undefined : payload,
            contentType,
            authorized,
          };
        }),
    );
    const outcomes = new Outcomes();
    return await runTarget(
      'admin-api',
      request,
      async ({ method, url, payload, contentType, authorized }) => {
        const headers: Record<string, string> = {};
        if (authorized) headers['authorization'] = `Bearer ${token}`;
        if (contentType !== undefined && payload !== undefined) headers['content-type'] = contentType;
        let response;
        try {
          response = await app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload }) });
        } catch (error) {
          // light-my-request refuses some URLs itself (e.g. an invalid percent-encoding it must decode first).
          if (error instanceof URIError || (error as { code?: string }).code === 'ERR_INVALID_URL') return;
          throw error;
        }
        const status = response.statusCode;
        const text = response.body;
        outcomes.add(String(status));
        let body: unknown;
        try {
          body = text === '' ? undefined : JSON.parse(text);
        } catch {
          throw new ContractViolation(
            `${method} ${url} answered ${status} with a body that is not JSON: ${text.slice(0, 200)}`,
          );
        }
        if (status >= 500 || status < 200) {
          const errorId = (body as { errorId?: string } | undefined)?.errorId;
          const logged = errorLog.find((line) => errorId !== undefined && line.includes(errorId)) ?? '';
          throw new ContractViolation(
            `${method} ${url} answered ${status}: ${text.slice(0, 300)}\n  logged: ${logged.slice(0, 3000)}`,
          );
        }
        if (status >= 400) {
          const error = body as { error?: unknown; message?: unknown } | undefined;
          if (typeof error?.error !== 'string' || typeof error.message !== 'string') {
            throw new ContractViolation(
              `${method} ${url} answered ${status} without { error, message }: ${text.slice(0, 200)}`,
            );
          }
        } else if (status !== 204 && body === undefined) {
          throw new ContractViolation(`${method} ${url} answered ${status} with an empty body`);
        }
      },
      runs,
      outcomes,
    );
  } finally {
    await built?.app.close();
    await db?.close();
    await rm(scratch, { recursive: true, force: true });
  }
}
