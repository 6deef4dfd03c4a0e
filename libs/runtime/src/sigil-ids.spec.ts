import { SpiffeId, TrustDomain } from '@sigil/spiffe';
import { describe, expect, it } from 'vitest';
import { isReservedSigilPath, isSigilAgentId, sigilAgentId, sigilServerId } from './sigil-ids.js';

const td = TrustDomain.parse('example.org');

describe('Sigil IDs', () => {
  it('names the server and agents under /sigil/', () => {
    expect(sigilServerId(td).toString()).toBe('spiffe://example.org/sigil/server');
    expect(sigilAgentId(td, 'join_token', 'abc').toString()).toBe('spiffe://example.org/sigil/agent/join_token/abc');
  });

  it('checks agent ID segments as SPIFFE path segments', () => {
    expect(() => sigilAgentId(td, 'x509pop', '../server')).toThrow();
  });

  it('recognises agent IDs of its trust domain only', () => {
    expect(isSigilAgentId(sigilAgentId(td, 'x509pop', 'f'), td)).toBe(true);
    expect(isSigilAgentId(SpiffeId.parse('spiffe://other.org/sigil/agent/x509pop/f'), td)).toBe(false);
    expect(isSigilAgentId(sigilServerId(td), td)).toBe(false);
    expect(isSigilAgentId(SpiffeId.parse('spiffe://example.org/sigil/agentx/y'), td)).toBe(false);
  });

  it('reserves every path under /sigil/', () => {
    expect(isReservedSigilPath('/sigil/anything')).toBe(true);
    expect(isReservedSigilPath('/sigilx')).toBe(false);
    expect(isReservedSigilPath('/web')).toBe(false);
  });
});
