import { describe, expect, it } from 'vitest';
import { activationTime, planRotation, preparationTime, type PlannedKey } from './rotation-plan.js';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const start = Date.UTC(2026, 0, 1);
const at = (ms: number) => new Date(start + ms);
const key = (id: string, state: PlannedKey['state'], fromMs: number, ttlMs: number, kind: 'x509' | 'jwt' = 'x509') => ({
  id,
  kind,
  state,
  notBefore: at(fromMs),
  notAfter: at(fromMs + ttlMs),
});

describe('rotation thresholds (SPIRE timings)', () => {
  it('prepares at 1/2 and activates at 5/6 of a 24 h key', () => {
    const active = key('a', 'active', 0, DAY);
    expect(preparationTime(active)).toEqual(at(12 * HOUR));
    expect(activationTime(active)).toEqual(at(20 * HOUR));
  });

  it('caps preparation at 14 days and activation at 7 days before expiry for long-lived keys', () => {
    const active = key('a', 'active', 0, 365 * DAY);
    expect(preparationTime(active)).toEqual(at(351 * DAY));
    expect(activationTime(active)).toEqual(at(358 * DAY));
  });
});

describe('planRotation', () => {
  it('creates an active key when the journal is empty', () => {
    expect(planRotation('x509', [], at(0))).toEqual([{ op: 'create', kind: 'x509', state: 'active' }]);
  });

  it('only considers keys of its own kind', () => {
    expect(planRotation('jwt', [key('a', 'active', 0, DAY)], at(0))).toEqual([
      { op: 'create', kind: 'jwt', state: 'active' },
    ]);
  });

  it.each([
    ['just before half-way', 12 * HOUR - 1, []],
    ['exactly half-way', 12 * HOUR, [{ op: 'create', kind: 'x509', state: 'prepared' }]],
  ])('with only an active key, %s', (_name, nowMs, steps) => {
    expect(planRotation('x509', [key('a', 'active', 0, DAY)], at(nowMs))).toEqual(steps);
  });

  it.each([
    ['before five sixths', 20 * HOUR - 1, []],
    ['exactly five sixths', 20 * HOUR, [{ op: 'activate', kind: 'x509', id: 'p' }]],
  ])('with a prepared key, %s', (_name, nowMs, steps) => {
    const keys = [key('a', 'active', 0, DAY), key('p', 'prepared', 12 * HOUR, DAY)];
    expect(planRotation('x509', keys, at(nowMs))).toEqual(steps);
  });

  it('prepares and activates at once when the preparation time was missed', () => {
    expect(planRotation('jwt', [key('a', 'active', 0, DAY, 'jwt')], at(21 * HOUR))).toEqual([
      { op: 'create', kind: 'jwt', state: 'prepared' },
      { op: 'activate', kind: 'jwt', id: 'created' },
    ]);
  });

  it('activates the prepared key when the active key has expired', () => {
    const keys = [key('a', 'active', 0, DAY), key('p', 'prepared', 12 * HOUR, DAY)];
    expect(planRotation('x509', keys, at(DAY))).toEqual([{ op: 'activate', kind: 'x509', id: 'p' }]);
  });

  it('creates a new active key when every key has expired', () => {
    const keys = [key('a', 'active', 0, DAY), key('p', 'prepared', 12 * HOUR, DAY)];
    expect(planRotation('x509', keys, at(2 * DAY))).toEqual([
      { op: 'prune', kind: 'x509', id: 'p' },
      { op: 'create', kind: 'x509', state: 'active' },
    ]);
  });

  it('keeps an old key until it expires, then prunes it', () => {
    const keys = [key('o', 'old', 0, DAY), key('a', 'active', 12 * HOUR, DAY)];
    expect(planRotation('x509', keys, at(DAY - 1))).toEqual([]);
    expect(planRotation('x509', keys, at(DAY))).toEqual([
      { op: 'prune', kind: 'x509', id: 'o' },
      { op: 'create', kind: 'x509', state: 'prepared' },
    ]);
  });
});
