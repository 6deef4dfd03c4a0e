/**
 * `sigil-server localauthority x509|jwt …`, `x509 mint` and `jwt mint` (SPIRE's commands) through the real binary
 * against a real server (both databases): the state changes and their SPIRE-shaped output, minted SVIDs checked with
 * openssl and jose against the server's bundle, the key made by the CLI alone (the API takes a CSR), the SPIFFE ID
 * and TTL rules, and no minted token in the server's log.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SVID_BACKDATE_SECONDS } from '@sigil/pki';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Authority, AuthorityState } from '../../apps/server/src/cli/localauthority.command.js';
import { type JsonAnswer, unixJsonRequest } from '../support/unix-http.js';
import { opensslText, opensslVerify, runOpenssl } from '../support/openssl.js';
import { closeTestDatabase, requireBuild, startServerProcess, type ServerProcess } from '../support/sigil-processes.js';

/** Sends a raw admin API request over the server's socket (for what the CLI never sends). */
const adminRequest = (socketPath: string, path: string, body: unknown): Promise<JsonAnswer> =>
  unixJsonRequest(socketPath, 'POST', path, JSON.stringify(body));

describe('sigil-server localauthority and mint commands (real binary, real server)', { timeout: 180_000 }, () => {
  let dir: string;
  let server: ServerProcess;

  beforeAll(async () => {
    requireBuild();
    dir = await mkdtemp(join(tmpdir(), 'sigil-cli-mint-'));
    server = await startServerProcess({ dir, flags: ['--log-level', 'debug'] });
  });

  afterAll(async () => {
    await server?.process.stop('SIGKILL');
    await closeTestDatabase();
    await rm(dir, { recursive: true, force: true });
  });

  describe('x509 mint', () => {
    it('writes svid.pem, key.pem (0600) and bundle.pem that openssl verifies, with the ID, DNS names and TTL', async () => {
      const out = join(dir, 'minted');
      const started = Date.now();
      const result = await server.cli([
        'x509',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/web',
        '--dns',
        'web.example.org',
        '--dns',
        'Www.Example.org',
        '--ttl',
        '10m',
        '--write',
        out,
      ]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toBe(
        `X509-SVID written to ${out}/svid.pem\nPrivate key written to ${out}/key.pem\nRoot CAs written to ${out}/bundle.pem\n`,
      );
      expect((await stat(join(out, 'key.pem'))).mode & 0o777).toBe(0o600);
      expect((await stat(join(out, 'svid.pem'))).mode & 0o777).toBe(0o644);
      expect((await stat(join(out, 'bundle.pem'))).mode & 0o777).toBe(0o644);

      const svid = await readFile(join(out, 'svid.pem'), 'utf8');
      const bundle = await readFile(join(out, 'bundle.pem'), 'utf8');
      const verified = await opensslVerify({ root: bundle, leaf: svid, purpose: 'sslclient' });
      expect(verified.output).toContain('OK');
      expect(verified.ok).toBe(true);
      const text = await opensslText(svid);
      expect(text).toMatch(/URI:spiffe:\/\/example\.org\/web/);
      expect(text).toMatch(/DNS:web\.example\.org, DNS:www\.example\.org/);
      // The asked TTL, from the (backdated) not-before: the whole lifetime is the TTL plus the backdating.
      const notBefore = Date.parse(/Not Before: (.+)/.exec(text)![1]!);
      const notAfter = Date.parse(/Not After : (.+)/.exec(text)![1]!);
      expect(notAfter - notBefore).toBe((600 + SVID_BACKDATE_SECONDS) * 1000);
      expect(notAfter).toBeGreaterThanOrEqual(started + 599_000);

      // The key written is the certificate's: the same public key, which openssl derives from each.
      const fromKey = await runOpenssl(['pkey', '-in', '{key.pem}', '-pubout'], {
        'key.pem': await readFile(join(out, 'key.pem'), 'utf8'),
      });
      const fromCert = await runOpenssl(['x509', '-in', '{svid.pem}', '-noout', '-pubkey'], { 'svid.pem': svid });
      expect(fromKey.code).toBe(0);
      expect(fromKey.stdout).toBe(fromCert.stdout);
    });

    it("prints SPIRE's JSON (x509_svid, private_key, root_cas) and the PEM text otherwise", async () => {
      const json = await server.json<{ x509_svid: string[]; private_key: string; root_cas: string[] }>([
        'x509',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/json',
      ]);
      expect(json.x509_svid).toHaveLength(1);
      expect(json.root_cas.length).toBeGreaterThanOrEqual(1);
      // The private key (PKCS#8 DER) is the certificate's: openssl derives the same public key from each.
      const pem = (label: string, der: string): string =>
        `-----BEGIN ${label}-----\n${der.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
      const fromKey = await runOpenssl(['pkey', '-in', '{key.pem}', '-pubout'], {
        'key.pem': pem('PRIVATE KEY', json.private_key),
      });
      const fromCert = await runOpenssl(['x509', '-in', '{svid.pem}', '-noout', '-pubkey'], {
        'svid.pem': pem('CERTIFICATE', json.x509_svid[0]!),
      });
      expect(fromKey.code).toBe(0);
      expect(fromKey.stdout).toBe(fromCert.stdout);
      expect(await opensslText(Buffer.from(json.x509_svid[0]!, 'base64'))).toContain('URI:spiffe://example.org/json');
      const roots = await server.json<{ keys: { use: string; x5c?: string[] }[] }>([
        'bundle',
        'show',
        '--format',
        'spiffe',
      ]);
      expect(json.root_cas).toEqual(roots.keys.filter((key) => key.use === 'x509-svid').map((key) => key.x5c![0]));

      const text = await server.cli(['x509', 'mint', '--spiffe-id', 'spiffe://example.org/text']);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(
        /^X509-SVID:\n-----BEGIN CERTIFICATE-----\n[\s\S]+\nPrivate key:\n-----BEGIN PRIVATE KEY-----\n[\s\S]+\nRoot CAs:\n-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/,
      );
    });

    it('warns on stderr when the CA ends before the asked TTL, as SPIRE does', async () => {
      const result = await server.cli(['x509', 'mint', '--spiffe-id', 'spiffe://example.org/long', '--ttl', '300d']);
      expect(result.code).toBe(0);
      expect(result.stderr).toMatch(/^X509-SVID lifetime was capped shorter than specified ttl; expires "20.+"\n$/);
    });

    it("refuses IDs outside the trust domain, Sigil's reserved paths and TTLs beyond an entry's bounds", async () => {
      const refused = async (args: string[]): Promise<unknown> => {
        const result = await server.cli(['x509', 'mint', ...args, '--output', 'json']);
        expect(result.code).toBe(1);
        return JSON.parse(result.stderr);
      };
      expect(await refused(['--spiffe-id', 'spiffe://other.org/web'])).toEqual({
        error: 'invalid_argument',
        message: 'csr: URI SAN: must be in trust domain "example.org", got "other.org"',
      });
      expect(await refused(['--spiffe-id', 'spiffe://example.org/sigil/agent/join_token/x'])).toEqual({
        error: 'invalid_argument',
        message: 'csr: URI SAN: path "/sigil/agent/join_token/x" is reserved for sigil servers and agents',
      });
      expect(await refused(['--spiffe-id', 'spiffe://example.org/web', '--ttl', '400d'])).toEqual({
        error: 'invalid_argument',
        message: 'ttl: must be 0 (the server default) or from 60 to 31536000 seconds, got 34560000',
      });
      expect(await refused(['--spiffe-id', 'not an id'])).toMatchObject({ error: 'invalid_argument' });
    });

    it('the API takes a CSR (never a key) and refuses one without exactly one URI SAN', async () => {
      const key = await runOpenssl(
        ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', '{k.pem}'],
        {},
        ['k.pem'],
      );
      const csrWith = async (san: string): Promise<string> => {
        const made = await runOpenssl(
          ['req', '-new', '-key', '{k.pem}', '-subj', '/O=x', '-addext', `subjectAltName=${san}`, '-out', '{r.pem}'],
          { 'k.pem': key.files['k.pem']! },
          ['r.pem'],
        );
        expect(made.code).toBe(0);
        return made.files['r.pem']!;
      };
      const two = await adminRequest(server.adminSocket, '/v1/x509-svids/mint', {
        csr: await csrWith('URI:spiffe://example.org/a,URI:spiffe://example.org/b'),
      });
      expect(two).toEqual({
        status: 400,
        body: { error: 'invalid_argument', message: 'csr: must request exactly one URI SAN, the SPIFFE ID; has 2' },
      });
      const withKey = await adminRequest(server.adminSocket, '/v1/x509-svids/mint', {
        csr: await csrWith('URI:spiffe://example.org/a'),
        private_key: key.files['k.pem'],
      });
      expect(withKey.status).toBe(400);
      expect(withKey.body.message).toMatch(/private_key/);
      const good = await adminRequest(server.adminSocket, '/v1/x509-svids/mint', {
        csr: await csrWith('URI:spiffe://example.org/a'),
      });
      expect(good.status).toBe(200);
      expect(good.body).toMatchObject({ spiffe_id: 'spiffe://example.org/a', cert_chain: [expect.any(String)] });
      const garbage = await adminRequest(server.adminSocket, '/v1/x509-svids/mint', { csr: 'not a csr!' });
      expect(garbage).toEqual({
        status: 400,
        body: { error: 'invalid_argument', message: 'csr: must be PEM or base64 DER' },
      });
    });
  });

  describe('jwt mint', () => {
    it('prints a JWT-SVID that verifies against the bundle, and never logs it', async () => {
      const token = await server.cli([
        'jwt',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/api',
        '--audience',
        'a',
        '--audience',
        'b',
        '--ttl',
        '2m',
      ]);
      expect(token).toMatchObject({ code: 0, stderr: '' });
      const jwt = token.stdout.trim();
      const bundle = await server.json<JSONWebKeySet>(['bundle', 'show', '--format', 'spiffe']);
      // jose takes only `use: sig` keys: the SPIFFE bundle's `jwt-svid` keys are given without their `use`.
      const jwks = createLocalJWKSet({
        keys: bundle.keys.filter((key) => key.use === 'jwt-svid').map(({ use: _use, ...key }) => key),
      });
      const { payload } = await jwtVerify(jwt, jwks, { audience: 'b' });
      expect(payload).toMatchObject({ sub: 'spiffe://example.org/api', aud: ['a', 'b'] });
      expect(payload.exp! - payload.iat!).toBe(120);

      const json = await server.json<{ spiffe_id: string; token: string; expires_at: string }>([
        'jwt',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/api',
        '--audience',
        'c',
      ]);
      expect(json.spiffe_id).toBe('spiffe://example.org/api');

      const file = join(dir, 'token.jwt');
      const written = await server.cli([
        'jwt',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/api',
        '--audience',
        'd',
        '--write',
        file,
      ]);
      expect(written).toMatchObject({ code: 0, stdout: `JWT-SVID written to ${file}\n` });
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const fromFile = await readFile(file, 'utf8');
      await expect(jwtVerify(fromFile, jwks, { audience: 'd' })).resolves.toBeDefined();

      // The server logs at debug level here; none of the three tokens appears in its output.
      const log = server.process.output();
      expect(log).toContain('"msg":"sigil-server listening"');
      for (const minted of [jwt, json.token, fromFile]) expect(log).not.toContain(minted.split('.')[2]);
    });

    it('requires an audience and keeps JWT TTLs within a day', async () => {
      const noAudience = await server.cli(['jwt', 'mint', '--spiffe-id', 'spiffe://example.org/api']);
      expect(noAudience).toMatchObject({
        code: 1,
        stderr: "Error: required option '--audience <aud>' not specified\n",
      });
      const long = await server.cli([
        'jwt',
        'mint',
        '--spiffe-id',
        'spiffe://example.org/api',
        '--audience',
        'a',
        '--ttl',
        '2d',
      ]);
      expect(long).toMatchObject({
        code: 1,
        stderr: 'Error: ttl: must be 0 (the server default) or from 30 to 86400 seconds, got 172800\n',
      });
      const other = await server.cli(['jwt', 'mint', '--spiffe-id', 'spiffe://other.org/api', '--audience', 'a']);
      expect(other).toMatchObject({
        code: 1,
        stderr: 'Error: spiffe_id: must be in trust domain "example.org", got "other.org"\n',
      });
    });
  });

  for (const kind of ['x509', 'jwt'] as const) {
    const label = kind === 'x509' ? 'X.509' : 'JWT';
    it(`localauthority ${kind}: show, prepare, activate, taint, revoke with SPIRE's output`, async () => {
      const show = (): Promise<AuthorityState> => server.json<AuthorityState>(['localauthority', kind, 'show']);
      const before = await show();
      expect(before.active).toMatchObject({ state: 'active', tainted: false });

      const text = await server.cli(['localauthority', kind, 'show']);
      expect(text.code).toBe(0);
      expect(text.stdout).toContain(
        `Active ${label} authority:\n  Authority ID: ${before.active!.authority_id}\n  Expires at: ${before.active!.expires_at}\n`,
      );
      expect(text.stdout).toContain(`Prepared ${label} authority:\n  No prepared ${label} authority found\n`);

      const prepared = await server.cli(['localauthority', kind, 'prepare']);
      expect(prepared.code).toBe(0);
      expect(prepared.stdout).toMatch(new RegExp(`^Prepared ${label} authority:\\n  Authority ID: (\\S+)\\n`));
      const next = (await show()).prepared!;
      expect(prepared.stdout).toContain(next.authority_id);

      const wrong = await server.cli([
        'localauthority',
        kind,
        'activate',
        '--authority-id',
        'nope',
        '--output',
        'json',
      ]);
      expect(wrong.code).toBe(1);
      expect(JSON.parse(wrong.stderr)).toEqual({
        error: 'invalid_argument',
        message: `authorityId: 'nope' is not the prepared ${kind} authority (that is '${next.authority_id}')`,
      });
      const missing = await server.cli(['localauthority', kind, 'taint']);
      expect(missing).toMatchObject({
        code: 1,
        stderr: "Error: required option '--authority-id <id>' not specified\n",
      });

      const activated = await server.json<{ activated_authority: Authority }>([
        'localauthority',
        kind,
        'activate',
        '--authority-id',
        next.authority_id,
      ]);
      expect(activated.activated_authority).toMatchObject({ authority_id: next.authority_id, state: 'active' });
      const after = await show();
      expect(after.active!.authority_id).toBe(next.authority_id);
      expect(after.old.map((key) => key.authority_id)).toContain(before.active!.authority_id);

      const old = before.active!.authority_id;
      const early = await server.cli(['localauthority', kind, 'revoke', '--authority-id', old]);
      expect(early).toMatchObject({
        code: 1,
        stderr: `Error: authorityId: '${old}' must be tainted before it is revoked\n`,
      });
      const tainted = await server.cli(['localauthority', kind, 'taint', '--authority-id', old]);
      expect(tainted.code).toBe(0);
      expect(tainted.stdout).toMatch(
        new RegExp(`^Tainted ${label} authority:\\n  Authority ID: ${old}\\n[\\s\\S]*  Tainted: true\\n$`),
      );
      const revoked = await server.json<{ revoked_authority: Authority }>([
        'localauthority',
        kind,
        'revoke',
        '--authority-id',
        old,
      ]);
      expect(revoked.revoked_authority).toMatchObject({ authority_id: old, tainted: true, revoked: true });
      expect((await show()).old.find((key) => key.authority_id === old)).toMatchObject({ revoked: true });
    });
  }
});
