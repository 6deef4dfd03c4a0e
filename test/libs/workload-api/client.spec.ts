import { createPublicKey, KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { SpiffeId, TrustDomain, parseAndValidateJwtSvid } from '@sigil/spiffe';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Backoff } from '../../../libs/workload-api/src/backoff.js';
import { WorkloadApiClient } from '../../../libs/workload-api/src/client.js';
import { type WorkloadApiError } from '../../../libs/workload-api/src/errors.js';
import { Code, FakeWorkloadApi, until } from '../../support/fake-workload-api.js';
import { type X509Context } from '../../../libs/workload-api/src/responses.js';

/** Records what the watch asks of its backoff, and makes every wait 5 ms. */
class RecordingBackoff implements Backoff {
  nextCalls = 0;
  resets = 0;
  next(): number {
    this.nextCalls += 1;
    return 5;
  }
  reset(): void {
    this.resets += 1;
  }
}

const serialOf = (context: X509Context): string => context.svids[0]!.certificates[0]!.serialNumber;

describe('WorkloadApiClient against the agent Workload API server', () => {
  let api: FakeWorkloadApi;
  let client: WorkloadApiClient;
  let backoff: RecordingBackoff;
  const example = TrustDomain.parse('example.org');

  beforeAll(async () => {
    api = await FakeWorkloadApi.start('example.org', ['/web', '/db']);
  });

  beforeEach(() => {
    backoff = new RecordingBackoff();
    client = new WorkloadApiClient({ address: api.address, backoff: () => backoff });
  });

  afterEach(async () => {
    await client.close();
    api.failWith = undefined;
  });

  afterAll(async () => {
    await api.dispose();
  });

  it('fetchX509Context parses every SVID with its key, and the bundle of its trust domain', async () => {
    const context = await client.fetchX509Context();
    expect(context.svids.map((svid) => svid.spiffeId.toString())).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);
    const [web] = context.svids;
    // leaf then intermediate; the key belongs to the leaf
    expect(web!.certificates).toHaveLength(2);
    const leafSpki = Buffer.from(web!.certificates[0]!.publicKey.rawData);
    expect(createPublicKey(KeyObject.from(web!.privateKey)).export({ type: 'spki', format: 'der' })).toEqual(leafSpki);
    expect(context.bundles.bundles().map((bundle) => bundle.trustDomain.name)).toEqual(['example.org']);
    expect(context.bundles.getBundleForTrustDomain(example).hasX509Authority(api.ca.root().certificate)).toBe(true);
  });

  it('fetchX509Bundles and fetchJwtBundles key the bundles by trust domain', async () => {
    const x509 = await client.fetchX509Bundles();
    expect(x509.getBundleForTrustDomain(example).x509Authorities).toHaveLength(1);
    const jwt = await client.fetchJwtBundles();
    expect([...jwt.getBundleForTrustDomain(example).jwtAuthorities.keys()]).toEqual(['fake-jwt-authority']);
  });

  it('fetchJwtSvid returns a parsed token that validates offline against the JWT bundles', async () => {
    const svid = await client.fetchJwtSvid({ audience: ['svc-a', 'svc-b'] });
    expect(svid.spiffeId.toString()).toBe('spiffe://example.org/web');
    expect(svid.audience).toEqual(['svc-a', 'svc-b']);
    expect(svid.expiry.getTime()).toBeGreaterThan(Date.now());
    const validated = await parseAndValidateJwtSvid(svid.token, await client.fetchJwtBundles(), 'svc-a');
    expect(validated.spiffeId.toString()).toBe('spiffe://example.org/web');
  });

  it('fetchJwtSvids returns one token per identity, or only the one asked for', async () => {
    const all = await client.fetchJwtSvids({ audience: 'svc' });
    expect(all.map((svid) => svid.spiffeId.toString())).toEqual([
      'spiffe://example.org/web',
      'spiffe://example.org/db',
    ]);
    const db = await client.fetchJwtSvid({ audience: 'svc', spiffeId: 'spiffe://example.org/db' });
    expect(db.spiffeId.toString()).toBe('spiffe://example.org/db');
    await expect(
      client.fetchJwtSvid({ audience: 'svc', spiffeId: SpiffeId.parse('spiffe://example.org/other') }),
    ).rejects.toMatchObject({
      code: 'ERR_RPC_FAILED',
      status: 'permission_denied',
      message: 'fetch jwt svid: permission_denied: no identity issued',
    });
  });

  it('validateJwtSvid asks the endpoint and refuses a token for another audience with invalid_argument', async () => {
    const { token } = await client.fetchJwtSvid({ audience: 'svc-a' });
    expect((await client.validateJwtSvid(token, 'svc-a')).spiffeId.toString()).toBe('spiffe://example.org/web');
    await expect(client.validateJwtSvid(token, 'svc-b')).rejects.toMatchObject({
      code: 'ERR_RPC_FAILED',
      status: 'invalid_argument',
    });
  });

  it('refuses invalid arguments before calling', async () => {
    const calls = api.securityHeaders.length;
    await expect(client.fetchJwtSvid({ audience: [] })).rejects.toMatchObject({
      code: 'ERR_ARGUMENT_INVALID',
      message: 'fetch jwt svid: audience must not be empty',
    });
    await expect(client.fetchJwtSvid({ audience: ['a', ''] })).rejects.toThrow(
      'fetch jwt svid: audience values must be non-empty strings',
    );
    await expect(client.validateJwtSvid('', 'a')).rejects.toThrow('validate jwt svid: token must not be empty');
    expect(api.securityHeaders.length).toBe(calls);
  });

  it('sends workload.spiffe.io: true on every call', async () => {
    const before = api.securityHeaders.length;
    await client.fetchX509Context();
    await client.fetchX509Bundles();
    await client.fetchJwtBundles();
    const { token } = await client.fetchJwtSvid({ audience: 'a' });
    await client.validateJwtSvid(token, 'a');
    expect(api.securityHeaders.slice(before)).toEqual(['true', 'true', 'true', 'true', 'true']);
  });

  it('reports the gRPC status of a failed fetch', async () => {
    const identities = api.cache.identities;
    api.cache.identities = [];
    try {
      await expect(client.fetchX509Context()).rejects.toMatchObject({
        code: 'ERR_RPC_FAILED',
        status: 'permission_denied',
        message: 'fetch x509 context: permission_denied: no identity issued',
      });
    } finally {
      api.cache.identities = identities;
    }
    const nowhere = new WorkloadApiClient({ address: `unix://${join(api.dir, 'missing.sock')}` });
    await expect(nowhere.fetchX509Bundles()).rejects.toMatchObject({ code: 'ERR_RPC_FAILED', status: 'unavailable' });
    await nowhere.close();
  });

  it('watchX509Context delivers the full state at once and again after a rotation', async () => {
    const updates: X509Context[] = [];
    const controller = new AbortController();
    const watching = client.watchX509Context((context) => updates.push(context), undefined, {
      signal: controller.signal,
    });
    await until(() => updates.length === 1);
    await api.rotate();
    await until(() => updates.length === 2);
    expect(serialOf(updates[1]!)).not.toBe(serialOf(updates[0]!));
    expect(updates[1]!.svids).toHaveLength(2);
    controller.abort();
    await expect(watching).resolves.toBeUndefined();
    expect(backoff.nextCalls).toBe(0);
  });

  it('watchX509Bundles and watchJwtBundles deliver updates', async () => {
    const x509: number[] = [];
    const jwt: number[] = [];
    const controller = new AbortController();
    const watches = [
      client.watchX509Bundles((set) => x509.push(set.size), undefined, { signal: controller.signal }),
      client.watchJwtBundles((set) => jwt.push(set.size), undefined, { signal: controller.signal }),
    ];
    await until(() => x509.length === 1 && jwt.length === 1);
    const other = await FakeWorkloadApi.start('other.org');
    try {
      api.federateWith(other.ca);
      await until(() => x509.length === 2 && jwt.length === 2);
      expect([x509, jwt]).toEqual([
        [1, 2],
        [1, 2],
      ]);
    } finally {
      api.cache.update((cache) => {
        cache.agentBundles = { own: cache.agentBundles!.own, federated: [] };
        cache.identities = cache.identities.map((identity) => ({ ...identity, federatesWith: [] }));
      });
      await other.dispose();
    }
    controller.abort();
    await Promise.all(watches);
  });

  it('resumes a watch after the agent restarts on the same socket', async () => {
    const updates: X509Context[] = [];
    const errors: WorkloadApiError[] = [];
    const watching = client.watchX509Context(
      (context) => updates.push(context),
      (error) => errors.push(error),
    );
    await until(() => updates.length === 1);
    await api.stop();
    await until(() => errors.length >= 2); // the stream ended, then at least one reconnection failed
    expect(errors[0]).toMatchObject({ code: 'ERR_RPC_FAILED', status: 'unavailable' });
    await api.restart();
    await until(() => updates.length === 2);
    expect(backoff.nextCalls).toBeGreaterThanOrEqual(2);
    expect(backoff.resets).toBe(2); // once per message received
    await client.close();
    await expect(watching).resolves.toBeUndefined();
  });

  it.each([
    ['PERMISSION_DENIED', 'permission_denied'],
    ['UNAVAILABLE', 'unavailable'],
  ] as const)('retries %s with the backoff until the identity arrives', async (_name, status) => {
    const saved = { identities: api.cache.identities, bundles: api.cache.agentBundles };
    if (status === 'permission_denied') api.cache.identities = [];
    else api.cache.agentBundles = undefined;
    const updates: X509Context[] = [];
    const errors: WorkloadApiError[] = [];
    const watching = client.watchX509Context(
      (context) => updates.push(context),
      (error) => errors.push(error),
    );
    await until(() => errors.length >= 3);
    expect(errors.every((error) => error.status === status)).toBe(true);
    expect(backoff.nextCalls).toBeGreaterThanOrEqual(3);
    expect(backoff.resets).toBe(0);
    api.cache.update((cache) => {
      cache.identities = saved.identities;
      cache.agentBundles = saved.bundles;
    });
    await until(() => updates.length === 1);
    expect(backoff.resets).toBe(1);
    await client.close();
    await watching;
  });

  it.each([
    ['INVALID_ARGUMENT', Code.InvalidArgument, 'invalid_argument'],
    ['UNIMPLEMENTED', Code.Unimplemented, 'unimplemented'],
  ] as const)('never retries %s: the watch rejects after one attempt', async (_name, code, status) => {
    api.failWith = code;
    const errors: WorkloadApiError[] = [];
    const before = api.securityHeaders.length;
    await expect(
      client.watchX509Context(
        () => undefined,
        (error) => errors.push(error),
      ),
    ).rejects.toMatchObject({ code: 'ERR_RPC_FAILED', status });
    expect(errors.map((error) => error.status)).toEqual([status]);
    expect(backoff.nextCalls).toBe(0);
    expect(api.securityHeaders.length - before).toBe(1);
  });

  it('cancels calls through their AbortSignal', async () => {
    const aborted = AbortSignal.abort(new Error('caller gave up'));
    await expect(client.fetchX509Context({ signal: aborted })).rejects.toThrow('caller gave up');
    // An SVID still being signed: the stream stays silent, so the fetch waits until it is aborted.
    const identities = api.cache.identities;
    api.cache.identities = identities.map((identity) => ({ ...identity, x509Svid: undefined }));
    try {
      const controller = new AbortController();
      const calls = api.securityHeaders.length;
      const pending = client.fetchX509Context({ signal: controller.signal });
      await until(() => api.securityHeaders.length > calls);
      controller.abort(new Error('stop waiting'));
      await expect(pending).rejects.toThrow('stop waiting');
    } finally {
      api.cache.identities = identities;
    }
  });

  it('close() ends watches, and later calls fail with ERR_CLOSED', async () => {
    const watching = client.watchJwtBundles(() => undefined);
    await client.close();
    await expect(watching).resolves.toBeUndefined();
    await expect(client.fetchX509Bundles()).rejects.toMatchObject({
      code: 'ERR_CLOSED',
      message: 'fetch x509 bundles: the client is closed',
    });
  });

  it('reads the address from SPIFFE_ENDPOINT_SOCKET when none is given', () => {
    const saved = process.env['SPIFFE_ENDPOINT_SOCKET'];
    process.env['SPIFFE_ENDPOINT_SOCKET'] = api.address;
    try {
      const fromEnv = new WorkloadApiClient();
      expect(fromEnv.address).toEqual({ kind: 'unix', path: api.socketPath });
      void fromEnv.close();
    } finally {
      if (saved === undefined) delete process.env['SPIFFE_ENDPOINT_SOCKET'];
      else process.env['SPIFFE_ENDPOINT_SOCKET'] = saved;
    }
  });
});
