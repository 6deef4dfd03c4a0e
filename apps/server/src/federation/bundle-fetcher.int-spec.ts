import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { SpiffeId, TrustBundle, TrustDomain } from '@sigil/spiffe';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRoutesApp } from '../../../../test/support/routes-app.js';
import { TestCa, type TestSvid } from '../../../../test/support/test-ca.js';
import type { ServerConfig } from '../config.js';
import { EntriesModule } from '../entries/entries.module.js';
import { MetricsModule } from '../health/metrics.module.js';
import { MetricsService } from '../health/metrics.service.js';
import { fetchFederatedBundle } from './bundle-endpoint-client.js';
import {
  BUNDLE_REFRESH,
  BundleFetcherService,
  intervalAfterSuccess,
  retryAfterFailure,
} from './bundle-fetcher.service.js';
import { FEDERATED_BUNDLE_LIMITS } from './federated-bundle-rules.js';
import { FederationModule } from './federation.module.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A real HTTPS bundle endpoint on 127.0.0.1 presenting `svid`, answering with the current `handler`. */
async function startEndpoint(svid: TestSvid): Promise<{ url: string; server: Server; handle: (h: Handler) => void }> {
  let handler: Handler = (_req, res) => res.writeHead(500).end();
  const key = Buffer.from(await svid.privateKeyPkcs8()).toString('base64');
  const server = createServer(
    {
      key: `-----BEGIN PRIVATE KEY-----\n${key.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`,
      cert: svid.chain.map((cert) => cert.toString('pem')).join('\n'),
    },
    (req, res) => handler(req, res),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `https://127.0.0.1:${port}/`, server, handle: (h) => (handler = h) };
}

const serve =
  (text: string): Handler =>
  (_req, res) =>
    res.writeHead(200, { 'content-type': 'application/json' }).end(text);

