import { TrustDomain, parseAndValidateJwtSvid } from '@sigil/spiffe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExponentialBackoff } from '../../../libs/workload-api/src/backoff.js';
import { WorkloadApiClient } from '../../../libs/workload-api/src/client.js';
import { Code, FakeWorkloadApi, until } from '../../support/fake-workload-api.js';
import { JwtSource } from '../../../libs/workload-api/src/jwt-source.js';
import { X509Source } from '../../../libs/workload-api/src/x509-source.js';

const fast = { backoff: () => new ExponentialBackoff({ initialDelayMs: 5, maxDelayMs: 20 }) };

describe('X509Source and JwtSource', () => {
  let api: FakeWorkloadApi;
  const example = TrustDomain.parse('example.org');

  beforeAll(async () => {
    api = await FakeWorkloadApi.start('example.org', ['/web', '/db']);
  });

  afterAll(async () => {
    await api.dispose();
  });

  it('X509Source resolves with the current SVIDs and bundles and follows rotations', async () => {
    const source = await X509Source.create({ clientOptions: { address: api.address } });
    try {
      expect(source.getX509Svid().spiffeId.toString()).toBe('spiffe://example.org/web');
      expect(source.getX509Svids()).toHaveLength(2);
      expect(source.getBundleForTrustDomain(example).hasX509Authority(api.ca.root().certificate)).toBe(true);
      expect(() => source.getBundleForTrustDomain(TrustDomain.parse('other.org'))).toThrow(
        expect.objectContaining({ code: 'ERR_BUNDLE_NOT_FOUND' }),
      );

      const before = source.getX509Svid().certificates[0]!.serialNumber;
      let updates = 0;
      source.onUpdate(() => (updates += 1));
      await api.rotate();
      await until(() => updates === 1);
      expect(source.getX509Svid().certificates[0]!.serialNumber).not.toBe(before);
    } finally {
      await source.close();
    }
    expect(source.isClosed).toBe(true);
    expect(() => source.getX509Svid()).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }));
  });

  it('X509Source uses the picker to choose the SVID to present', async () => {
    const source = await X509Source.create({
      clientOptions: { address: api.address },
      picker: (svids) => svids.find((svid) => svid.spiffeId.path === '/db')!,
    });
    expect(source.getX509Svid().spiffeId.toString()).toBe('spiffe://example.org/db');
    await source.close();
  });

  it('create waits through PERMISSION_DENIED and resolves once an identity is issued', async () => {
    const identities = api.cache.identities;
    api.cache.identities = [];
    const errors: string[] = [];
    const creating = X509Source.create({
      clientOptions: { address: api.address, ...fast },
      onError: (error) => errors.push(error.status ?? ''),
    });
    await until(() => errors.length >= 2);
    api.cache.update((cache) => (cache.identities = identities));
    const source = await creating;
    expect(errors.every((status) => status === 'permission_denied')).toBe(true);
    expect(source.getX509Svids()).toHaveLength(2);
    await source.close();
  });

  it('create rejects with ERR_TIMEOUT, naming the last error, when no update arrives in time', async () => {
    const identities = api.cache.identities;
    api.cache.identities = [];
    try {
      await expect(
        X509Source.create({ clientOptions: { address: api.address, ...fast }, timeoutMs: 1000 }),
      ).rejects.toMatchObject({
        code: 'ERR_TIMEOUT',
        message:
          'x509 source: no update within 1000 ms (last error: watch x509 context: permission_denied: no identity issued)',
      });
    } finally {
      api.cache.identities = identities;
    }
  });

  it('create rejects with the abort reason when its signal aborts', async () => {
    const identities = api.cache.identities;
    api.cache.identities = [];
    try {
      const controller = new AbortController();
      const creating = JwtSource.create({
        clientOptions: { address: api.address, ...fast },
        signal: controller.signal,
      });
      controller.abort(new Error('shutting down'));
      await expect(creating).rejects.toThrow('shutting down');
      await expect(
        X509Source.create({ clientOptions: { address: api.address }, signal: AbortSignal.abort(new Error('early')) }),
      ).rejects.toThrow('early');
    } finally {
      api.cache.identities = identities;
    }
  });

  it('create rejects on INVALID_ARGUMENT, which is never retried', async () => {
    api.failWith = Code.InvalidArgument;
    try {
      await expect(X509Source.create({ clientOptions: { address: api.address } })).rejects.toMatchObject({
        code: 'ERR_RPC_FAILED',
        status: 'invalid_argument',
      });
    } finally {
      api.failWith = undefined;
    }
  });

  it('create rejects an invalid address', async () => {
    await expect(X509Source.create({ clientOptions: { address: 'tcp://localhost:1' } })).rejects.toMatchObject({
      code: 'ERR_ADDRESS_INVALID',
    });
  });

  it('JwtSource holds the JWT bundles and fetches JWT-SVIDs through the API', async () => {
    const source = await JwtSource.create({ clientOptions: { address: api.address } });
    try {
      const svid = await source.fetchJwtSvid({ audience: 'spiffe://example.org/api' });
      expect(svid.spiffeId.toString()).toBe('spiffe://example.org/web');
      const validated = await parseAndValidateJwtSvid(svid.token, source, 'spiffe://example.org/api');
      expect(validated.spiffeId.toString()).toBe('spiffe://example.org/web');
      expect((await source.fetchJwtSvids({ audience: 'a' })).map((s) => s.spiffeId.path)).toEqual(['/web', '/db']);
      expect(source.getBundles().size).toBe(1);
    } finally {
      await source.close();
    }
    await expect(source.fetchJwtSvid({ audience: 'a' })).rejects.toMatchObject({ code: 'ERR_CLOSED' });
    expect(() => source.getBundleForTrustDomain(example)).toThrow('jwt source is closed');
  });

  it('a source leaves a client it was given open when it closes', async () => {
    const client = new WorkloadApiClient({ address: api.address });
    const source = await JwtSource.create({ client });
    await source.close();
    expect((await client.fetchJwtBundles()).size).toBe(1);
    await client.close();
  });
});
