/**
 * Admin SVIDs and OIDC discovery end to end: an in-process sigil-server (its audit log and clock at hand) and a real
 * `sigil-agent` process; the workload's X509-SVIDs and JWT-SVIDs come from the agent's Workload API through the
 * Node client library.
 * - Admin SVIDs (issue 14 item 4): the workload's SVID of an entry with `admin: true` calls the admin API over mTLS
 *   on the TLS port and is audited by its SPIFFE ID; its SVID of a non-admin entry, the agent's SVID, an SVID of
 *   another trust domain and an expired SVID are refused, and an entry losing `admin` takes effect at once.
 * - OIDC discovery (item 5): JWT-SVIDs carry `iss` = `jwt_issuer`, and `jose` validates one knowing only the
 *   discovery document's URL (document → `jwks_uri` → keys).
 */
import { randomUUID, webcrypto } from 'node:crypto';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { encodePemBlock, type X509Svid } from '@sigil/spiffe';
import { JwtSource, X509Source } from '@sigil/workload-api';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../apps/server/src/app.js';
import { createRootLogger } from '../../apps/server/src/common/logging.js';
import { Database } from '../../apps/server/src/database/database.js';
import { type TestDatabase } from '../support/database.js';
import { agentReady, requireBuild, type SigilProcess, startAgentProcess } from '../support/sigil-processes.js';
import { testServerConfig } from '../support/server-config.js';
import { TestCa } from '../support/test-ca.js';
import { unixJsonRequest } from '../support/unix-http.js';

const UID = process.getuid!();
const TD = 'example.org';
const HOST_ID = `spiffe://${TD}/host`;
const ADMIN_ID = `spiffe://${TD}/admin-tool`;
const WEB_ID = `spiffe://${TD}/web`;
const ISSUER = 'https://oidc.example.org';

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** A TLS client certificate: PEM chain and key. */
interface ClientCredentials {
  cert: string;
  key: string;
}

