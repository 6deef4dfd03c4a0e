/**
 * AgentStatusCache, on its own: a read asked for "once more" (a serial the cache has not seen) never joins a read
 * already in flight, which may have begun before the change the caller knows of (review R10).
 */
import { describe, expect, it } from 'vitest';
import { AgentStatusCache } from './agent-status-cache.js';

interface Status {
  readonly serial: string;
}

describe('AgentStatusCache', () => {
  it('starts its own read when asked to read once more, instead of joining one begun before', async () => {
    const cache = new AgentStatusCache<Status>(30_000, () => 0);
    await cache.get('agent', async () => ({ serial: 'one' }));
    // A read in flight that began before the renewal committed elsewhere: it will answer the old serial.
    let answerOld!: (status: Status) => void;
    const inFlight = cache.get(
      'agent',
      () => new Promise<Status>((resolve) => (answerOld = resolve)),
      () => true,
    );
    const loads: string[] = [];
    const renewed = cache.get(
      'agent',
      async () => {
        loads.push('fresh');
        return { serial: 'two' };
      },
      (cached) => cached.status?.serial !== 'two',
    );
    expect(await renewed).toEqual({ serial: 'two' });
    expect(loads).toEqual(['fresh']);
    answerOld({ serial: 'one' });
    expect(await inFlight).toEqual({ serial: 'one' });
  });

  it('still shares one read among callers that need no more than a fresh status', async () => {
    const cache = new AgentStatusCache<Status>(30_000, () => 0);
    let loads = 0;
    const load = async (): Promise<Status> => {
      loads += 1;
      return { serial: 'one' };
    };
    await Promise.all([cache.get('agent', load), cache.get('agent', load), cache.get('agent', load)]);
    expect(loads).toBe(1);
  });
});
