import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { AgentSignRateLimiter } from './rate-limiter.js';

describe('AgentSignRateLimiter', () => {
  it('answers resource_exhausted naming the agent', () => {
    const limiter = new AgentSignRateLimiter({ agentSignRatePerSecond: 1, agentSignBurst: 1 }, new FakeClock());
    limiter.take('spiffe://td/sigil/agent/a');
    expect(() => limiter.take('spiffe://td/sigil/agent/a')).toThrow(
      expect.objectContaining({
        kind: 'resource_exhausted',
        message: 'agent spiffe://td/sigil/agent/a: over its signing rate limit, retry later',
      }),
    );
  });
});