async function credentialsOf(svid: X509Svid): Promise<ClientCredentials> {
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', svid.privateKey));
  return {
    cert: svid.certificates.map((cert) => cert.toString('pem')).join('\n'),
    key: encodePemBlock('PRIVATE KEY', pkcs8),
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('admin SVIDs and OIDC discovery (real server + agent + Workload API)', () => {
  let scratch: string;
  let db: TestDatabase | undefined;
  let database: DataSource;
  let server: RunningServer;
  let agent: SigilProcess | undefined;
  let svids: X509Source | undefined;
  let jwts: JwtSource | undefined;
  let oidcPort: number;
  /** Added to the server's clock (the admin guard reads it), to present an SVID after its expiry without waiting. */
  let clockOffsetMs = 0;
  const adminEntryId = randomUUID();

  const admin = (method: string, path: string, body?: unknown) =>
    unixJsonRequest(server.adminSocket, method, path, body === undefined ? undefined : JSON.stringify(body));

  /** Calls the TLS port with `credentials` as client certificate (a new connection each time). */
  const callTls = (method: string, path: string, credentials?: ClientCredentials, body?: unknown): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: server.address.port,
          method,
          path,
          agent: false,
          rejectUnauthorized: false,
          ...credentials,
          headers: payload === undefined ? {} : { 'content-type': 'application/json' },
        },
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

  const svidOf = (spiffeId: string): X509Svid => {
    const svid = svids!.getX509Svids().find((candidate) => candidate.spiffeId.toString() === spiffeId);
    if (svid === undefined) throw new Error(`the workload has no SVID for ${spiffeId}`);
    return svid;
  };

  const auditRows = (actor: string): Promise<Record<string, unknown>[]> =>
    database.query('SELECT actor, action, result, status_code FROM audit_log WHERE actor = $1 ORDER BY id', [actor]);

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-admin-svid-'));
    oidcPort = await freePort();
    const setup = await testServerConfig(scratch, {
      jwtIssuer: ISSUER,
      oidcDiscoveryAddress: `127.0.0.1:${oidcPort}`,
      oidcJwksUri: `http://127.0.0.1:${oidcPort}/keys`,
    });
    db = setup.database;
    server = await startServer(setup.config, {
      clock: { now: () => new Date(Date.now() + clockOffsetMs) },
      logger: createRootLogger('error', new Writable({ write: (_chunk, _encoding, done) => done() })),
    });
    database = db?.dataSource ?? server.app.get(Database).dataSource;

    const selectors = [{ type: 'unix', value: `uid:${UID}` }];
    const created = await admin('POST', '/v1/entries', {
      entries: [
        { id: adminEntryId, spiffe_id: ADMIN_ID, parent_id: HOST_ID, selectors, admin: true },
        { spiffe_id: WEB_ID, parent_id: HOST_ID, selectors },
      ],
    });
    expect(created.status).toBe(200);
    const token = await admin('POST', '/v1/join-tokens', { spiffe_id: HOST_ID });
    expect(token.status).toBe(201);
    const bundle = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ socketPath: server.adminSocket, path: '/v1/bundle?format=pem' }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
    await writeFile(join(scratch, 'bundle.pem'), bundle);
    const socketPath = join(scratch, 'agent', 'api.sock');
    agent = startAgentProcess({
      servers: [server.address.port],
      socketPath,
      dataDir: join(scratch, 'agent-data'),
      trustBundle: join(scratch, 'bundle.pem'),
      joinToken: token.body['token'] as string,
    });
    await agentReady(agent);
    svids = await X509Source.create({ clientOptions: { address: `unix://${socketPath}` }, timeoutMs: 60_000 });
    const deadline = Date.now() + 30_000;
    while (svids.getX509Svids().length < 2) {
      if (Date.now() > deadline) throw new Error('the workload did not get both SVIDs');
      await new Promise((done) => setTimeout(done, 50));
    }
    jwts = await JwtSource.create({ clientOptions: { address: `unix://${socketPath}` }, timeoutMs: 60_000 });
  }, 120_000);

  afterAll(async () => {
    await svids?.close();
    await jwts?.close();
    await agent?.stop();
    await server?.close();
    await db?.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('accepts the SVID of an admin entry on the TLS port, and audits the call by its SPIFFE ID', async () => {
    const credentials = await credentialsOf(svidOf(ADMIN_ID));
    const listed = await callTls('GET', `/v1/entries?spiffe_id=${encodeURIComponent(WEB_ID)}`, credentials);
    expect(listed.status).toBe(200);
    expect(listed.body['entries']).toMatchObject([{ spiffe_id: WEB_ID, admin: false }]);
    const token = await callTls('POST', '/v1/join-tokens', credentials, { spiffe_id: `spiffe://${TD}/node-2` });
    expect(token.status).toBe(201);
    expect(await auditRows(ADMIN_ID)).toEqual([
      { actor: ADMIN_ID, action: 'join_token.create', result: 'ok', status_code: 201 },
    ]);
  });

  it("refuses the same workload's SVID of a non-admin entry (403), and audits nothing for it", async () => {
    const refused = await callTls('GET', '/v1/entries', await credentialsOf(svidOf(WEB_ID)));
    expect(refused).toEqual({
      status: 403,
      body: {
        error: 'permission_denied',
        message: `client certificate: ${WEB_ID} is not an admin (no unexpired entry with admin: true for it)`,
      },
    });
    const mutation = await callTls('POST', '/v1/join-tokens', await credentialsOf(svidOf(WEB_ID)), {});
    expect(mutation.status).toBe(403);
    expect(await auditRows(WEB_ID)).toEqual([]);
  });

  it("refuses the agent's own SVID (403): agents never call the admin API", async () => {
    const dir = join(scratch, 'agent-data');
    const credentials = {
      cert: await readFile(join(dir, 'agent-svid.pem'), 'utf8'),
      key: await readFile(join(dir, 'agent-key.pem'), 'utf8'),
    };
    const refused = await callTls('GET', '/v1/entries', credentials);
    expect(refused.status).toBe(403);
    expect(refused.body['message']).toMatch(
      new RegExp(`^client certificate: spiffe://${TD}/sigil/agent/join_token/\\S+ is an agent SVID`),
    );
  });

  it('refuses an SVID of another trust domain, and one of ours made by another CA (401)', async () => {
    for (const [trustDomain, id] of [
      ['other.org', 'spiffe://other.org/admin-tool'],
      [TD, ADMIN_ID],
    ] as const) {
      const ca = await TestCa.create(trustDomain);
      const forged = await ca.createX509Svid(id);
      const credentials = {
        cert: forged.certificate.toString('pem'),
        key: encodePemBlock('PRIVATE KEY', await forged.privateKeyPkcs8()),
      };
      const refused = await callTls('GET', '/v1/entries', credentials);
      expect({ id, status: refused.status, error: refused.body['error'] }).toEqual({
        id,
        status: 401,
        error: 'unauthenticated',
      });
      expect(refused.body['message']).toMatch(/^client certificate: /);
    }
  });

  it('refuses the admin SVID once it has expired (401)', async () => {
    const svid = svidOf(ADMIN_ID);
    const credentials = await credentialsOf(svid);
    clockOffsetMs = svid.certificates[0]!.notAfter.getTime() - Date.now() + 60_000;
    let refused: Answer;
    try {
      refused = await callTls('GET', '/v1/entries', credentials);
    } finally {
      clockOffsetMs = 0;
    }
    expect(refused.status).toBe(401);
    expect(refused.body['message']).toMatch(/^client certificate: .*expired/);
    expect((await callTls('GET', '/v1/entries', credentials)).status).toBe(200);
  });

  it('stops accepting the SVID as soon as its entry loses admin: true, and accepts it again once restored', async () => {
    const credentials = await credentialsOf(svidOf(ADMIN_ID));
    const waitForStatus = async (status: number): Promise<Answer> => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const answer = await callTls('GET', '/v1/entries', credentials);
        if (answer.status === status || Date.now() > deadline) return answer;
        await new Promise((done) => setTimeout(done, 20));
      }
    };
    expect((await admin('PATCH', `/v1/entries/${adminEntryId}`, { admin: false })).status).toBe(200);
    expect((await waitForStatus(403)).body).toEqual({
      error: 'permission_denied',
      message: `client certificate: ${ADMIN_ID} is not an admin (no unexpired entry with admin: true for it)`,
    });
    expect((await admin('PATCH', `/v1/entries/${adminEntryId}`, { admin: true })).status).toBe(200);
    expect((await waitForStatus(200)).status).toBe(200);
  });

  it('without a client certificate or token, names every way in (401)', async () => {
    expect(await callTls('GET', '/v1/entries')).toEqual({
      status: 401,
      body: {
        error: 'unauthenticated',
        message:
          'authorization: admin API needs a bearer admin token, an admin X509-SVID (mTLS) or the local admin socket',
      },
    });
  });

  it('JWT-SVIDs carry iss = jwt_issuer and validate with jose from the discovery document alone', async () => {
    const { token } = await jwts!.fetchJwtSvid({ audience: 'sts.example.com', spiffeId: WEB_ID });
    const discovery = await fetch(`http://127.0.0.1:${oidcPort}/.well-known/openid-configuration`);
    expect(discovery.status).toBe(200);
    const document = (await discovery.json()) as { issuer: string; jwks_uri: string };
    expect(document).toMatchObject({
      issuer: ISSUER,
      jwks_uri: `http://127.0.0.1:${oidcPort}/keys`,
      response_types_supported: ['id_token'],
      id_token_signing_alg_values_supported: expect.arrayContaining(['ES256']),
    });
    const keys = createRemoteJWKSet(new URL(document.jwks_uri));
    const { payload, protectedHeader } = await jwtVerify(token, keys, {
      issuer: document.issuer,
      audience: 'sts.example.com',
    });
    expect(payload.sub).toBe(WEB_ID);
    expect(protectedHeader.alg).toBe('ES256');
    await expect(jwtVerify(token, keys, { issuer: document.issuer, audience: 'other' })).rejects.toThrow(/aud/);
    await expect(
      jwtVerify(token, keys, { issuer: 'https://elsewhere.example', audience: 'sts.example.com' }),
    ).rejects.toThrow(/iss/);
  });

  it('serves /keys with public parts only, use sig, kid and alg; the TLS port serves neither path', async () => {
    const answer = await fetch(`http://127.0.0.1:${oidcPort}/keys`);
    expect(answer.headers.get('cache-control')).toBe('no-cache, no-store, must-revalidate');
    const { keys } = (await answer.json()) as { keys: Record<string, unknown>[] };
    expect(keys.length).toBeGreaterThanOrEqual(1);
    for (const key of keys) {
      expect(Object.keys(key).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
      expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', use: 'sig', alg: 'ES256' });
    }
    const bundleKids = ((await admin('GET', '/v1/bundle')).body['keys'] as { use: string; kid?: string }[])
      .filter((key) => key.use === 'jwt-svid')
      .map((key) => key.kid);
    expect(keys.map((key) => key['kid'])).toEqual(bundleKids);
    expect((await fetch(`http://127.0.0.1:${oidcPort}/v1/entries`)).status).toBe(404);
    for (const path of ['/.well-known/openid-configuration', '/keys']) {
      const onTls = await callTls('GET', path);
      expect(onTls).toEqual({
        status: 404,
        body: { error: 'not_found', message: `${path} is served on the OIDC discovery address only` },
      });
    }
  });
});