// The fetcher against real HTTPS bundle endpoints on 127.0.0.1, through the admin route of `federation refresh` and
// its own schedule (tick), on a real database.
describe('federated bundle fetcher', () => {
  let db: TestDatabase;
  let app: NestFastifyApplication;
  let clock: FakeClock;
  let scratch: string;
  let foreign: TestCa;
  let spiffeEndpoint: Awaited<ReturnType<typeof startEndpoint>>;
  let wrongIdEndpoint: Awaited<ReturnType<typeof startEndpoint>>;
  let strangerEndpoint: Awaited<ReturnType<typeof startEndpoint>>;
  let webEndpoint: Awaited<ReturnType<typeof startEndpoint>>;
  const otherTd = TrustDomain.parse('other.org');

  beforeAll(async () => {
    db = await useTestDatabase();
    scratch = await mkdtemp(join(tmpdir(), 'sigil-fetcher-'));
    foreign = await TestCa.create(otherTd);
    const webCa = await TestCa.create('web.test');
    const webCaFile = join(scratch, 'web-ca.pem');
    await writeFile(webCaFile, webCa.certificate.toString('pem'));
    spiffeEndpoint = await startEndpoint(await foreign.createX509Svid('spiffe://other.org/sigil/server'));
    wrongIdEndpoint = await startEndpoint(await foreign.createX509Svid('spiffe://other.org/impostor'));
    strangerEndpoint = await startEndpoint(
      await (await TestCa.create(otherTd)).createX509Svid('spiffe://other.org/sigil/server'),
    );
    webEndpoint = await startEndpoint(
      await webCa.createX509Svid('spiffe://web.test/unused', { uris: [], dnsNames: ['localhost'] }),
    );
    const config = {
      trustDomain: TrustDomain.parse('example.org'),
      caTtlSeconds: 86_400,
      federationWebCaFile: webCaFile,
    } as ServerConfig;
    clock = new FakeClock(Date.now());
    app = await createRoutesApp(db, config, clock, [MetricsModule, EntriesModule, FederationModule]);
  });

  afterAll(async () => {
    await app?.close();
    await db?.close();
    for (const endpoint of [spiffeEndpoint, wrongIdEndpoint, strangerEndpoint, webEndpoint]) endpoint?.server.close();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await db.dataSource.query(`DELETE FROM federation_relationships`);
    await db.dataSource.query(`DELETE FROM bundles WHERE trust_domain <> 'example.org'`);
  });

  const call = async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) => {
    const response = await app.inject({ method, url, payload });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const body = response.body ? (response.json() as Record<string, any>) : undefined;
    return { status: response.statusCode, body };
  };
  const relate = (url: string, endpointSpiffeId = 'spiffe://other.org/sigil/server') =>
    call('POST', '/v1/federation/relationships', {
      trust_domain: 'other.org',
      bundle_endpoint_url: url,
      bundle_endpoint_profile: 'https_spiffe',
      endpoint_spiffe_id: endpointSpiffeId,
    });
  const bootstrap = () =>
    call('PUT', '/v1/federation/bundles/other.org', { format: 'pem', bundle: foreign.bundle().x509Pem() });
  const refresh = () => call('POST', '/v1/federation/relationships/other.org/refresh');
  const stored = async () => (await call('GET', '/v1/federation/bundles/other.org')).body!;
  const served = (init: { roots?: TestCa[]; sequence?: number; hint?: number } = {}) =>
    TrustBundle.create(otherTd, {
      x509Authorities: (init.roots ?? [foreign]).map((ca) => ca.certificate),
      ...(init.sequence !== undefined && { sequenceNumber: init.sequence }),
      ...(init.hint !== undefined && { refreshHintSeconds: init.hint }),
    }).toJson();

  it('refuses https_spiffe without a stored bundle of the endpoint trust domain, and an unknown relationship', async () => {
    spiffeEndpoint.handle(serve(served({ sequence: 5 })));
    expect(await refresh()).toMatchObject({ status: 404, body: { error: 'not_found' } });
    await relate(spiffeEndpoint.url);
    const answer = await refresh();
    expect(answer).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect(answer.body!.message).toContain('no X.509 bundle stored for trust domain other.org');
    expect(answer.body!.message).toContain('bundle set');
  });

  it('fetches, stores only a change, picks up a rotation, keeps the last good bundle on every failure', async () => {
    await bootstrap();
    await relate(spiffeEndpoint.url);
    spiffeEndpoint.handle(serve(served({ sequence: 7, hint: 60 })));
    const first = await refresh();
    expect(first).toMatchObject({ status: 200, body: { trust_domain: 'other.org', changed: true } });
    expect(first.body!.bundle).toMatchObject({ spiffe_sequence: 7, spiffe_refresh_hint: 60 });
    const good = await stored();
    expect(good.bundle.spiffe_sequence).toBe(7);

    // The same answer again: nothing written.
    clock.advance(1000);
    expect(await refresh()).toMatchObject({ status: 200, body: { changed: false } });
    expect((await stored()).updated_at).toBe(good.updated_at);

    // Rotation: the endpoint publishes a second root; its SVID still chains to the first.
    const next = await TestCa.create(otherTd);
    spiffeEndpoint.handle(serve(served({ roots: [foreign, next], sequence: 8, hint: 60 })));
    expect(await refresh()).toMatchObject({ status: 200, body: { changed: true } });
    const rotated = await stored();
    expect(rotated.bundle.keys).toHaveLength(2);
    expect(rotated.bundle.spiffe_sequence).toBe(8);

    const failures: [Handler, string][] = [
      [serve('{ not json'), 'invalid bundle'],
      [serve(JSON.stringify({ keys: [] })), 'holds no x509 or jwt authority'],
      [serve('x'.repeat(FEDERATED_BUNDLE_LIMITS.maxTextLength + 1)), 'larger than the 262144-byte limit'],
      [
        (_req, res) => {
          // No content-length: the cap applies while reading.
          res.writeHead(200);
          res.write('x'.repeat(200_000));
          res.end('x'.repeat(200_000));
        },
        'larger than the 262144-byte limit',
      ],
      [(_req, res) => res.writeHead(302, { location: 'https://example.com/' }).end(), 'redirects are refused'],
      [(_req, res) => res.writeHead(404).end(), 'HTTP 404, expected 200'],
    ];
    for (const [handler, message] of failures) {
      spiffeEndpoint.handle(handler);
      const answer = await refresh();
      expect(answer, message).toMatchObject({ status: 503, body: { error: 'unavailable' } });
      expect(answer.body!.message, message).toContain(message);
      expect(answer.body!.message, message).toContain('the stored bundle is kept');
      expect(await stored(), message).toEqual(rotated);
    }
    const metrics = await app.get(MetricsService).render();
    expect(metrics).toMatch(/sigil_federated_bundle_fetch_failures_total\{trust_domain="other.org",reason="size"\} 2/);
    expect(metrics).toMatch(/sigil_federated_bundle_fetch_failures_total\{trust_domain="other.org",reason="http"\} 2/);
    expect(metrics).toMatch(/sigil_federated_bundle_last_success_timestamp_seconds\{trust_domain="other.org"\} \d+/);
    expect(metrics).toMatch(/sigil_federated_bundle_updates_total\{trust_domain="other.org"\} [2-9]/);
  });

  it('refuses an endpoint whose SVID has another SPIFFE ID or does not chain to the stored bundle', async () => {
    await bootstrap();
    const before = await stored();
    for (const endpoint of [wrongIdEndpoint, strangerEndpoint]) endpoint.handle(serve(served({ sequence: 9 })));

    await relate(wrongIdEndpoint.url);
    const wrongId = await refresh();
    expect(wrongId).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect(wrongId.body!.message).toContain(
      'endpoint spiffe id spiffe://other.org/impostor is not the expected spiffe://other.org/sigil/server',
    );

    await call('PUT', '/v1/federation/relationships/other.org', {
      bundle_endpoint_url: strangerEndpoint.url,
      bundle_endpoint_profile: 'https_spiffe',
      endpoint_spiffe_id: 'spiffe://other.org/sigil/server',
    });
    const stranger = await refresh();
    expect(stranger).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect(stranger.body!.message).toContain('bundle endpoint not authenticated');
    expect(await stored()).toEqual(before);
  });

  it('https_web: trusts the configured extra CA and checks the host name', async () => {
    webEndpoint.handle(serve(served({ sequence: 3 })));
    const web = (url: string) =>
      call('POST', '/v1/federation/relationships', {
        trust_domain: 'other.org',
        bundle_endpoint_url: url,
        bundle_endpoint_profile: 'https_web',
      });
    // The certificate names localhost, not 127.0.0.1.
    await web(webEndpoint.url);
    const wrongHost = await refresh();
    expect(wrongHost).toMatchObject({ status: 503 });
    expect(wrongHost.body!.message).toContain('bundle endpoint not authenticated');
    await call('DELETE', '/v1/federation/relationships/other.org');
    await web(webEndpoint.url.replace('127.0.0.1', 'localhost'));
    expect(await refresh()).toMatchObject({ status: 200, body: { changed: true, bundle: { spiffe_sequence: 3 } } });
    // A WebPKI certificate is not accepted for https_spiffe, and the SPIFFE SVID endpoint not for https_web.
    spiffeEndpoint.handle(serve(served({ sequence: 4 })));
    await call('PUT', '/v1/federation/relationships/other.org', {
      bundle_endpoint_url: spiffeEndpoint.url,
      bundle_endpoint_profile: 'https_web',
    });
    expect((await refresh()).body!.message).toContain('bundle endpoint not authenticated');
  });

  it('follows the schedule: a new relationship is fetched on the next pass, then again after the hint', async () => {
    const fetcher = app.get(BundleFetcherService);
    await bootstrap();
    let requests = 0;
    const answer = (sequence: number): Handler => {
      const text = served({ sequence, hint: 40 });
      return (_req, res) => {
        requests += 1;
        res.writeHead(200).end(text);
      };
    };
    spiffeEndpoint.handle(answer(11));
    await relate(spiffeEndpoint.url);
    clock.advance(BUNDLE_REFRESH.relationshipsReloadMs);
    await fetcher.tick();
    await expect.poll(async () => (await stored()).bundle.spiffe_sequence).toBe(11);
    expect(requests).toBe(1);

    // Not yet due: a quarter of the 40 s hint is 10 s.
    spiffeEndpoint.handle(answer(12));
    clock.advance(9_000);
    await fetcher.tick();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await stored()).bundle.spiffe_sequence).toBe(11);
    clock.advance(1_000);
    await fetcher.tick();
    await expect.poll(async () => (await stored()).bundle.spiffe_sequence).toBe(12);

    // A failure retries after the first backoff step, not the hint.
    spiffeEndpoint.handle((_req, res) => {
      requests += 1;
      res.writeHead(500).end();
    });
    clock.advance(10_000);
    await fetcher.tick();
    await expect.poll(() => requests).toBeGreaterThanOrEqual(3);
    spiffeEndpoint.handle(answer(13));
    clock.advance(BUNDLE_REFRESH.firstRetrySeconds * 1000);
    await fetcher.tick();
    await expect.poll(async () => (await stored()).bundle.spiffe_sequence).toBe(13);
  });

  it('gives up on an endpoint that does not answer in time', async () => {
    spiffeEndpoint.handle(() => undefined);
    const started = Date.now();
    await expect(
      fetchFederatedBundle(
        { trustDomain: otherTd, bundleEndpointUrl: spiffeEndpoint.url },
        {
          profile: 'https_spiffe',
          bundle: foreign.bundle(),
          endpointSpiffeId: SpiffeId.parse('spiffe://other.org/sigil/server'),
        },
        { timeoutMs: 300 },
      ),
    ).rejects.toMatchObject({ reason: 'timeout', message: 'bundle endpoint did not answer within 300 ms' });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('schedules by a quarter of the refresh hint, bounded, and backs off after failures', () => {
    expect(intervalAfterSuccess(undefined)).toBe(300);
    expect(intervalAfterSuccess(300)).toBe(75);
    expect(intervalAfterSuccess(1)).toBe(BUNDLE_REFRESH.minIntervalSeconds);
    expect(intervalAfterSuccess(7 * 24 * 3600)).toBe(BUNDLE_REFRESH.maxIntervalSeconds);
    expect([1, 2, 3, 4, 7, 50].map(retryAfterFailure)).toEqual([5, 10, 20, 40, 300, 300]);
  });
});
