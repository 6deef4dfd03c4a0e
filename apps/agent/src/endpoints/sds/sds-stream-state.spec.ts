import { describe, expect, it } from 'vitest';
import { SdsStreamState, randomNonce } from './sds-stream-state.js';

function state(): SdsStreamState {
  let n = 0;
  return new SdsStreamState(() => `n${++n}`);
}

const first = { resourceNames: ['default'], versionInfo: '', responseNonce: '' };

describe('SdsStreamState', () => {
  it('answers the first request once the first state is known, as version 1', () => {
    const s = state();
    expect(s.onRequest(first)).toEqual({ action: 'none', rejected: false });
    expect(s.onUpdate()).toBe(true);
    expect(s.respond()).toEqual({ versionInfo: '1', nonce: 'n1' });
  });

  it('answers the first request at once when a state is known', () => {
    const s = state();
    expect(s.onUpdate()).toBe(false);
    expect(s.onRequest(first)).toEqual({ action: 'send', rejected: false });
    expect(s.subscription?.resourceNames).toEqual(['default']);
  });

  it('sends nothing for an ACK, nor for a NACK, and the next state as the next version', () => {
    const s = state();
    s.onUpdate();
    s.onRequest(first);
    const { nonce } = s.respond();
    expect(s.onRequest({ resourceNames: ['default'], versionInfo: '1', responseNonce: nonce })).toEqual({
      action: 'none',
      rejected: false,
    });
    const nack = { resourceNames: ['default'], versionInfo: '1', responseNonce: nonce, errorDetail: { message: 'x' } };
    expect(s.onRequest(nack)).toEqual({ action: 'none', rejected: true });
    // Envoy that could never apply anything sends back no version.
    expect(s.onRequest({ resourceNames: ['default'], versionInfo: '', responseNonce: nonce })).toEqual({
      action: 'none',
      rejected: true,
    });
    expect(s.version).toBe('1');
    expect(s.onUpdate()).toBe(true);
    expect(s.respond()).toEqual({ versionInfo: '2', nonce: 'n2' });
  });

  it('ignores a reply to an older response (not the last nonce), even with new names', () => {
    const s = state();
    s.onUpdate();
    s.onRequest(first);
    const old = s.respond().nonce;
    s.onUpdate();
    s.respond();
    expect(s.onRequest({ resourceNames: ['ROOTCA'], versionInfo: '1', responseNonce: old })).toEqual({
      action: 'stale',
    });
    expect(s.subscription?.resourceNames).toEqual(['default']);
  });

  it('answers new resource names at once, keeping the node of an earlier request', () => {
    const s = state();
    s.onUpdate();
    const node = { id: 'envoy-1' } as never;
    s.onRequest({ ...first, node });
    const { nonce } = s.respond();
    expect(s.onRequest({ resourceNames: ['ROOTCA', 'default'], versionInfo: '1', responseNonce: nonce })).toEqual({
      action: 'send',
      rejected: false,
    });
    expect(s.subscription).toEqual({ resourceNames: ['ROOTCA', 'default'], node });
    // The same names in another order are the same subscription.
    const again = s.respond().nonce;
    expect(s.onRequest({ resourceNames: ['default', 'ROOTCA'], versionInfo: '1', responseNonce: again }).action).toBe(
      'none',
    );
  });

  it('makes a new random nonce for each response', () => {
    const nonces = new Set(Array.from({ length: 100 }, () => randomNonce()));
    expect(nonces.size).toBe(100);
    for (const nonce of nonces) expect(nonce).toMatch(/^[0-9a-f]{16}$/);
  });
});
