import { describe, expect, it, vi } from 'vitest';
import { FakeClock } from '../../../../test/support/fake-clock.js';
import { AgentSigningBudget, type SigningBudgetConfig } from './signing-budget.js';
import { SIGNING_CONCURRENCY } from './signing-limits.js';

const A = 'spiffe://td/sigil/agent/join_token/a';
const B = 'spiffe://td/sigil/agent/join_token/b';

const config: SigningBudgetConfig = {
  agentSignRatePerSecond: 500,
  agentSignBurst: 1_000,
  agentJwtSignRatePerSecond: 2,
  agentJwtSignBurst: 3,
  agentSignMaxInFlight: 2,
  agentRenewRatePerSecond: 0.2,
  agentRenewBurst: 10,
  signingQueueMaxItems: 20_000,
};

const refusal = (call: () => unknown) => {
  try {
    call();
  } catch (error) {
    return error;
  }
  throw new Error('expected a refusal');
};

describe('AgentSigningBudget', () => {
  it('charges X.509 per CSR: two full batches pass, a third waits for the refill and is told how long', () => {
    const clock = new FakeClock();
    const budget = new AgentSigningBudget(config, clock);
    budget.charge(A, 'x509', 500);
    budget.charge(A, 'x509', 500);
    expect(refusal(() => budget.charge(A, 'x509', 500))).toMatchObject({
      kind: 'resource_exhausted',
      retryAfterSeconds: 1,
      message:
        `agent ${A}: over its X.509-SVID signing budget (500 CSRs/s, burst 1000; agent_sign_rate, ` +
        `agent_sign_burst), this request costs 500: retry in 1 s`,
    });
    // Another agent has its own bucket.
    budget.charge(B, 'x509', 500);
    clock.advance(999);
    expect(() => budget.charge(A, 'x509', 500)).toThrow();
    clock.advance(1);
    budget.charge(A, 'x509', 500);
  });

  it('keeps renewal, X.509 and JWT apart: spending one leaves the others whole', () => {
    const budget = new AgentSigningBudget(config, new FakeClock());
    budget.charge(A, 'x509', 1_000);
    for (let i = 0; i < config.agentJwtSignBurst; i++) budget.charge(A, 'jwt');
    expect(refusal(() => budget.charge(A, 'jwt'))).toMatchObject({
      kind: 'resource_exhausted',
      message: expect.stringContaining('over its JWT-SVID signing budget (2 JWT-SVIDs/s, burst 3;') as string,
    });
    expect(() => budget.charge(A, 'x509')).toThrow();
    // Both workload budgets are spent; the agent still renews its own SVID.
    for (let i = 0; i < config.agentRenewBurst; i++) budget.charge(A, 'renewal');
    expect(refusal(() => budget.charge(A, 'renewal'))).toMatchObject({ retryAfterSeconds: 5 });
  });

  it('refuses a batch over the in-flight cap until one is released (a release counts once)', () => {
    const budget = new AgentSigningBudget(config, new FakeClock());
    const first = budget.enterBatch(A);
    const second = budget.enterBatch(A);
    expect(refusal(() => budget.enterBatch(A))).toMatchObject({
      kind: 'resource_exhausted',
      retryAfterSeconds: 1,
      message:
        `agent ${A}: 2 X.509-SVID batches already in progress, at most 2 (agent_sign_max_in_flight): ` +
        `wait for one to finish, then retry`,
    });
    budget.enterBatch(B)();
    first();
    first();
    const third = budget.enterBatch(A);
    expect(() => budget.enterBatch(A)).toThrow();
    second();
    third();
    budget.enterBatch(A);
    budget.enterBatch(A);
  });

  it('refuses early, taking nothing, only what could not pass anyway', () => {
    const budget = new AgentSigningBudget(config, new FakeClock());
    budget.refuseEarly(A, 'x509');
    budget.charge(A, 'x509', 999);
    budget.refuseEarly(A, 'x509');
    budget.charge(A, 'x509', 1);
    expect(refusal(() => budget.refuseEarly(A, 'x509'))).toMatchObject({ kind: 'resource_exhausted' });
    budget.refuseEarly(A, 'jwt');
    const leave = [budget.enterBatch(B), budget.enterBatch(B)];
    expect(refusal(() => budget.refuseEarly(B, 'x509'))).toMatchObject({
      message: expect.stringContaining('2 X.509-SVID batches already in progress') as string,
    });
    budget.refuseEarly(B, 'jwt');
    leave.forEach((release) => release());
    budget.refuseEarly(B, 'x509');
    budget.enterBatch(B);
  });

  it('refuses early until the bucket holds what the last refused request cost, not only while it is empty', () => {
    const clock = new FakeClock();
    const budget = new AgentSigningBudget(config, clock);
    budget.charge(A, 'x509', 1_000);
    expect(refusal(() => budget.charge(A, 'x509', 500))).toMatchObject({ kind: 'resource_exhausted' });
    // 2 ms later one CSR's token is back (500/s), far from the 500 the agent keeps asking for.
    clock.advance(2);
    expect(refusal(() => budget.refuseEarly(A, 'x509'))).toMatchObject({
      kind: 'resource_exhausted',
      message: expect.stringContaining('this request costs 500') as string,
    });
    budget.refuseEarly(B, 'x509');
    clock.advance(998);
    budget.refuseEarly(A, 'x509');
    budget.charge(A, 'x509', 500);
    // Passed: the remembered cost is dropped, so a request is refused early again only on an empty bucket.
    expect(refusal(() => budget.refuseEarly(A, 'x509'))).toMatchObject({ kind: 'resource_exhausted' });
    clock.advance(2);
    budget.refuseEarly(A, 'x509');
  });

  it('answers unavailable with Retry-After when the signing queue is full', async () => {
    const budget = new AgentSigningBudget(config, new FakeClock(), {
      chunkSize: 1,
      concurrency: 1,
      maxQueuedItems: 3,
    });
    let release = (): void => undefined;
    const held = budget.inTurn(A, 'x509', [1, 2, 3], async (chunk) => {
      await new Promise<void>((resolve) => (release = resolve));
      return chunk;
    });
    expect(budget.queued).toBe(2);
    await expect(budget.inTurn(B, 'jwt', [1, 2], (chunk) => Promise.resolve(chunk))).rejects.toMatchObject({
      kind: 'unavailable',
      retryAfterSeconds: 1,
      message: 'signing queue full: 2 items waiting, at most 3: the server is busy signing, retry in 1 s',
    });
    for (let i = 0; i < 3; i++) {
      release();
      for (let j = 0; j < 3; j++) await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await held).toEqual([1, 2, 3]);
    expect(budget.queued).toBe(0);
  });

  it('takes the renewal budget from agent_renew_rate and agent_renew_burst', () => {
    const clock = new FakeClock();
    const budget = new AgentSigningBudget({ ...config, agentRenewRatePerSecond: 0.5, agentRenewBurst: 3 }, clock);
    for (let i = 0; i < 3; i++) budget.charge(A, 'renewal');
    expect(refusal(() => budget.charge(A, 'renewal'))).toMatchObject({
      kind: 'resource_exhausted',
      retryAfterSeconds: 2,
      message:
        `agent ${A}: over its agent SVID renewal budget (0.5 renewals/s, burst 3; agent_renew_rate, ` +
        `agent_renew_burst), this request costs 1: retry in 2 s`,
    });
    clock.advance(2_000);
    budget.charge(A, 'renewal');
  });

  it('holds at most signing_queue_max_items waiting, over every agent', async () => {
    const budget = new AgentSigningBudget({ ...config, signingQueueMaxItems: 5 }, new FakeClock());
    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const work = async (chunk: readonly number[]) => {
      await released;
      return chunk;
    };
    // Every signing slot busy with another agent's request (running items leave the queue), then 5 items wait.
    const running = Array.from({ length: SIGNING_CONCURRENCY }, (_, i) =>
      budget.inTurn(`${A}-${i}`, 'x509', [i], work),
    );
    await vi.waitFor(() => expect(budget.queued).toBe(0));
    const items = [1, 2, 3, 4, 5];
    const held = budget.inTurn(A, 'x509', items, work);
    expect(budget.queued).toBe(5);
    await expect(budget.inTurn(B, 'jwt', [1], (chunk) => Promise.resolve(chunk))).rejects.toMatchObject({
      kind: 'unavailable',
      message: 'signing queue full: 5 items waiting, at most 5: the server is busy signing, retry in 1 s',
    });
    release();
    expect(await held).toEqual(items);
    await Promise.all(running);
  });
});
