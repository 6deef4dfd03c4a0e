/**
 * The federation bundle endpoint (`--bundle-endpoint-address`, SPIFFE_Federation.md) of a real `sigil-server run`:
 * in the `https_spiffe` profile its certificate is an X509-SVID of the server's own SPIFFE ID that verifies against
 * the served bundle (checked with @sigil/spiffe and with `openssl s_client`); in `https_web` it is the configured
 * WebPKI certificate, checked by hostname. Both serve `bundle show --format spiffe`'s document at `GET /` only,
 * under the per-address read budget.
 */
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TLSSocket } from 'node:tls';
import { peerCertificateChain, TrustBundle, TrustDomain, verifyX509SvidSync } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opensslSelfSigned, runOpenssl } from '../support/openssl.js';
import { type ServerProcess, closeTestDatabase, requireBuild, startServerProcess } from '../support/sigil-processes.js';

const TD = TrustDomain.parse('example.org');

interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The DER chain the server presented, leaf first. */
  chain: Uint8Array[];
}

function fetchEndpoint(port: number, options: RequestOptions = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(
      { host: '127.0.0.1', port, path: '/', method: 'GET', agent: false, rejectUnauthorized: false, ...options },
      (response) => {
        const chain = peerCertificateChain((response.socket as TLSSocket).getPeerCertificate(true));
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body, chain }));
      },
    );
    request.on('error', reject);
    request.end();
  });
}

async function endpointPort(server: ServerProcess): Promise<number> {
  const [, port] = (await server.process.waitFor(/"bundleEndpoint":"127\.0\.0\.1:(\d+)"/)) as [string, string];
  return Number(port);
}

async function ownJwks(server: ServerProcess): Promise<unknown> {
  const shown = await server.cli(['bundle', 'show', '--format', 'spiffe']);
  expect(shown.code).toBe(0);
  return JSON.parse(shown.stdout);
}

describe('bundle endpoint (real server): https_spiffe and https_web profiles', () => {
  let scratch: string;
  let server: ServerProcess | undefined;

  beforeAll(async () => {
    requireBuild();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-bundle-endpoint-'));
  });

  afterAll(async () => {
    await server?.process.stop('SIGKILL');
    await closeTestDatabase();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it('https_spiffe: the server SVID verifies against the served bundle; GET / only; openssl agrees', async () => {
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: ['--bundle-endpoint-address', '127.0.0.1:0', '--public-read-rate', '1', '--public-read-burst', '8'],
    });
    const port = await endpointPort(server);
    const fetched = await fetchEndpoint(port);
    expect(fetched.status).toBe(200);
    expect(fetched.headers['content-type']).toMatch(/^application\/json/);
    const served = JSON.parse(fetched.body) as { spiffe_sequence?: number; spiffe_refresh_hint?: number };
    expect(served).toEqual(await ownJwks(server));
    expect(served.spiffe_sequence).toBeGreaterThan(0);
    expect(served.spiffe_refresh_hint).toBeGreaterThan(0);
    const bundle = TrustBundle.parseJwks(TD, fetched.body);
    expect(bundle.x509Authorities.length).toBeGreaterThan(0);
    const verified = verifyX509SvidSync(fetched.chain, bundle);
    expect(verified.spiffeId.toString()).toBe('spiffe://example.org/sigil/server');
    // A bundle without our CA does not verify it.
    const other = TrustBundle.create(TrustDomain.parse('example.org'));
    expect(() => verifyX509SvidSync(fetched.chain, other)).toThrow();

    const pem = bundle.x509Pem();
    const openssl = await runOpenssl(
      ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', '{bundle.pem}', '-verify_return_error', '-brief'],
      { 'bundle.pem': pem },
    );
    expect(openssl.stderr + openssl.stdout).toMatch(/Verification: OK/);
    const wrongCa = await runOpenssl(
      ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', '{web.pem}', '-verify_return_error', '-brief'],
      { 'web.pem': (await opensslSelfSigned('/CN=unrelated')).certificatePem },
    );
    expect(wrongCa.code).not.toBe(0);

    expect((await fetchEndpoint(port, { method: 'POST' })).status).toBe(405);
    expect((await fetchEndpoint(port, { method: 'DELETE' })).headers.allow).toBe('GET');
    for (const path of ['/bundle', '/v1/bundle', '/healthz', '/v1/entries', '/metrics']) {
      const answer = await fetchEndpoint(port, { path });
      expect(answer.status, path).toBe(404);
      expect(answer.body, path).not.toMatch(/x509-svid/);
    }

    // The per-address read budget (burst 8, 1 a second) is the /bundle route's: a burst gets 429 with Retry-After.
    const answers = await Promise.all(Array.from({ length: 12 }, () => fetchEndpoint(port)));
    const refused = answers.filter((answer) => answer.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]?.headers['retry-after']).toMatch(/^\d+$/);
    await server.process.stop();
  }, 120_000);

  it('https_web: presents the configured certificate, verified by hostname; same document', async () => {
    const web = await opensslSelfSigned('/CN=localhost', ['subjectAltName=DNS:localhost,IP:127.0.0.1']);
    const certFile = join(scratch, 'web-cert.pem');
    const keyFile = join(scratch, 'web-key.pem');
    await writeFile(certFile, web.certificatePem);
    await writeFile(keyFile, web.keyPem, { mode: 0o600 });
    await server?.process.stop(); // the https_spiffe test's server, if it failed before stopping it
    server = await startServerProcess({
      dir: join(scratch, 'server'),
      flags: [
        '--bundle-endpoint-address',
        '127.0.0.1:0',
        '--bundle-endpoint-profile',
        'https_web',
        '--bundle-endpoint-cert-file',
        certFile,
        '--bundle-endpoint-key-file',
        keyFile,
      ],
    });
    const port = await endpointPort(server);
    const cert = await readFile(certFile, 'utf8');
    const fetched = await fetchEndpoint(port, { rejectUnauthorized: true, ca: cert, servername: 'localhost' });
    expect(fetched.status).toBe(200);
    expect(Buffer.from(fetched.chain[0]!).equals(new X509Certificate(cert).raw)).toBe(true);
    expect(JSON.parse(fetched.body)).toEqual(await ownJwks(server));
    expect(TrustBundle.parseJwks(TD, fetched.body).x509Authorities.length).toBeGreaterThan(0);
    // A client that expects another name refuses it (WebPKI hostname check).
    await expect(
      fetchEndpoint(port, { rejectUnauthorized: true, ca: cert, servername: 'bundles.other.example' }),
    ).rejects.toThrow(/altnames|Hostname/i);
    const openssl = await runOpenssl(
      [
        's_client',
        '-connect',
        `127.0.0.1:${port}`,
        '-CAfile',
        '{cert.pem}',
        '-verify_hostname',
        'localhost',
        '-verify_return_error',
        '-brief',
      ],
      { 'cert.pem': cert },
    );
    expect(openssl.stderr + openssl.stdout).toMatch(/Verification: OK/);
  }, 120_000);
});
