import { TrustDomain } from '@sigil/spiffe';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestDatabase, type TestDatabase } from '../../../../test/support/database.js';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { createRegistry } from '../../../../test/support/registry.js';
import { WRITE_CHUNK } from './entries.service.js';
import { InProcessEntryChangeNotifier } from './entry-change-notifier.js';

const TD = TrustDomain.parse('example.org');
const AGENT = 'spiffe://example.org/sigil/agent/join_token/queue';
const BATCHES = 5;
const BATCH_SIZE = 100;

describe('registry writes of one replica', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await useTestDatabase();
  });

  afterAll(async () => {
    await db?.close();
  });

  it('run one transaction at a time, in chunks, so concurrent batches queue without holding pooled connections', async () => {
    let open = 0;
    let mostOpen = 0;
    let transactions = 0;
    // The real DataSource, counting the transactions open at once.
    const counting = new Proxy(db.dataSource, {
      get(target, property, receiver) {
        if (property !== 'transaction') return Reflect.get(target, property, receiver) as unknown;
        return async (...args: Parameters<DataSource['transaction']>) => {
          open += 1;
          transactions += 1;
          mostOpen = Math.max(mostOpen, open);
          try {
            return await (target.transaction as (...a: unknown[]) => Promise<unknown>)(...args);
          } finally {
            open -= 1;
          }
        };
      },
    });
    const service = createRegistry(
      counting,
      new InProcessEntryChangeNotifier(),
      { trustDomain: TD },
      new FakeClock(Date.parse('2026-03-01T00:00:00Z')),
    ).entries;
    const results = await Promise.all(
      Array.from({ length: BATCHES }, (_, b) =>
        service.createEntries(
          Array.from({ length: BATCH_SIZE }, (_, i) => ({
            spiffeId: `spiffe://example.org/queue/${b}/${i}`,
            parentId: AGENT,
            selectors: [{ type: 'unix', value: `uid:${i}` }],
          })),
        ),
      ),
    );
    expect(results.flat().filter((result) => result.ok)).toHaveLength(BATCHES * BATCH_SIZE);
    expect(mostOpen).toBe(1);
    // Each batch in transactions of WRITE_CHUNK entries, so none holds the connection for long.
    expect(transactions).toBe(BATCHES * Math.ceil(BATCH_SIZE / WRITE_CHUNK));
    // A duplicate of an entry of an earlier chunk of the same batch is still refused.
    const twice = {
      spiffeId: 'spiffe://example.org/queue/twice',
      parentId: AGENT,
      selectors: [{ type: 'unix', value: 'uid:7' }],
    };
    const filler = Array.from({ length: WRITE_CHUNK }, (_, i) => ({
      ...twice,
      spiffeId: `spiffe://example.org/queue/fill/${i}`,
    }));
    const withDuplicate = await service.createEntries([twice, ...filler, twice]);
    expect(withDuplicate[0]!.ok).toBe(true);
    expect(withDuplicate.at(-1)).toMatchObject({ ok: false, error: { kind: 'already_exists' } });
    // A failed write does not block the next one.
    await expect(service.deleteEntry('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({
      kind: 'not_found',
    });
    expect(
      (
        await service.createEntries([
          {
            spiffeId: 'spiffe://example.org/queue/after',
            parentId: AGENT,
            selectors: [{ type: 'unix', value: 'uid:1' }],
          },
        ])
      )[0]!.ok,
    ).toBe(true);
  });
});
